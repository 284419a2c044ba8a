"""Sample ratio mismatch: are units split across variants as configured?

When a 50/50 experiment shows 50.8/49.2 over 100,000 users, something dropped
or duplicated units in one arm (a redirect, a crash, a bot filter, a logging
bug) and every metric comparison is suspect, however significant it looks.
The check is Pearson's chi-square goodness-of-fit test of the observed counts
against the configured weights, flagged at p < 0.001 (the threshold GrowthBook,
Eppo and Statsig use, low because the check runs on every look). A flagged
SRM withholds every verdict (see `loopstack.rollout.stats.verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.summary import finite_or_none

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SRMResult:
    """Outcome of a sample ratio mismatch check.

    Examples
    --------
    >>> srm_check([50_800, 49_200], [0.5, 0.5]).flagged
    True
    >>> srm_check([5_030, 4_970], [0.5, 0.5]).flagged
    False
    """

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float

    @property
    def flagged(self) -> bool:
        """True when the split differs from the weights beyond chance (p < threshold)."""
        return bool(self.p_value < self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able record."""
        return {
            "observed": list(self.observed),
            "expected": list(self.expected),
            "chi2": finite_or_none(self.chi2),
            "p_value": finite_or_none(self.p_value),
            "threshold": self.threshold,
            "flagged": self.flagged,
        }


def srm_check(observed: Sequence[int], weights: Sequence[float], threshold: float = SRM_THRESHOLD) -> SRMResult:
    """Chi-square test of observed unit counts per variant against the configured weights.

    Parameters
    ----------
    observed : sequence of int
        Units seen per variant.
    weights : sequence of float
        Configured traffic weights per variant (normalised here).
    threshold : float
        Flag when the p-value is below this (default 0.001).

    Examples
    --------
    >>> r = srm_check([1000, 1100], [0.5, 0.5])
    >>> round(r.chi2, 3), round(r.p_value, 4)
    (4.762, 0.0291)
    """
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float)
    _validate(obs, w)
    total = obs.sum()
    expected = total * w / w.sum()
    if total == 0:
        return SRMResult(tuple(int(x) for x in obs), tuple(expected.tolist()), 0.0, 1.0, threshold)
    if np.any((expected == 0) & (obs > 0)):
        chi2, p = float("inf"), 0.0  # units arrived in a variant that should get none
    else:
        from scipy import stats

        live = expected > 0
        chi2 = float((((obs - expected) ** 2)[live] / expected[live]).sum())
        p = float(stats.chi2.sf(chi2, max(int(live.sum()) - 1, 1)))
    return SRMResult(tuple(int(x) for x in obs), tuple(expected.tolist()), chi2, p, threshold)


def _validate(obs: np.ndarray, w: np.ndarray) -> None:
    if obs.shape != w.shape or obs.ndim != 1 or obs.size < 2:
        raise ValidationError(
            f"srm_check needs one count and one weight per variant (at least 2), got {obs.size} counts "
            f"and {w.size} weights."
        )
    if not (np.isfinite(obs).all() and np.isfinite(w).all()):  # NaN slips past every comparison below
        raise ValidationError(f"counts and weights must be finite numbers, got counts={obs.tolist()}, "
                              f"weights={w.tolist()}.")
    if (obs < 0).any() or (w < 0).any() or w.sum() <= 0:
        raise ValidationError(f"counts and weights must be >= 0 with positive total weight, got weights={w.tolist()}.")


__all__ = ["SRM_THRESHOLD", "SRMResult", "srm_check"]
