"""Model names, aliases and references parse one way only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.core.errors import ValidationError
from loopstack.registry.names import ModelRef, parse_ref, validate_alias, validate_model_name, validate_version

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
ALIASES = st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,20}", fullmatch=True).filter(lambda a: a.lower() != "latest")


@pytest.mark.parametrize("name", ["", "1fraud", "fraud/3", "fraud@x", "a b", "-x", "x" * 129, None, 3])
def test_invalid_model_names(name):
    with pytest.raises(ValidationError, match="invalid model name"):
        validate_model_name(name)


@pytest.mark.parametrize("alias", ["", "3", "has space", "a/b", "a@b", "x" * 65, None])
def test_invalid_aliases(alias):
    with pytest.raises(ValidationError, match="invalid alias"):
        validate_alias(alias)


@pytest.mark.parametrize("alias", ["latest", "Latest"])
def test_latest_is_reserved(alias):
    with pytest.raises(ValidationError, match="reserved"):
        validate_alias(alias)


@pytest.mark.parametrize("version", [0, -1, 1.5, "x", True, None, "\u00b2", "1\u00b2"])
def test_invalid_versions(version):
    with pytest.raises(ValidationError, match="invalid model version"):
        validate_version(version)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("fraud/x", "version number"),
        ("fraud/", "version number"),
        ("fraud/\u00b2", "version number"),
        ("@champion", "model name"),
        ("", "reference"),
    ],
)
def test_invalid_references(ref, message):
    with pytest.raises(ValidationError, match=message):
        parse_ref(ref)


def test_reference_forms():
    assert parse_ref("fraud") == ModelRef("fraud")
    assert parse_ref("fraud", "4") == ModelRef("fraud", version=4)
    assert parse_ref("fraud@latest") == ModelRef("fraud")
    with pytest.raises(ValidationError, match="either it or version="):
        parse_ref("fraud/3", 4)


@settings(max_examples=50)
@given(name=NAMES, version=st.integers(1, 10**6), alias=ALIASES)
def test_property_references_round_trip(name, version, alias):
    for ref in (ModelRef(name), ModelRef(name, version=version), ModelRef(name, alias=alias)):
        assert parse_ref(str(ref)) == ref


def test_numpy_integer_versions_are_versions():
    """Version numbers read back from a DataFrame are NumPy integers."""
    np = pytest.importorskip("numpy")
    assert validate_version(np.int64(3)) == 3 and type(validate_version(np.int64(3))) is int
    assert parse_ref("fraud", np.int32(2)) == ModelRef("fraud", version=2)


def _log_model_at(path: str) -> None:
    import tempfile

    import loopstack as ls

    project = ls.Project.init(tempfile.mkdtemp(), name="names", tracking={"capture_environment": False})
    try:
        with ls.start_run(project=project) as run:
            run.log_model(lambda x: x, path)
    finally:
        project.close()


def _policy(name: str) -> None:
    from loopstack.pipelines import Policy

    Policy(name, then=[lambda ctx: None])


def _project_config(name: str) -> None:
    from loopstack.core.config import ProjectConfig

    ProjectConfig(name=name)


def _tracking_key(key: str) -> None:
    from loopstack.tracking.entities import validate_key

    validate_key(key)


@pytest.mark.parametrize(("check", "valid", "refusal"), [
    (validate_model_name, "fraud", "invalid model name"),
    (validate_alias, "champion", "invalid alias"),
    (_log_model_at, "model", "invalid model artifact path"),
    (_policy, "retrain", "policy name"),
    (_project_config, "shop", "use a letter first"),
    (_tracking_key, "auc", "invalid key"),
])
def test_a_name_with_a_trailing_newline_is_refused(check, valid, refusal):
    """Every name pattern ended in ``$``, which also matches before a final newline: ``"fraud\\n"`` was registered
    and listed, and would break the one-line references, file names and filters built from it."""
    from pydantic import ValidationError as PydanticValidationError

    from loopstack.core.errors import ConfigError

    check(valid)
    with pytest.raises((ValidationError, ConfigError, PydanticValidationError), match=refusal):
        check(valid + "\n")
