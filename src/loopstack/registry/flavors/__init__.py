"""Model flavors: one module per kind of model, behind the `Flavor` contract.

========  ====================================  ==========================
name      models                                format
========  ====================================  ==========================
xgboost   `Booster`, `XGBClassifier`, ...       XGBoost UBJSON
lightgbm  `Booster`; `LGBMClassifier`, ...      LightGBM text; pickle
onnx      `onnx.ModelProto`                     ONNX, run by onnxruntime
sklearn   estimators and pipelines              pickle
python    a function, or an object with predict cloudpickle
========  ====================================  ==========================

`detect_flavor` tries them in that order (XGBoost and LightGBM models are
scikit-learn estimators too, so they must come first). A new flavor is one
module with a ``FLAVOR`` object and one entry in `_MODULES`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ValidationError
from loopstack.registry.entities import LoggedModel
from loopstack.registry.flavors.base import Flavor, Predictor

if TYPE_CHECKING:
    from loopstack.tracking import ActiveRun

_MODULES = {
    "xgboost": "loopstack.registry.flavors.xgboost",
    "lightgbm": "loopstack.registry.flavors.lightgbm",
    "onnx": "loopstack.registry.flavors.onnx",
    "sklearn": "loopstack.registry.flavors.sklearn",
    "python": "loopstack.registry.flavors.python",
}
FLAVOR_NAMES = tuple(_MODULES)


def get_flavor(name: str) -> Flavor:
    """The flavor called `name`.

    Examples
    --------
    >>> get_flavor("sklearn").name
    'sklearn'
    """
    module = _MODULES.get(name)
    if module is None:
        raise ValidationError(f"unknown model flavor {name!r}; use one of {', '.join(FLAVOR_NAMES)}")
    flavor: Flavor = import_module(module).FLAVOR
    return flavor


def detect_flavor(model: Any) -> Flavor:
    """The first flavor that recognises `model`'s type.

    Examples
    --------
    >>> detect_flavor(lambda rows: [0] * len(rows)).name
    'python'
    """
    for name in FLAVOR_NAMES:
        flavor = get_flavor(name)
        if flavor.matches(model):
            return flavor
    raise ValidationError(
        f"cannot tell how to save a {type(model).__module__}.{type(model).__qualname__}: it is not a "
        f"model of a known library and has no predict method; pass flavor= (one of {', '.join(FLAVOR_NAMES)}) "
        "or wrap it in an object with predict(X)"
    )


def log_model(
    run: ActiveRun, model: Any, name: str = "model", example: Any = None, flavor: str | None = None,
    features: Any = None,
) -> LoggedModel:
    """Save `model` under `run` at artifact path `name`; see `loopstack.registry.packaging`."""
    from loopstack.registry.packaging import log_model as _log_model

    return _log_model(run, model, name, example=example, flavor=flavor, features=features)


__all__ = ["FLAVOR_NAMES", "Flavor", "LoggedModel", "Predictor", "detect_flavor", "get_flavor", "log_model"]
