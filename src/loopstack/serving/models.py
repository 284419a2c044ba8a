"""A loaded model as the server sees it: name, version, input schema and one batch function.

Models come from the registry (`loopstack.registry.api.load_model`) or are
passed in as objects; either way they only need ``predict`` (and, for
classifiers, ``predict_proba``). The input schema is read from the model's
recorded signature when it has one, else from scikit-learn's fitted
attributes, so requests are checked before they reach the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopstack.core.errors import ConfigError, LoopstackError
from loopstack.serving.config import ModelSpec
from loopstack.serving.inputs import Column, InputSchema, Rows, n_rows

Loader = Callable[[str], Any]


class ModelError(LoopstackError):
    """The model failed on some rows, or answered them wrongly (other requests in a batch still succeed)."""


@dataclass
class ModelAdapter:
    """One model version ready to serve.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    >>> clf = LogisticRegression().fit(X, [0, 1, 0, 1])
    >>> adapter = adapt(clf, ModelSpec(name="m", model=clf))
    >>> adapter.method, adapter.schema.names
    ('predict_proba', ['x0', 'x1'])
    >>> adapter.run(X[:1]).shape
    (1, 2)
    """

    name: str
    version: str
    schema: InputSchema
    method: str
    model: Any
    variant: str | None = None
    features: str | tuple[str, ...] | None = None  # what entity-key requests read from the feature store

    def run(self, rows: Rows) -> np.ndarray:
        """One vectorized call of the model on a batch of rows: one output per row, first axis.

        Any other count is the model's fault, not the rows' (`ModelError`, a 500): every caller
        (the batcher, the stream consumers) would otherwise hand rows each other's outputs.
        """
        n = n_rows(rows)
        outputs = by_row(getattr(self.model, self.method)(self.model_input(rows)), n)
        if outputs.ndim == 0 or outputs.shape[0] != n:
            raise ModelError(f"model {self.name!r} returned shape {list(outputs.shape)} for {n} rows; "
                             "predict must return one output per row")
        return outputs

    def model_input(self, rows: Rows) -> Any:
        """Rows in the form the model was trained on: a DataFrame when its columns are named,
        with integer and boolean fields cast back from the float matrix the batch was built in."""
        columns = self.schema.columns
        if not self.schema.named and isinstance(rows, np.ndarray):
            dtype = columns[0].dtype if columns else rows.dtype
            return rows if dtype.kind == "f" or dtype == rows.dtype else rows.astype(dtype)
        import pandas as pd

        frame = pd.DataFrame(rows, columns=self.schema.names, copy=False)
        exact = {c.name: c.dtype for c in columns if c.dtype.kind in "iub"}
        return frame.astype(exact) if exact else frame


def by_row(outputs: Any, n: int) -> np.ndarray:
    """`outputs` with rows first.

    A multi-output classifier's predict_proba (scikit-learn's MultiOutputClassifier, a multi-output
    forest) is a list of one (rows, classes) array per output; as an array that is (outputs, rows,
    classes), which the batcher would slice by output. Stacked on axis 1 each row gets its own
    (outputs, classes) probabilities.

    Examples
    --------
    >>> by_row([np.zeros((3, 2)), np.ones((3, 2))], 3).shape
    (3, 2, 2)
    """
    if isinstance(outputs, list) and outputs and all(
            isinstance(o, np.ndarray) and o.ndim == 2 and o.shape[0] == n for o in outputs):
        if len({o.shape for o in outputs}) > 1:
            raise ValueError(f"the outputs have different numbers of classes {[o.shape[1] for o in outputs]}; "
                             "serve one model per output")
        return np.stack(outputs, axis=1)
    return np.asarray(outputs)


def adapt(model: Any, spec: ModelSpec) -> ModelAdapter:
    """Wrap a loaded model for serving under `spec`."""
    method = spec.method
    if method == "auto":
        has_proba = getattr(model, "has_predict_proba", None)  # a registry LoadedModel says so itself
        if has_proba is None:
            has_proba = callable(getattr(model, "predict_proba", None))
        method = "predict_proba" if has_proba else "predict"
    if not callable(getattr(model, method, None)):
        raise ConfigError(f"model {spec.name!r} ({type(model).__name__}) has no {method}(); choose method='predict'")
    version = getattr(model, "version", None)
    variant = spec.variant or _alias(spec.ref)
    return ModelAdapter(spec.name, str(version if version is not None else 1), schema_of(model), method, model, variant,
                        spec.features if spec.features is not None else _logged_features(model))


def _logged_features(model: Any) -> str | tuple[str, ...] | None:
    """The features a registry model was logged with (``log_model(..., features=...)``)."""
    from loopstack.registry.model import LoadedModel

    return model.features if isinstance(model, LoadedModel) else None


def load(spec: ModelSpec, loader: Loader | None = None) -> ModelAdapter:
    """Load the model of `spec` (its object, or its registry ref through `loader`)."""
    if spec.model is not None:
        return adapt(spec.model, spec)
    assert spec.ref is not None
    return adapt((loader or registry_loader())(spec.ref), spec)


def registry_loader() -> Loader:
    """`loopstack.registry.api.load_model` taking compiled forms where saved, or a clear error without a registry."""
    try:
        from loopstack.registry.api import load_model
    except ImportError as error:  # pragma: no cover - only before the registry lands
        raise ConfigError(f"the model registry is not available ({error}); pass model objects instead") from error
    return lambda ref: load_model(ref, compiled=True)


def schema_of(model: Any) -> InputSchema:
    """The input schema from the model's signature, else from its fitted scikit-learn attributes."""
    signature = getattr(model, "signature", None)
    if signature is not None:
        schema = _from_signature(signature)
        if schema is not None:
            return schema
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return InputSchema.numeric([str(n) for n in names], named=True)
    count = getattr(model, "n_features_in_", None)
    if count is None:
        raise ConfigError(
            f"cannot tell the inputs of {type(model).__name__}: it has no signature and no n_features_in_; "
            "log it with an example (log_model(model, example=X[:5]))"
        )
    return InputSchema.numeric([f"x{j}" for j in range(int(count))], named=False)


