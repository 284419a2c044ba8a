"""Edge: export scikit-learn, XGBoost and LightGBM models to ONNX, serve them with onnxruntime, check parity.

Tree ensembles run in float32 in onnxruntime (its tree operators return
float32), so outputs differ from the original model's in the last digits, and
a model trained on float64 data can send a row that lies between a float64
split threshold and its float32 rounding down the other branch. XGBoost and
LightGBM train in float32 and match exactly; for scikit-learn, train on
``X.astype(np.float32)`` when exact parity matters. `export_onnx` therefore always
returns a `ParityReport` on the example rows: the largest absolute difference
of the outputs and the share of rows whose predicted class (or value within
``tolerance``) agrees. An `OnnxModel` has ``predict``/``predict_proba`` and can
be served by `create_app` like any other model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopstack.core.errors import ConfigError, ValidationError


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX graph reproduces the original model on the same rows."""

    rows: int
    max_abs_diff: float
    agreement: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.agreement == 1.0 and self.max_abs_diff <= self.tolerance


class OnnxModel:
    """An ONNX graph run by onnxruntime, with the scikit-learn prediction interface.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.random.default_rng(0).normal(size=(50, 3))
    >>> clf = LogisticRegression().fit(X, X[:, 0] > 0)
    >>> onnx_model, report = export_onnx(clf, X)
    >>> report.ok, onnx_model.predict_proba(X[:2]).shape
    (True, (2, 2))
    """

    def __init__(self, model_bytes: bytes, n_features: int, classifier: bool,
                 feature_names: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the server sizes threads; one predict must not take every core
        self.model_bytes = model_bytes
        self.n_features_in_ = n_features
        if feature_names is not None:  # served by name, like the model it came from
            self.feature_names_in_ = np.asarray(list(feature_names), dtype=object)
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = np.float64 if graph_input.type == "tensor(double)" else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]
        if classifier:
            self.predict_proba = self._predict_proba

    def _run(self, X: Any) -> list[Any]:
        names = getattr(self, "feature_names_in_", None)
        if names is not None and hasattr(X, "columns"):
            X = X[list(names)]  # a frame's columns in the order the graph takes them
        array = np.asarray(X, dtype=self.input_dtype)
        if array.ndim != 2 or array.shape[1] != self.n_features_in_:
            raise ValidationError(f"input has shape {array.shape}; the ONNX model takes (n, {self.n_features_in_})")
        return self.session.run(None, {self.input_name: array})

    def predict(self, X: Any) -> np.ndarray:
        """Labels (classifiers) or values (regressors; one column per target when there are several)."""
        if not len(X):
            return np.empty(0)
        outputs = np.asarray(self._run(X)[0]).reshape(len(X), -1)
        return outputs[:, 0] if outputs.shape[1] == 1 else outputs

    def _predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self._run(X)[1], dtype=np.float64)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the .onnx file."""
        with open(path, "wb") as handle:
            handle.write(self.model_bytes)


def export_onnx(model: Any, example: Any, tolerance: float = 1e-4) -> tuple[OnnxModel, ParityReport]:
    """Convert `model` (scikit-learn, XGBoost or LightGBM; a registry model's ``raw``) and check parity on `example`."""
    raw = getattr(model, "raw", model)
    X = _example_rows(example)
    if X.ndim != 2 or len(X) == 0:
        raise ValidationError(f"example must be a non-empty 2-D array of rows, got shape {X.shape}")
    classifier = callable(getattr(raw, "predict_proba", None))
    names = getattr(raw, "feature_names_in_", None)
    onnx_model = OnnxModel(_convert(raw, X), X.shape[1], classifier, None if names is None else [str(n) for n in names])
    return onnx_model, parity(raw, onnx_model, X, tolerance)


def _example_rows(example: Any) -> np.ndarray:
    """The example as float64 rows, as a client sends them; the exported graph takes one numeric tensor, so text
    columns are refused."""
    try:
        return np.asarray(example, dtype=np.float64)
    except (ValueError, TypeError):
        dtypes = getattr(example, "dtypes", None)
        text = [str(c) for c, t in dtypes.items() if t.kind not in "fiub"] if dtypes is not None else []
        where = f"column(s) {text}" if text else "values"
        raise ValidationError(
            f"example has non-numeric {where}; ONNX export takes models whose inputs are all numbers: encode "
            "categorical columns into numbers before the model (e.g. OrdinalEncoder) and export that model"
        ) from None


def parity(original: Any, onnx_model: OnnxModel, X: np.ndarray, tolerance: float = 1e-4) -> ParityReport:
    """Compare outputs of the original and the ONNX model on the same rows, as a client would send them to each.

    The ONNX model reads them in the graph's precision (float32 for tree ensembles), so a row lying between a
    float64 threshold and its float32 rounding goes down the other branch there, and shows here. Rounding the
    rows to float32 for both sides instead measured a difference no client sees: the original model given
    rounded rows, which can cross a threshold the graph's own rounding keeps them on the right side of.
    """
    X = np.asarray(X, dtype=np.float64)
    names = getattr(onnx_model, "feature_names_in_", None)
    rows = X if names is None else _frame(X, names)  # a model fitted on a frame wants one (else it warns)
    if callable(getattr(onnx_model, "predict_proba", None)):
        want = np.asarray(original.predict_proba(rows), dtype=np.float64)
        got = onnx_model.predict_proba(X)
        agree = np.mean(np.argmax(want, axis=1) == np.argmax(got, axis=1))
    else:
        want = np.asarray(original.predict(rows), dtype=np.float64).ravel()
        got = onnx_model.predict(X).astype(np.float64).ravel()
        agree = np.mean(np.abs(want - got) <= tolerance * np.maximum(1.0, np.abs(want)))
    return ParityReport(len(X), float(np.max(np.abs(want - got))), float(agree), tolerance)


def _frame(X: np.ndarray, names: Any) -> Any:
    import pandas as pd

    return pd.DataFrame(X, columns=list(names))


def _convert(raw: Any, X: np.ndarray) -> bytes:
    from onnxmltools.convert.common.data_types import FloatTensorType

    module = type(raw).__module__.split(".")[0]
    inputs = [("input", FloatTensorType([None, X.shape[1]]))]
    if module == "sklearn":
        from skl2onnx import to_onnx

        _patch_skl2onnx_leaf_flag()
        options = {id(raw): {"zipmap": False}} if callable(getattr(raw, "predict_proba", None)) else None
        opsets = {"": 17, "ai.onnx.ml": 3}
        return to_onnx(raw, X[:1].astype(np.float32), options=options, target_opset=opsets).SerializeToString()
    if module == "xgboost":
        from onnxmltools import convert_xgboost

        return convert_xgboost(raw, initial_types=inputs, target_opset=15).SerializeToString()
    if module == "lightgbm":
        from onnxmltools import convert_lightgbm

        return convert_lightgbm(raw, initial_types=inputs, target_opset=15, zipmap=False).SerializeToString()
    raise ConfigError(f"cannot export {type(raw).__name__} to ONNX; scikit-learn, XGBoost and LightGBM models can be")


def _patch_skl2onnx_leaf_flag() -> None:
    """skl2onnx (1.20) passes a Python bool for a leaf's missing-value flag, which current onnx rejects
    ("Expected an int, got a boolean") when converting HistGradientBoosting models; pass it as an int."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "_loopstack", False):
        return

    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(kwargs["nodes_missing_value_tracks_true"])
        return original(*args, **kwargs)

    add_node._loopstack = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node
