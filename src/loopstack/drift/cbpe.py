"""Performance without labels for a binary classifier: confidence-based estimation (NannyML's CBPE).

If the model's scores are calibrated, a row scored p is positive with
probability p, so the confusion matrix of a chunk has an expected value
without any label: a predicted positive is a true positive with probability
p and a false positive with probability 1 - p, and so on. Accuracy,
precision, recall and F1 follow from the expected counts, and ROC AUC from
the expected true- and false-positive rates along the sorted scores.

The estimate is only as good as the calibration: `fit` on labelled
reference data can learn an isotonic calibration first (``calibrate=True``),
and learns an alert band per metric from the realized values on reference
chunks (mean +- 3 standard deviations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.drift import performance as realized

METRICS = ("accuracy", "precision", "recall", "f1", "auc")


def expected_metrics(scores: Any, threshold: float = 0.5, predicted: Any = None) -> dict[str, float]:
    """Expected accuracy, precision, recall, F1 and ROC AUC of calibrated positive-class scores.

    `predicted` holds the model's 0/1 decisions when they are not simply
    ``scores >= threshold`` (as after calibration, where the model still
    decides on its raw score).

    Examples
    --------
    >>> {k: round(v, 3) for k, v in expected_metrics([0.9, 0.8, 0.2, 0.1]).items()}
    {'accuracy': 0.85, 'precision': 0.85, 'recall': 0.85, 'f1': 0.85, 'auc': 0.875}
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if not p.size:
        raise ValidationError("cannot estimate performance of an empty chunk")
    missing = int(np.isnan(p).sum())
    if missing:  # a NaN score made the estimates NaN, which no alert band flags
        raise ValidationError(f"{missing} of {p.size} scores are missing (NaN); drop or fill them before estimating")
    predicted = p >= threshold if predicted is None else np.asarray(predicted).astype(bool)
    tp, fp = p[predicted].sum(), (1 - p[predicted]).sum()
    fn, tn = p[~predicted].sum(), (1 - p[~predicted]).sum()
    return {
        "accuracy": float((tp + tn) / p.size),
        "precision": float(tp / (tp + fp)) if tp + fp else float("nan"),
        "recall": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan"),
        "auc": _expected_auc(p),
    }


def _expected_auc(p: np.ndarray) -> float:
    order = np.argsort(-p, kind="stable")
    positives, negatives = p[order], 1 - p[order]
    if positives.sum() == 0 or negatives.sum() == 0:
        return float("nan")
    tpr = np.concatenate([[0.0], np.cumsum(positives) / positives.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(negatives) / negatives.sum()])
    return float(np.trapezoid(tpr, fpr))


@dataclass
class CBPE:
    """Confidence-based performance estimation with alert bands learned on the reference.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=20_000)
    >>> y = rng.uniform(size=20_000) < p  # calibrated scores
    >>> estimator = CBPE().fit(p, y)
    >>> round(estimator.estimate(p)["accuracy"], 2), round(float(np.mean((p >= 0.5) == y)), 2)
    (0.75, 0.75)
    """

    threshold: float = 0.5
    calibrate: bool = False
    n_chunks: int = 10
    std_multiplier: float = 3.0
    metrics: Sequence[str] = METRICS
    bands_: dict[str, tuple[float, float]] = field(default_factory=dict, init=False)

    def fit(self, scores: Any, labels: Any) -> CBPE:
        """Learn the calibration (optional) and each metric's band from labelled reference data."""
        scores, labels = np.asarray(scores, dtype=np.float64), _positive(labels)
        if scores.shape != labels.shape:
            raise ValidationError(f"{scores.size} scores but {labels.size} labels; pass one label per score")
        if scores.size < 2 * self.n_chunks:  # an empty or one-row chunk has no realized metrics to learn from
            raise ValidationError(f"{scores.size} reference scores are too few for {self.n_chunks} chunks; "
                                  f"pass at least {2 * self.n_chunks} or lower n_chunks")
        self._calibrator = None
        if self.calibrate:
            from sklearn.isotonic import IsotonicRegression

            self._calibrator = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, labels)
        values: dict[str, list[float]] = {name: [] for name in self.metrics}
        for chunk in np.array_split(np.arange(scores.size), self.n_chunks):
            for name, value in _realized(scores[chunk], labels[chunk], self.threshold).items():
                if name in values:
                    values[name].append(value)
        for name, series in values.items():
            series_arr = np.asarray(series)
            mean, spread = np.nanmean(series_arr), self.std_multiplier * np.nanstd(series_arr)
            self.bands_[name] = (float(mean - spread), float(mean + spread))
        return self

    def estimate(self, scores: Any) -> dict[str, float]:
        """Estimated metrics of one chunk of scores."""
        raw = np.asarray(scores, dtype=np.float64)
        calibrator = getattr(self, "_calibrator", None)
        p = raw if calibrator is None else calibrator.predict(raw)
        estimated = expected_metrics(p, self.threshold, predicted=raw >= self.threshold)
        return {name: estimated[name] for name in self.metrics}

    def estimate_chunks(self, scores: Any, chunk_size: int) -> list[dict[str, Any]]:
        """Estimates per consecutive chunk, each metric flagged when it leaves its reference band."""
        p = np.asarray(scores, dtype=np.float64)
        out = []
        for start in range(0, p.size, chunk_size):
            estimate = self.estimate(p[start : start + chunk_size])
            alerts = [n for n, v in estimate.items() if n in self.bands_ and not _inside(v, self.bands_[n])]
            out.append({"start": start, "end": min(start + chunk_size, p.size), **estimate, "alerts": alerts})
        return out


def _positive(labels: Any) -> np.ndarray:
    """0/1 labels with 1 for the larger of exactly two classes, as `performance.roc_auc` reads them.

    Labels were cast to int, so -1/1 counted -1 as a positive in recall and 1/2 had no
    negatives at all (wrong metrics and bands, no error), and "no"/"yes" failed with a bare
    ValueError. One class cannot say which of the two is positive, so it is refused too.
    """
    labels = np.asarray(labels)
    try:
        classes = np.unique(labels)
    except TypeError as exc:  # mixed types, e.g. 0 and "yes", do not sort
        raise ValidationError(f"labels mix types that do not compare ({exc}); pass 0/1 labels, 1 for positive") from exc
    if classes.size != 2:
        raise ValidationError(
            f"CBPE.fit needs labels of exactly two classes, the larger one positive; found {classes.size}: "
            f"{classes[:10].tolist()}; pass 0/1 labels (1 = positive) with both classes in the reference"
        )
    return (labels == classes[1]).astype(int)


def _realized(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (scores >= threshold).astype(int)
    tp = np.sum((predicted == 1) & (labels == 1))
    return {
        "accuracy": realized.accuracy(labels, predicted),
        "precision": float(tp / predicted.sum()) if predicted.sum() else float("nan"),
        "recall": float(tp / labels.sum()) if labels.sum() else float("nan"),
        "f1": realized.f1(labels, predicted),
        "auc": realized.roc_auc(labels, scores),
    }


def _inside(value: float, band: tuple[float, float]) -> bool:
    return value != value or band[0] <= value <= band[1]
