"""scikit-learn estimators and pipelines, saved with pickle.

Pickle is what scikit-learn itself documents for persistence; its risk (a
pickle runs code when loaded) is contained by the store: `load` only ever
sees bytes whose sha256 matched the manifest. A histogram gradient-boosting
model is also saved compiled to plain arrays (`flavors.trees`), which a
server loads without scikit-learn; the estimator stays the reference.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loopstack.registry.flavors.base import NativePredictor, defined_in

FILE = "model.pkl"


class SklearnFlavor:
    """Save and load scikit-learn models."""

    name = "sklearn"
    libraries = ("scikit-learn",)

    def matches(self, model: Any) -> bool:
        return defined_in(model, "sklearn")

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        (directory / FILE).write_bytes(pickle.dumps(model, protocol=5))
        options: dict[str, Any] = {"file": FILE}
        from loopstack.registry.flavors import trees

        arrays = trees.compile_trees(model)  # None for anything it does not support
        if arrays is not None:
            (directory / trees.FILE).write_bytes(trees.dump(arrays))
            options["compiled"] = trees.FILE
        return options

    def load(self, files: Mapping[str, bytes], options: Mapping[str, Any]) -> NativePredictor:
        return NativePredictor(pickle.loads(files[options.get("file", FILE)]))

    def load_compiled(self, files: Mapping[str, bytes], options: Mapping[str, Any]) -> NativePredictor:
        from loopstack.registry.flavors import trees

        return NativePredictor(trees.load(files[options["compiled"]]))


FLAVOR = SklearnFlavor()
