"""Tree ensembles compiled to NumPy arrays, so a server can answer without importing scikit-learn.

Unpickling a ``HistGradientBoostingClassifier`` imports scikit-learn, and with
it SciPy's statistics and pandas: about two seconds of a server's cold start
on a small machine, for a model whose prediction is a walk down a hundred
small trees. So when the sklearn flavor saves a supported model it also
writes the trees as plain arrays (``trees.npz``, loaded without pickle), and
a server loads those instead (``load_model(..., compiled=True)``).

The walk repeats scikit-learn's arithmetic exactly: a row goes left when its
value is ``<=`` the node's threshold, or when it is NaN and the node sends
missing values left; the raw score starts at the baseline and adds each
tree's leaf in iteration order; probabilities use ``1 / (1 + exp(-raw))``
with the C library's ``exp``, as SciPy's ``expit`` does. The flavor saves
the compiled form only after checking, on probe rows built around every
threshold, that it gives bit-for-bit the answers of the estimator.

Supported: ``HistGradientBoostingClassifier`` with two classes and
``HistGradientBoostingRegressor`` with an identity or log link, without
categorical features. Anything else is served by the estimator itself.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

FILE = "trees.npz"
_CHUNK_CELLS = 1 << 20  # rows x trees walked at once: bounds the work arrays (8 MB each)
_BINARY, _IDENTITY, _LOG = 0, 1, 2


def compile_trees(model: Any) -> dict[str, np.ndarray] | None:
    """The arrays of a supported fitted model whose compiled answers match its own; else None."""
    arrays = _arrays(model)
    if arrays is None:
        return None
    compiled = compiled_model(arrays)
    probe: Any = _probe_rows(arrays)
    if "feature_names" in arrays:  # fitted on a DataFrame: it expects one back
        import pandas as pd

        probe = pd.DataFrame(probe, columns=arrays["feature_names"].tolist())
    if not np.array_equal(compiled.predict(probe), model.predict(probe)):
        return None
    if isinstance(compiled, CompiledClassifier) and not np.array_equal(compiled.predict_proba(probe),
                                                                       model.predict_proba(probe)):
        return None
    return arrays


def dump(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load(data: bytes) -> CompiledTrees:
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return compiled_model({name: stored[name] for name in stored.files})


def compiled_model(arrays: dict[str, np.ndarray]) -> CompiledTrees:
    return CompiledClassifier(arrays) if int(arrays["kind"]) == _BINARY else CompiledTrees(arrays)


class CompiledTrees:
    """A compiled tree ensemble (a regressor): ``predict``."""

    library = "sklearn"  # what it was compiled from, as the model metadata reports it

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.kind = int(arrays["kind"])
        self.n_features_in_ = int(arrays["n_features"])
        if "feature_names" in arrays:
            self.feature_names_in_ = arrays["feature_names"]
        # A leaf points to itself on both sides with an infinite threshold, so a row that reached one
        # can take more steps without checking where it stands. Node ids are doubled (entries 2i and
        # 2i + 1 both describe node i), so "the child on side r" is one gather: children2[node2 + r].
        leaf, roots = arrays["leaf"], arrays["roots"]
        index = np.arange(len(leaf))
        left, right = np.where(leaf, index, arrays["left"]), np.where(leaf, index, arrays["right"])
        self._feature2 = np.repeat(np.where(leaf, 0, arrays["feature"]), 2)
        self._threshold2 = np.repeat(np.where(leaf, np.inf, arrays["threshold"]), 2)
        self._missing_left2 = np.repeat(arrays["missing_left"] | leaf, 2)
        self._children2 = 2 * np.stack([left, right], axis=1).ravel()
        # Walked tree-major with the deepest trees first: step k concerns only the trees deeper than k,
        # a prefix of the work arrays. Most trees are far shallower than the deepest one.
        steps = _tree_steps(leaf, left, right, roots)
        self._tree_order = np.argsort(-steps, kind="stable")
        self._sorted_roots2 = 2 * roots[self._tree_order]
        self._live_trees = [int(np.count_nonzero(steps > k)) for k in range(int(steps.max(initial=0)))]
        self._value, self._roots = arrays["value"], roots
        self._baseline = float(arrays["baseline"])

    @property
    def raw(self) -> CompiledTrees:
        return self

    def predict(self, data: Any) -> np.ndarray:
        raw = self._raw(data)
        return np.exp(raw) if self.kind == _LOG else raw

    def _raw(self, data: Any) -> np.ndarray:
        names = getattr(self, "feature_names_in_", None)
        if names is not None and hasattr(data, "columns") and list(data.columns) != names.tolist():
            raise ValueError(f"expected columns {names.tolist()} in that order, got {list(data.columns)}")
        rows = np.asarray(data.to_numpy() if hasattr(data, "to_numpy") else data, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_features_in_:
            raise ValueError(f"expected rows of {self.n_features_in_} features, got an array of shape {rows.shape}")
        raw = np.empty(len(rows), dtype=np.float64)
        step = max(1, _CHUNK_CELLS // len(self._roots))
        for start in range(0, len(rows), step):
            raw[start:start + step] = self._raw_chunk(rows[start:start + step])
        return raw

    def _raw_chunk(self, rows: np.ndarray) -> np.ndarray:
        n_rows, width = rows.shape
        n_trees = len(self._roots)
        flat = rows.ravel()
        offset = np.tile(np.arange(0, n_rows * width, width), n_trees)  # where each cell's row starts in `flat`
        node = np.repeat(self._sorted_roots2, n_rows)  # cell (tree t, row r) at t * n_rows + r
        any_nan = bool(np.isnan(flat).any())
        for trees in self._live_trees:
            live = trees * n_rows
            at = node[:live]
            x = flat[offset[:live] + self._feature2[at]]
            if any_nan:
                go_right = ~((x <= self._threshold2[at]) | (np.isnan(x) & self._missing_left2[at]))
            else:
                go_right = x > self._threshold2[at]  # the same test without NaN
            node[:live] = self._children2[at + go_right]
        table = np.empty((n_rows, n_trees + 1), dtype=np.float64)
        table[:, 0] = self._baseline
        table[:, 1 + self._tree_order] = self._value[node >> 1].reshape(n_trees, n_rows).T
        # adds the trees one at a time, in iteration order: the sums round as scikit-learn's do
        return np.add.accumulate(table, axis=1)[:, -1]


class CompiledClassifier(CompiledTrees):
    """A compiled two-class ensemble: ``predict``, ``predict_proba`` and ``classes_``."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__(arrays)
        self.classes_ = arrays["classes"]

    def predict(self, data: Any) -> np.ndarray:
        return self.classes_[(self._raw(data) > 0).astype(int)]

    def predict_proba(self, data: Any) -> np.ndarray:
        positive = np.array([_expit(value) for value in self._raw(data).tolist()], dtype=np.float64)
        proba = np.empty((len(positive), 2), dtype=np.float64)
        proba[:, 1] = positive
        proba[:, 0] = 1 - proba[:, 1]
        return proba


