"""Subgroup breakdowns: the same comparison within each segment (country, device, ...).

A treatment can help on mobile and hurt on desktop. Breaking results down by
segment shows that, but each extra segment is another chance of a false
positive, so the p-values are corrected across segments (Holm by default;
Benjamini-Hochberg for long exploratory lists). Grouping is vectorised: one
``np.unique`` and a few ``np.bincount`` passes compute every segment's
sufficient statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.corrections import Method, adjust
from loopstack.rollout.stats.frequentist import Comparison, welch_ttest, ztest_proportions
from loopstack.rollout.stats.summary import Summary, finite_or_none


@dataclass(frozen=True)
class SubgroupResult:
    """One segment's comparison and its p-value corrected across segments."""

    segment: Any
    comparison: Comparison | None
    p_adjusted: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON record; an untested segment's p_adjusted (NaN) is None."""
        base = self.comparison.to_dict() if self.comparison else {}
        return {"segment": self.segment, **base, "p_adjusted": finite_or_none(self.p_adjusted), "note": self.note}


def subgroup_breakdown(
    segments: Any,
    variants: Any,
    values: Any,
    *,
    control: Any,
    treatment: Any,
    kind: Literal["mean", "proportion"] = "mean",
    alpha: float = 0.05,
    correction: Method = "holm",
    min_units: int = 2,
) -> list[SubgroupResult]:
    """Compare ``treatment`` with ``control`` within each segment.

    Parameters
    ----------
    segments, variants, values : array-like
        One entry per unit: its segment, its variant label, its metric value
        (0/1 for ``kind="proportion"``). DataFrame columns work as they are.
    control, treatment : label
        The variant labels to compare.
    kind : {"mean", "proportion"}
        Welch's t-test or the two-proportion z-test.
    min_units : int
        Segments with fewer units in either arm are reported without a test.

    Examples
    --------
    >>> seg = ["web"] * 4 + ["app"] * 4
    >>> var = ["a", "b"] * 4
    >>> val = [1, 1, 0, 1, 0, 0, 1, 0]
    >>> [r.segment for r in subgroup_breakdown(seg, var, val, control="a", treatment="b", kind="proportion")]
    ['app', 'web']
    """
    seg, var, val = (np.asarray(x) for x in (segments, variants, values))
    if not seg.shape == var.shape == val.shape or seg.ndim != 1:
        raise ValidationError(
            f"segments, variants and values need one entry per unit, got lengths {seg.size}, {var.size}, {val.size}."
        )
    val = val.astype(float)
    labels, inverse = np.unique(seg, return_inverse=True)
    stats = {
        arm: _group_sums(inverse, val, var == label, labels.size) for arm, label in (("c", control), ("t", treatment))
    }
    comparisons = [_compare(i, stats, kind, alpha, min_units) for i in range(labels.size)]
    tested = [i for i, c in enumerate(comparisons) if c is not None]
    adjusted = adjust([comparisons[i].p_value for i in tested], correction) if tested else []
    p_adj = dict(zip(tested, adjusted, strict=True))
    return [
        SubgroupResult(
            segment=labels[i].item(),
            comparison=comparisons[i],
            p_adjusted=p_adj.get(i, float("nan")),
            note="" if comparisons[i] is not None else f"fewer than {min_units} units in an arm",
        )
        for i in range(labels.size)
    ]


def _group_sums(inverse: np.ndarray, val: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Per segment: units, mean, and sum of squared deviations from the mean.

    Two passes (the mean, then deviations from it, which also correct the mean) rather than
    ``sum(x**2) - n * mean**2``, which cancels to nothing for a metric whose mean dwarfs its
    spread (a timestamp, an amount in micro-units).
    """
    groups, x = inverse[mask], val[mask]
    n = np.bincount(groups, minlength=k)
    safe_n = np.maximum(n, 1)
    mean = np.bincount(groups, weights=x, minlength=k) / safe_n
    mean += np.bincount(groups, weights=x - mean[groups], minlength=k) / safe_n
    m2 = np.bincount(groups, weights=(x - mean[groups]) ** 2, minlength=k)
    return n, mean, m2


def _compare(
    i: int, stats: dict[str, tuple[np.ndarray, ...]], kind: str, alpha: float, min_units: int
) -> Comparison | None:
    (nc, mc, qc), (nt, mt, qt) = stats["c"], stats["t"]
    if min(nc[i], nt[i]) < max(min_units, 2):
        return None
    if kind == "proportion":
        return ztest_proportions(round(mc[i] * nc[i]), int(nc[i]), round(mt[i] * nt[i]), int(nt[i]), alpha=alpha)
    control = Summary(int(nc[i]), float(mc[i]), float(qc[i] / (nc[i] - 1)))
    treatment = Summary(int(nt[i]), float(mt[i]), float(qt[i] / (nt[i] - 1)))
    return welch_ttest(control, treatment, alpha=alpha)


__all__ = ["SubgroupResult", "subgroup_breakdown"]
