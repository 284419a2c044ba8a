"""Per-request values of a canary's primary metric: a feedback value as sent, or a score of the prediction.

A canary of a product change is judged on an outcome the change causes
(conversion, revenue): the feedback's numeric value is the metric. A canary
of a new model version is judged on how well it predicted: the label alone
says nothing (both variants see the same fraud rate), the prediction scored
against it does. So a deployment whose ``primary_metric`` names a scoring
rule gets, for every labelled request, that rule applied to the output the
variant logged for it (the prediction log, row 0 of the request) and the
label. Labels of a probability output are class indices (0..k-1): with
two classes the probability of class 1 is the score.

Examples
--------
>>> import numpy as np
>>> score("brier", np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0.0, 1.0])).round(2).tolist()
[0.04, 0.09]
>>> score("squared_error", np.array([2.0, 5.0]), np.array([1.0, 5.0])).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from loopstack.core.errors import ValidationError

EPS = 1e-15


def _class_index(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    bad = ~scorable(outputs, labels)
    if bad.any():
        raise ValidationError(
            f"label {float(labels[bad][0])!r} is not a class index of a {outputs.shape[1]}-class probability output; "
            "send labels as 0..k-1 in the model's class order"
        )
    return labels.astype(np.int64)


def _brier(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if outputs.ndim == 1:
        return (outputs - labels) ** 2
    index = _class_index(outputs, labels)
    if outputs.shape[1] == 2:
        return (outputs[:, 1] - index) ** 2
    onehot = np.zeros_like(outputs)
    onehot[np.arange(len(index)), index] = 1.0
    return ((outputs - onehot) ** 2).sum(axis=1)


def _log_loss(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if outputs.ndim == 1:
        p = np.clip(outputs, EPS, 1 - EPS)
        return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    index = _class_index(outputs, labels)
    return -np.log(np.clip(outputs[np.arange(len(index)), index], EPS, 1.0))


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if outputs.ndim == 1:
        return (outputs == labels).astype(float)
    return (outputs.argmax(axis=1) == _class_index(outputs, labels)).astype(float)


def _numeric(rule: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def scored(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if outputs.ndim != 1:
            raise ValidationError(f"a numeric error needs one output per request, got {outputs.shape[1]} per row; "
                                  "use brier, log_loss or accuracy for probabilities")
        return rule(outputs, labels)

    return scored


# name -> (per-request score of (outputs, labels), whether higher is better)
SCORING_RULES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], bool]] = {
    "brier": (_brier, False),
    "log_loss": (_log_loss, False),
    "accuracy": (_accuracy, True),
    "squared_error": (_numeric(lambda o, y: (o - y) ** 2), False),
    "absolute_error": (_numeric(lambda o, y: np.abs(o - y)), False),
}


def scorable(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which labels a scoring rule can score against `outputs`: finite, and class indices 0..k-1 of a
    k-class probability output. The controller leaves the others out rather than stall on them."""
    outputs = np.asarray(outputs, dtype=float)
    labels = np.asarray(labels, dtype=float)
    ok = np.isfinite(labels)
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        ok &= (labels == np.round(labels)) & (labels >= 0) & (labels < outputs.shape[1])
    return ok


def score(rule: str, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`rule` applied to each request's output (a row of `outputs`) and label."""
    outputs = np.asarray(outputs, dtype=float)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    return SCORING_RULES[rule][0](outputs, np.asarray(labels, dtype=float))


def higher_is_better(primary_metric: str | None, given: bool | None) -> bool:
    """The metric's direction: a scoring rule's own, else `given` (default: higher is better).

    Examples
    --------
    >>> higher_is_better("brier", None), higher_is_better("conversion", None), higher_is_better("cost", False)
    (False, True, False)
    """
    if primary_metric is not None and (not isinstance(primary_metric, str) or not primary_metric.strip()):
        raise ValidationError(f"primary_metric={primary_metric!r} names no metric: give a scoring rule "
                              f"({', '.join(SCORING_RULES)}) or a feedback metric such as 'conversion', or none")
    if primary_metric in SCORING_RULES:
        own = SCORING_RULES[primary_metric][1]
        if given is not None and given != own:
            word = "higher" if own else "lower"
            raise ValidationError(f"primary_metric={primary_metric!r} is better when {word}; "
                                  "leave higher_is_better unset (or drop --lower-is-better)")
        return own
    return True if given is None else given


__all__ = ["SCORING_RULES", "higher_is_better", "scorable", "score"]
