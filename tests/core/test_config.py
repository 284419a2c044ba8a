import re
from pathlib import Path

import pytest

from loopstack.core.config import load_config, parse_config
from loopstack.core.errors import ConfigError


def test_defaults_fill_in_a_minimal_config() -> None:
    config = parse_config({"name": "fraud"})
    assert config.metadata == "sqlite:///.loopstack/meta.db"
    assert config.tracking.flush_interval_s == 1.0


def test_unknown_key_is_rejected_with_its_path_and_the_allowed_keys() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"name": "fraud", "tracking": {"flush_interval": 2}})
    message = str(error.value)
    assert "tracking.flush_interval" in message
    assert "unknown key" in message
    assert "flush_interval_s" in message  # the fix: the key that exists


def test_bad_value_names_key_value_and_fix() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"name": "fraud", "metadata": "mysql://x"})
    message = str(error.value)
    assert "metadata" in message and "mysql://x" in message and "postgresql://" in message


def test_an_offline_store_other_than_duckdb_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"name": "fraud", "offline_store": "spark"})
    message = str(error.value)
    assert "offline_store" in message and "spark" in message and "duckdb" in message
    assert parse_config({"name": "fraud", "offline_store": "duckdb"}).offline_store == "duckdb"


def test_out_of_range_number_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"tracking\.flush_interval_s"):
        parse_config({"name": "fraud", "tracking": {"flush_interval_s": -1}})


def test_missing_name_is_reported() -> None:
    with pytest.raises(ConfigError, match="name: required"):
        parse_config({})


@pytest.mark.parametrize("name", ["1abc", "has space", "", "x" * 200])
def test_invalid_project_names(name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        parse_config({"name": name})


def test_environment_overrides_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPSTACK_METADATA", "postgresql://u@h/db")
    assert parse_config({"name": "fraud"}).metadata == "postgresql://u@h/db"
    monkeypatch.setenv("LOOPSTACK_ONLINE_STORE", "redis://127.0.0.1:6379/3")
    assert parse_config({"name": "fraud"}).online_store == "redis://127.0.0.1:6379/3"  # as README.md says


def test_yaml_errors_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "loopstack.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopstack init"):
        load_config(tmp_path)


def test_config_is_immutable() -> None:
    config = parse_config({"name": "fraud"})
    with pytest.raises(Exception, match="frozen"):
        config.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("url", ["sqlite", "sqlite://meta.db", "sqlite:meta.db", "sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_a_sqlite_url_without_a_file_path_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"metadata: .*sqlite:///\.loopstack/meta\.db.*" + re.escape(repr(url))):
        parse_config({"name": "a", "metadata": url})


def test_a_bad_value_from_the_environment_names_the_variable_not_only_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOOPSTACK_METADATA", "bogus://")
    with pytest.raises(ConfigError, match=r"metadata \(from the environment variable LOOPSTACK_METADATA"):
        parse_config({"name": "p"}, source="loopstack.yaml")
    monkeypatch.delenv("LOOPSTACK_METADATA")
    with pytest.raises(ConfigError) as raised:
        parse_config({"name": "p", "metadata": "bogus://"}, source="loopstack.yaml")
    assert "environment" not in str(raised.value)