def _from_signature(signature: Any) -> InputSchema | None:
    """Read the registry's signature, which lists named columns with dtypes, or a tensor shape."""
    if hasattr(signature, "to_dict"):
        signature = signature.to_dict()
    elif not isinstance(signature, Mapping) and hasattr(signature, "__dict__"):
        signature = vars(signature)
    if not isinstance(signature, Mapping):
        return None
    inputs = signature.get("inputs", signature)
    if isinstance(inputs, Mapping) and "columns" in inputs:
        columns = inputs["columns"]
        dtypes = inputs.get("dtypes")
        if isinstance(columns, Mapping):
            return InputSchema(tuple(Column(str(n), _dtype(t)) for n, t in columns.items()), named=True)
        if isinstance(columns, list) and columns and isinstance(columns[0], Mapping):
            return InputSchema(tuple(_column(c) for c in columns), named=True)
        if isinstance(columns, list):
            types = dtypes if isinstance(dtypes, list) else ["float64"] * len(columns)
            return InputSchema(tuple(Column(str(n), _dtype(t)) for n, t in zip(columns, types, strict=False)), True)
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], Mapping):
        return InputSchema(tuple(_column(c) for c in inputs), named=True)
    shape = inputs.get("shape") if isinstance(inputs, Mapping) else None
    if isinstance(shape, list | tuple) and len(shape) == 2 and int(shape[1]) > 0:
        dtype = _dtype(inputs.get("dtype", "float64"))
        return InputSchema(tuple(Column(f"x{j}", dtype) for j in range(int(shape[1]))), named=False)
    return None


def _column(entry: Mapping[str, Any]) -> Column:
    return Column(str(entry["name"]), _dtype(entry.get("dtype", entry.get("type", "float64"))))


def _dtype(text: Any) -> np.dtype:
    name = str(text).lower()
    if name in {"str", "string", "object", "category", "large_string", "utf8"}:
        return np.dtype(object)
    if name in {"double", "float"}:
        return np.dtype("float64")
    try:
        dtype = np.dtype(name)
    except TypeError:
        return np.dtype(object)
    return dtype if dtype.kind in "fiubUSO" else np.dtype(object)


def _alias(ref: str | None) -> str | None:
    return ref.split("@", 1)[1] if ref and "@" in ref else None
