"""The public names of loopstack.drift are the ones we mean to export, and importing it stays light."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import loopstack.drift as drift


def test_exported_members() -> None:
    modules = {info.name for info in pkgutil.iter_modules(drift.__path__)}
    public = {name for name in dir(drift) if not name.startswith("_")}
    assert set(drift.__all__) == (public - modules) | ({"compare", "performance"} & public)
    for name in drift.__all__:
        assert getattr(drift, name) is not None


def test_import_does_not_load_heavy_libraries() -> None:
    code = "import sys, loopstack.drift; print(sorted({'scipy', 'pyarrow', 'pandas', 'sklearn'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
