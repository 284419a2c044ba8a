"""XGBoost models in XGBoost's own format (UBJSON), both APIs.

The native format, unlike a pickle, loads across XGBoost versions and runs
no code. The scikit-learn API (`XGBClassifier`, ...) is rebuilt from its
class name and the saved booster, which also carries its sklearn attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.registry.flavors.base import NativePredictor, defined_in

FILE = "model.ubj"


class BoosterPredictor:
    """A raw `xgboost.Booster`: input goes through a DMatrix."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def predict(self, data: Any) -> Any:
        import xgboost

        if self.raw.feature_names is None and hasattr(data, "to_numpy"):
            data = data.to_numpy()  # trained on an array: names would not match
        return self.raw.predict(xgboost.DMatrix(data))


class XGBoostFlavor:
    """Save and load XGBoost boosters and scikit-learn-API models."""

    name = "xgboost"
    libraries = ("xgboost",)

    def matches(self, model: Any) -> bool:
        return defined_in(model, "xgboost")

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        import xgboost

        if isinstance(model, xgboost.Booster):
            api = "booster"
        elif isinstance(model, xgboost.XGBModel):
            api = "sklearn"
        else:
            raise ValidationError(
                f"cannot save {type(model).__name__} with the xgboost flavor; pass an xgboost.Booster "
                "or a scikit-learn API model such as xgboost.XGBClassifier"
            )
        model.save_model(str(directory / FILE))
        return {"file": FILE, "api": api, "class": type(model).__name__}

    def load(self, files: Mapping[str, bytes], options: Mapping[str, Any]) -> NativePredictor | BoosterPredictor:
        import xgboost

        data = bytearray(files[options.get("file", FILE)])
        if options.get("api") == "booster":
            booster = xgboost.Booster()
            booster.load_model(data)
            return BoosterPredictor(booster)
        cls = getattr(xgboost, str(options["class"]), None)
        if not (isinstance(cls, type) and issubclass(cls, xgboost.XGBModel)):
            raise ValidationError(
                f"xgboost {xgboost.__version__} has no model class {options['class']!r}; "
                "install the version the model was saved with"
            )
        model = cls()
        model.load_model(data)
        return NativePredictor(model)


FLAVOR = XGBoostFlavor()
