"""The flavor contract: how one kind of model is saved to files and loaded back.

A flavor never reads the artifact store itself. `save` writes files into a
folder that the caller then stores content-addressed; `load` receives those
files as bytes that the store has already verified against their sha256, so
a flavor that unpickles can only ever unpickle bytes that are what was saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class Predictor(Protocol):
    """A loaded model: `predict`, and `predict_proba` where the model has one."""

    raw: Any

    def predict(self, data: Any) -> Any: ...


class Flavor(Protocol):
    """Save and load one kind of model.

    `libraries` are the distributions whose versions go into the manifest;
    `matches` must decide from the object's type alone, without importing the
    library, so that detecting a flavor stays cheap.
    """

    name: str
    libraries: tuple[str, ...]

    def matches(self, model: Any) -> bool: ...

    def save(self, model: Any, directory: Path) -> dict[str, Any]: ...

    def load(self, files: Mapping[str, bytes], options: Mapping[str, Any]) -> Predictor: ...


class NativePredictor:
    """A model object that already has `predict` (and maybe `predict_proba`)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        if hasattr(raw, "predict_proba"):
            self.predict_proba = raw.predict_proba

    def predict(self, data: Any) -> Any:
        return self.raw.predict(data)


def defined_in(model: Any, *packages: str) -> bool:
    """Whether the model's class, or a class it derives from, comes from one of `packages`."""
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root in packages:
            return True
    return False


def qualified_name(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"