def _tree_steps(leaf: np.ndarray, left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Steps from each tree's root to its deepest leaf (0 for a tree that is one leaf)."""
    depth = np.zeros(len(leaf), dtype=np.int64)
    frontier, level = roots, 0
    while len(frontier):
        depth[frontier] = level
        inner = frontier[~leaf[frontier]]
        frontier = np.concatenate([left[inner], right[inner]])
        level += 1
    return np.maximum.reduceat(depth, roots) if len(roots) else depth[:0]


def _expit(value: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-value))
    except OverflowError:
        return 0.0


def _arrays(model: Any) -> dict[str, np.ndarray] | None:
    """Flatten the trees of a supported model into arrays, or None for anything unsupported."""
    cls = type(model)
    if not cls.__module__.startswith("sklearn.ensemble._hist_gradient_boosting"):
        return None
    kind = _kind(model)
    if kind is None or getattr(model, "_preprocessor", None) is not None:
        return None
    if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
        return None
    if getattr(model, "n_trees_per_iteration_", None) != 1 or not getattr(model, "_predictors", None):
        return None
    trees = [iteration[0].nodes for iteration in model._predictors]
    offsets = np.cumsum([0, *(len(nodes) for nodes in trees[:-1])])
    nodes = np.concatenate(trees)
    shift = np.repeat(offsets, [len(t) for t in trees])
    arrays = {
        "kind": np.array(kind), "n_features": np.array(model.n_features_in_),
        "feature": nodes["feature_idx"].astype(np.int64), "threshold": nodes["num_threshold"].astype(np.float64),
        "missing_left": nodes["missing_go_to_left"].astype(bool), "leaf": nodes["is_leaf"].astype(bool),
        "left": nodes["left"].astype(np.int64) + shift, "right": nodes["right"].astype(np.int64) + shift,
        "value": nodes["value"].astype(np.float64), "roots": offsets.astype(np.int64),
        "baseline": np.array(float(np.asarray(model._baseline_prediction).ravel()[0])),
        "depth": np.array(int(nodes["depth"].max()) + 1),
    }
    if kind == _BINARY:
        classes = np.asarray(model.classes_)
        if classes.dtype.kind not in "biufU":
            return None  # object labels would need pickle to store
        arrays["classes"] = classes
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        arrays["feature_names"] = np.asarray(names, dtype=str)
    return arrays


def _kind(model: Any) -> int | None:
    loss = getattr(model, "_loss", None)
    link = type(getattr(loss, "link", None)).__name__
    if type(model).__name__ == "HistGradientBoostingClassifier":
        return _BINARY if type(loss).__name__ == "HalfBinomialLoss" and link == "LogitLink" else None
    if type(model).__name__ == "HistGradientBoostingRegressor":
        return {"IdentityLink": _IDENTITY, "LogLink": _LOG}.get(link)
    return None


def _probe_rows(arrays: dict[str, np.ndarray], count: int = 512, seed: int = 0) -> np.ndarray:
    """Rows whose values sit on, just below and just above every split threshold, and NaN."""
    rng = np.random.default_rng(seed)
    n_features = int(arrays["n_features"])
    split = ~arrays["leaf"]
    rows = rng.standard_normal((count, n_features))
    for feature in range(n_features):
        thresholds = arrays["threshold"][split & (arrays["feature"] == feature)]
        thresholds = thresholds[np.isfinite(thresholds)]
        if not len(thresholds):
            continue
        choices = np.concatenate([thresholds, np.nextafter(thresholds, -np.inf), np.nextafter(thresholds, np.inf),
                                  [np.nan, thresholds.min() - 1, thresholds.max() + 1]])
        rows[:, feature] = rng.choice(choices, size=count)
    return rows


__all__ = ["CompiledClassifier", "CompiledTrees", "compile_trees", "compiled_model", "dump", "load"]
