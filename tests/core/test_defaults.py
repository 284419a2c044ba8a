"""A config made of the defaults skips pydantic at init, and is exactly what pydantic would make."""

from pathlib import Path

import pytest

from loopstack.core.config import ProjectConfig, dump_config, parse_config
from loopstack.core.defaults import DEFAULTS, default_config, dump_yaml
from loopstack.core.errors import ConfigError
from loopstack.core.project import Project


def test_defaults_are_what_the_model_fills_in_in_its_order() -> None:
    dumped = ProjectConfig(name="fraud").model_dump()
    assert dumped == {"name": "fraud", **DEFAULTS}
    assert list(dumped) == ["name", *DEFAULTS]
    assert list(dumped["tracking"]) == list(DEFAULTS["tracking"])
    assert all(type(dumped["tracking"][k]) is type(v) for k, v in DEFAULTS["tracking"].items())


def test_a_default_config_is_written_as_dump_config_writes_it() -> None:
    fast = default_config({"name": "fraud"})
    assert fast is not None
    assert dump_yaml(fast) == dump_config(parse_config({"name": "fraud"}))
    assert ProjectConfig.model_validate(fast) == parse_config({"name": "fraud"})


@pytest.mark.parametrize(
    "data",
    [
        {"name": "fraud", "metadata": "sqlite:///x.db"},  # a setting: validated by the model
        {"name": "1abc"},
        {"name": "has space"},
        {"name": "x" * 200},
        {"name": ""},
        {"name": 5},
        {},
    ],
)
def test_anything_but_a_valid_name_goes_to_the_model(data: dict[str, object]) -> None:
    assert default_config(data) is None


def test_an_environment_override_goes_to_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPSTACK_ARTIFACTS", "/elsewhere")
    assert default_config({"name": "fraud"}) is None


def test_defaults_are_not_shared_between_configs() -> None:
    first = default_config({"name": "a"})
    assert first is not None
    first["tracking"]["capture_git"] = False
    first["definitions"].append("x")
    assert DEFAULTS["tracking"]["capture_git"] is True and DEFAULTS["definitions"] == []


def test_init_with_a_name_writes_and_opens_the_same_config_as_with_settings(tmp_path: Path) -> None:
    fast = Project.init(tmp_path / "fast", name="fraud")
    slow = Project.init(tmp_path / "slow", name="fraud", metadata="sqlite:///.loopstack/meta.db")
    assert (tmp_path / "fast" / "loopstack.yaml").read_text() == (tmp_path / "slow" / "loopstack.yaml").read_text()
    assert fast.config == slow.config and isinstance(fast.config, ProjectConfig)
    assert Project.open(tmp_path / "fast") is fast
    assert fast.tracking.settings.flush_interval_s == slow.tracking.settings.flush_interval_s == 1.0
    fast.close()
    slow.close()


def test_init_with_a_bad_name_still_fails_with_the_model_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"name: use a letter first.*\(got '1abc'\)"):
        Project.init(tmp_path, name="1abc")
    assert not (tmp_path / "loopstack.yaml").exists()
