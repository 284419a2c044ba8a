"""LightGBM models: a `Booster` as LightGBM's text format, the sklearn API as a pickle.

The text format is LightGBM's portable one. The scikit-learn API wrappers
(`LGBMClassifier`, ...) keep state that the text format does not hold
(class labels, the objective's wrapper), so they are pickled as scikit-learn
documents; the pickle is only ever loaded from verified bytes.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.registry.flavors.base import NativePredictor, defined_in

TEXT_FILE, PICKLE_FILE = "model.txt", "model.pkl"


class BoosterPredictor:
    """A raw `lightgbm.Booster`; its `predict` takes arrays and frames directly."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def predict(self, data: Any) -> Any:
        return self.raw.predict(data)


class LightGBMFlavor:
    """Save and load LightGBM boosters and scikit-learn-API models."""

    name = "lightgbm"
    libraries = ("lightgbm",)

    def matches(self, model: Any) -> bool:
        return defined_in(model, "lightgbm")

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        import lightgbm

        if isinstance(model, lightgbm.Booster):
            (directory / TEXT_FILE).write_text(model.model_to_string(), encoding="utf-8")
            return {"file": TEXT_FILE, "api": "booster"}
        if isinstance(model, lightgbm.LGBMModel):
            (directory / PICKLE_FILE).write_bytes(pickle.dumps(model, protocol=5))
            return {"file": PICKLE_FILE, "api": "sklearn"}
        raise ValidationError(
            f"cannot save {type(model).__name__} with the lightgbm flavor; pass a lightgbm.Booster "
            "or a scikit-learn API model such as lightgbm.LGBMClassifier"
        )

    def load(self, files: Mapping[str, bytes], options: Mapping[str, Any]) -> NativePredictor | BoosterPredictor:
        if options.get("api") == "booster":
            import lightgbm

            text = files[options.get("file", TEXT_FILE)].decode("utf-8")
            return BoosterPredictor(lightgbm.Booster(model_str=text))
        return NativePredictor(pickle.loads(files[options.get("file", PICKLE_FILE)]))


FLAVOR = LightGBMFlavor()
