"""Plain Python: a function ``f(X) -> predictions``, or any object with `predict`.

cloudpickle serializes functions and classes by value (closures, lambdas,
classes defined in ``__main__``), which plain pickle refuses. Its output is
a normal pickle stream, so loading goes through `pickle.loads`, one place to
reason about, and only over verified bytes.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loopstack.registry.flavors.base import NativePredictor

FILE = "model.cloudpickle"


class FunctionPredictor:
    """A function used as a model's `predict`."""

    def __init__(self, raw: Callable[[Any], Any]) -> None:
        self.raw = raw

    def predict(self, data: Any) -> Any:
        return self.raw(data)


class PythonFlavor:
    """Save and load a function or an object with `predict`."""

    name = "python"
    libraries = ("cloudpickle",)

    def matches(self, model: Any) -> bool:
        return callable(getattr(model, "predict", None)) or callable(model)

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        import cloudpickle

        kind = "object" if callable(getattr(model, "predict", None)) else "function"
        (directory / FILE).write_bytes(cloudpickle.dumps(model, protocol=5))
        return {"file": FILE, "kind": kind}

    def load(self, files: Mapping[str, bytes], options: Mapping[str, Any]) -> NativePredictor | FunctionPredictor:
        raw = pickle.loads(files[options.get("file", FILE)])
        return NativePredictor(raw) if options.get("kind") == "object" else FunctionPredictor(raw)


FLAVOR = PythonFlavor()
