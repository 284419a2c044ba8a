"""Read feature definitions from the project's Python files (config key ``definitions``).

Each file is executed as a fresh module; the definitions it binds to
top-level names are collected with the file they came from, so that errors
found later (by validation or at query time) point at the right file.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Any

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.features.catalog import Catalog
from loopstack.features.definitions import Entity, FeatureService, FeatureView
from loopstack.features.sources import PushSource
from loopstack.features.transforms import OnDemandFeatureView

COLLECTED = (Entity, FeatureView, OnDemandFeatureView, FeatureService, PushSource)


def load_catalog(root: Path, files: list[str]) -> Catalog:
    """Execute each definitions file under `root` and collect what it defines."""
    objects: list[Any] = []
    origins: dict[int, str] = {}
    for name in files:
        path = root / name
        if not path.is_file():
            raise ConfigError(
                f"definitions file {path} (listed in loopstack.yaml `definitions`) does not exist; "
                "create it or remove it from the list"
            )
        for obj in _collect(path):
            if id(obj) not in origins:
                objects.append(obj)
                origins[id(obj)] = name
    return Catalog(objects, origins)


def _collect(path: Path) -> list[Any]:
    root = str(path.parent)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)  # definitions files may import their neighbours
    try:
        namespace = runpy.run_path(str(path), run_name=f"loopstack_definitions_{path.stem}")
    except ValidationError as exc:
        raise ValidationError(f"{path.name}: {exc}") from None
    except Exception as exc:
        if isinstance(exc, SyntaxError) and "null bytes" in str(exc):
            raise ConfigError(f"definitions file {path} (listed in loopstack.yaml `definitions`) holds binary "
                              "data, not Python source; list the .py files that define entities, views and services"
                              ) from None
        raise ConfigError(f"{path.name} failed to run: {exc.__class__.__name__}: {exc}; fix the file") from exc
    finally:
        if added:
            sys.path.remove(root)
    return [value for key, value in namespace.items() if not key.startswith("__") and isinstance(value, COLLECTED)]


__all__ = ["load_catalog"]
