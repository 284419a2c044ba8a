"""Model performance per window once labels arrive, however late.

Predictions are logged when served; labels (feedback) arrive later and are
joined on a key. Each window reports how many of its predictions have a label
yet (coverage) and the metrics over the labelled ones, so a window's numbers
firm up as feedback comes in. Metrics are computed with NumPy: accuracy, F1
(binary, or macro over classes), ROC AUC from scores (rank formula, ties
averaged), RMSE and MAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.drift.data import as_table

CLASSIFICATION = ("accuracy", "f1", "auc")
REGRESSION = ("rmse", "mae")


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of predictions equal to the label."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def f1(y_true: Any, y_pred: Any) -> float:
    """F1 of class 1 for 0/1 labels, else the unweighted mean F1 over classes (macro).

    Examples
    --------
    >>> f1([1, 1, 0, 0], [1, 0, 0, 0])
    0.6666666666666666
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.union1d(y_true, y_pred)
    if set(classes.tolist()) <= {0, 1}:
        return _f1_of(y_true, y_pred, 1)
    return float(np.mean([_f1_of(y_true, y_pred, c) for c in classes]))


def _f1_of(y_true: np.ndarray, y_pred: np.ndarray, positive: Any) -> float:
    tp = np.sum((y_true == positive) & (y_pred == positive))
    wrong = np.sum((y_true == positive) != (y_pred == positive))
    return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 0.0


def roc_auc(y_true: Any, scores: Any) -> float:
    """ROC AUC of scores for two classes (Mann-Whitney U / (n_pos n_neg)); NaN with one class.

    The positive class is the larger label (1 of 0/1, 2 of 1/2, "yes" of "no"/"yes"), as in
    scikit-learn, whose `predict_proba` column 1 is that class's score. (Labels were cast to
    bool, so -1/1 or 1/2 counted as one class and the AUC was NaN.)

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc(["no", "no", "yes", "yes"], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    from scipy.stats import rankdata

    y_true = np.asarray(y_true)
    classes = np.unique(y_true)
    if classes.size > 2:
        raise ValidationError(f"ROC AUC needs two classes; the labels hold {classes.size}: {classes[:10].tolist()}")
    y_true = y_true == classes[-1] if classes.size else y_true.astype(bool)
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float)) ** 2)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def join_labels(predictions: Any, labels: Any, key: str = "id", label: str = "label") -> Any:
    """Predictions left-joined with the labels that have arrived so far (null where none yet).

    A key labelled more than once (a retried post, a correction) keeps its
    last label, so each prediction stays one row.
    """
    predictions, labels = as_table(predictions), as_table(labels)
    for name, table in (("predictions", predictions), ("labels", labels)):
        if key not in table.column_names:
            raise ValidationError(f"key column {key!r} is not in the {name}; columns: {table.column_names}")
    if label not in labels.column_names:
        raise ValidationError(f"label column {label!r} is not in the labels; columns: {labels.column_names}")
    if label in predictions.column_names:
        predictions = predictions.drop_columns([label])
    return predictions.join(_last_per_key(labels.select([key, label]), key), key, join_type="left outer",
                            use_threads=False)


def _last_per_key(labels: Any, key: str) -> Any:
    """The last row of each key, in the order the labels came."""
    import pyarrow.compute as pc

    newest_first = labels.take(np.arange(labels.num_rows - 1, -1, -1))
    keys = newest_first.column(key).combine_chunks()
    return newest_first.take(pc.index_in(pc.unique(keys), value_set=keys))  # index_in finds the first match


def performance(
    predictions: Any,
    labels: Any = None,
    *,
    window: Any = None,
    key: str = "id",
    prediction: str = "prediction",
    label: str = "label",
    score: str | None = None,
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Metrics per window over the predictions that have a label.

    Parameters
    ----------
    predictions
        The prediction log: `key`, `prediction`, optionally `score` (for AUC)
        and a time column used by `window`.
    labels
        Feedback with `key` and `label`; None when `predictions` already holds labels.
    window
        A `CountWindow`, `TimeWindow` or `SlidingWindow`; None for one window.
    metrics
        Names among accuracy, f1, auc (classification) and rmse, mae
        (regression); default accuracy and f1 (plus auc when `score` is given).

    Examples
    --------
    >>> from loopstack.drift import CountWindow
    >>> log = {"id": [1, 2, 3, 4], "prediction": [1, 0, 1, 1]}
    >>> feedback = {"id": [1, 2, 4], "label": [1, 0, 0]}
    >>> [(w["coverage"], w["accuracy"]) for w in performance(log, feedback, window=CountWindow(2))]
    [(1.0, 1.0), (0.5, 0.0)]
    """
    table = as_table(predictions) if labels is None else _join_in_log_order(predictions, labels, key, label)
    names = list(metrics or (("accuracy", "f1", "auc") if score else ("accuracy", "f1")))
    unknown = set(names) - set(CLASSIFICATION + REGRESSION)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; choose from {CLASSIFICATION + REGRESSION}")
    pieces = window.split(table) if window is not None else [_whole(table)]
    return [_window_metrics(piece, names, prediction, label, score) for piece in pieces]


def _join_in_log_order(predictions: Any, labels: Any, key: str, label: str) -> Any:
    """`join_labels`, its rows back in the order of the log: count windows cut the log as it was served.

    The join does not keep row order, and sorting on the key instead put request ids like UUIDs
    in an order unrelated to time (and unlike the windows of the same log with labels in it).
    """
    import pyarrow as pa

    predictions = as_table(predictions)
    position = "__loopstack_position__"
    numbered = predictions.append_column(position, pa.array(np.arange(predictions.num_rows)))
    return join_labels(numbered, labels, key, label).sort_by(position).drop_columns([position])


def _whole(table: Any) -> Any:
    from loopstack.drift.windows import WindowSlice

    return WindowSlice(0, table.num_rows, table)


def _window_metrics(piece: Any, names: list[str], prediction: str, label: str, score: str | None) -> dict[str, Any]:
    import pyarrow.compute as pc

    rows = piece.rows
    labelled = rows.filter(pc.is_valid(rows.column(label)))
    out: dict[str, Any] = {"start": piece.start, "end": piece.end, "n": rows.num_rows,
                           "n_labelled": labelled.num_rows,
                           "coverage": labelled.num_rows / rows.num_rows if rows.num_rows else 0.0}
    y = labelled.column(label).to_numpy(zero_copy_only=False)
    for name in names:
        if not labelled.num_rows:
            out[name] = None
        elif name == "auc":
            if score is None:
                raise ConfigError("metric 'auc' needs score=<column of predicted probabilities>")
            out[name] = roc_auc(y, labelled.column(score).to_numpy(zero_copy_only=False))
        else:
            out[name] = _METRICS[name](y, labelled.column(prediction).to_numpy(zero_copy_only=False))
    return out


_METRICS = {"accuracy": accuracy, "f1": f1, "rmse": rmse, "mae": mae}
