"""The public names of loopstack.registry, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import loopstack.registry as registry


def test_exported_members():
    assert set(registry.__all__) == {
        "register_model",
        "load_model",
        "set_alias",
        "delete_alias",
        "delete_model_version",
        "delete_model",
        "get_model_version",
        "list_models",
        "search_model_versions",
        "Registry",
        "LoadedModel",
        "LoggedModel",
        "ModelVersion",
        "RegisteredModel",
        "ModelRef",
        "parse_ref",
        "Signature",
        "Schema",
        "ColumnSpec",
        "infer_signature",
        "check_input",
        "Flavor",
        "FLAVOR_NAMES",
        "detect_flavor",
        "get_flavor",
    }
    for name in registry.__all__:
        assert getattr(registry, name) is not None


def test_importing_the_registry_loads_no_model_library():
    code = (
        "import sys, loopstack.registry as r; r.Registry; r.LoadedModel; r.get_flavor('xgboost'); "
        "print(sorted(m for m in ('sklearn', 'xgboost', 'lightgbm', 'onnxruntime', 'pandas', 'pyarrow') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
