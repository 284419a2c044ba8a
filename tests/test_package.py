"""The top-level package: what it exports, and that importing it stays cheap."""

import subprocess
import sys

import loopstack

HEAVY = ["sqlalchemy", "pydantic", "pandas", "numpy", "pyarrow", "sklearn", "duckdb", "scipy", "torch", "alembic"]


def test_every_exported_name_resolves() -> None:
    for name in loopstack.__all__:
        assert getattr(loopstack, name) is not None, name


def test_exports_are_what_we_mean_to_export() -> None:
    assert set(loopstack.__all__) == {
        "__version__",
        "ActiveRun",
        "BackendUnavailableError",
        "Client",
        "ConfigError",
        "ConflictError",
        "FilterError",
        "IntegrityError",
        "LoopstackError",
        "NotFoundError",
        "Project",
        "SignatureError",
        "ValidationError",
        "active_run",
        "end_run",
        "get_project",
        "load_model",
        "log_artifact",
        "log_artifacts",
        "log_dict",
        "log_input",
        "log_metric",
        "log_metrics",
        "log_model",
        "log_param",
        "log_params",
        "read_dataset",
        "register_model",
        "seed_everything",
        "set_alias",
        "set_experiment",
        "set_project",
        "set_tag",
        "set_tags",
        "start_run",
    }


def test_import_loads_no_heavy_library() -> None:
    code = f"import sys, loopstack; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_unknown_attribute_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        loopstack.nope  # noqa: B018
