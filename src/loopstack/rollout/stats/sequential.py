"""Always-valid sequential tests: watch an experiment or a canary continuously.

A fixed-horizon p-value is valid once, at a sample size chosen in advance.
Checking it after every batch and stopping at the first p < 0.05 pushes the
false positive rate far above 5 % (``bench/rollout.py`` measures it). A
confidence *sequence* instead covers the true effect at every sample size
simultaneously with probability ``1 - alpha``, so it may be looked at as often
as one likes and the experiment stopped whenever it excludes zero.

We use the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic
confidence sequences" (arXiv:2103.06476, 2021; Annals of Statistics 2024),
which is Robbins' normal-mixture boundary (see also Howard, Ramdas, McAuliffe
and Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Annals of Statistics 2021, eq. 14) applied to the CLT-scaled estimate. It is
the method GrowthBook ships for its frequentist sequential engine
(``gbstats``), so results line up with it. With ``n`` units and an estimate
of standard error ``se`` the half-width is::

    sigma * sqrt(2 * (n * rho**2 + 1) / (n**2 * rho**2) * log(sqrt(n * rho**2 + 1) / alpha))

where ``sigma**2 = n * se**2``. The mixture parameter ``rho`` sets the sample
size where the sequence is tightest; tuned to the planned sample size
``planned_n`` it is ``rho**2 = (-2 log(alpha) + log(1 - 2 log(alpha))) / planned_n``
(Waudby-Smith et al., section on choosing rho). Any ``planned_n`` keeps the
guarantee; a good one only narrows the intervals. The always-valid p-value is
the inverse of the mixture martingale, ``p = min(1, 1 / M_n)``, kept as a
running minimum across looks, and ``p <= alpha`` exactly when the sequence
excludes zero.

One deviation from GrowthBook: ``n`` is the *balanced-equivalent* sample
size ``4 / (1 / n_control + 1 / n_treatment)``, which equals
``n_control + n_treatment`` for a 50/50 split. With it ``n * se**2`` stays the
per-unit variance whatever the split, so the mixture (and the guarantee)
holds when the split changes during the test, as in a canary whose weight
steps from 1 % to 50 %.

A second deviation: each arm's variance is floored at the variance of both
arms pooled (the variance under "no difference"). A small arm with 0 of 20
conversions has sample variance 0, and without the floor a 1 % canary
stopped about 12 % of A/A runs at ``alpha = 0.05``; with it the always-valid
p-value is never below a fixed-horizon pooled z-test's on the same data.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.frequentist import Comparison, _check_alpha, _delta_lift, as_summary
from loopstack.rollout.stats.summary import Summary


def tuned_rho(alpha: float, planned_n: float) -> float:
    """The mixture parameter that makes the sequence narrowest at ``planned_n`` units.

    Examples
    --------
    >>> round(tuned_rho(0.05, 10_000), 5)
    0.02817
    """
    _check_alpha(alpha, "two-sided")
    if planned_n <= 0:
        raise ValidationError(f"planned_n must be > 0, got {planned_n}; pass the sample size you expect to reach.")
    two_log = -2 * math.log(alpha)
    return math.sqrt((two_log + math.log(two_log + 1)) / planned_n)


def halfwidth(se: Any, n: Any, alpha: float, rho: float) -> Any:
    """Half-width of the ``1 - alpha`` confidence sequence for an estimate with standard error ``se`` at ``n`` units.

    Works element-wise on NumPy arrays, so simulations can evaluate many looks at once.

    Examples
    --------
    >>> fixed = 1.96 * 0.01
    >>> round(halfwidth(0.01, 10_000, 0.05, tuned_rho(0.05, 10_000)) / fixed, 2)
    1.55
    """
    se, n = np.asarray(se, dtype=float), np.asarray(n, dtype=float)
    a = n * rho**2 + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        width = se * np.sqrt(2 * a / (n * rho**2) * np.log(np.sqrt(a) / alpha))
    return _scalar(np.where(n > 0, width, np.inf))


def always_valid_p(estimate: Any, se: Any, n: Any, rho: float) -> Any:
    """``1 / M_n`` for the normal-mixture martingale of the estimate (capped at 1); element-wise on arrays.

    Examples
    --------
    >>> always_valid_p(0.0, 0.01, 1000, 0.05)
    1.0
    >>> round(always_valid_p(0.05, 0.01, 10_000, tuned_rho(0.05, 10_000)), 6)
    4.5e-05
    """
    estimate, se, n = (np.asarray(v, dtype=float) for v in (estimate, se, n))
    a = n * rho**2 + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m = -0.5 * np.log(a) + (n * rho**2) * estimate**2 / (2 * se**2 * a)
        p = np.minimum(1.0, np.exp(-log_m))
    degenerate = np.where(estimate == 0, 1.0, 0.0)  # zero standard error: the data are exact
    p = np.where(se > 0, p, degenerate)
    return _scalar(np.where(n > 0, p, 1.0))


def _scalar(x: np.ndarray) -> Any:
    return float(x) if x.ndim == 0 else x


def sequential_test(
    control: Summary | Any,
    treatment: Summary | Any,
    *,
    alpha: float = 0.05,
    planned_n: float = 10_000,
    pooled_floor: bool = True,
) -> Comparison:
    """One look at an always-valid comparison of two means (or rates).

    Valid at any sample size, including one chosen by watching the data. For
    many looks use `SequentialTest`, which also keeps the running minimum
    p-value and the running intersection of intervals. `pooled_floor` floors
    each arm's variance at the pooled one (see the module docstring); without
    it each arm's own variance is used, as gbstats' ``SequentialTwoSidedTTest``
    does, which is too eager when a small arm is all 0 or all 1.

    Examples
    --------
    >>> c, t = Summary.from_proportion(1000, 10_000), Summary.from_proportion(1150, 10_000)
    >>> r = sequential_test(c, t, planned_n=20_000)
    >>> r.significant, r.diff_ci[0] > 0
    (True, True)
    """
    _check_alpha(alpha, "two-sided")
    c, t = as_summary(control), as_summary(treatment)
    rho = tuned_rho(alpha, planned_n)
    n = effective_n(c.n, t.n)
    if c.n < 2 or t.n < 2:
        inf = (-math.inf, math.inf)
        return Comparison(
            "sequential", c, t, math.nan, inf, math.nan, inf, math.nan, 1.0, alpha, extra=_extra(n, rho, planned_n)
        )
    variances = _floored_variances(c, t) if pooled_floor else (c.var, t.var)
    var_c, var_t = (var / arm.n for var, arm in zip(variances, (c, t), strict=True))
    se = math.sqrt(var_c + var_t)
    diff = t.mean - c.mean
    half = halfwidth(se, n, alpha, rho)
    lift, lift_se = _delta_lift(c.mean, t.mean, var_c, var_t)
    lift_half = halfwidth(lift_se, n, alpha, rho)
    return Comparison(
        method="sequential",
        control=c,
        treatment=t,
        diff=float(diff),
        diff_ci=(diff - half, diff + half),
        lift=lift,
        lift_ci=(lift - lift_half, lift + lift_half),
        statistic=float(diff / se) if se > 0 else 0.0,
        p_value=always_valid_p(diff, se, n, rho),
        alpha=alpha,
        extra=_extra(n, rho, planned_n),
    )


def _floored_variances(control: Summary, treatment: Summary) -> tuple[float, float]:
    """Each arm's per-unit variance, floored at the variance of both arms pooled.

    A small arm's sample variance is noisy and, for 0/1 data, tied to its own mean: 0 conversions
    out of 20 have variance 0, so the standard error was the big arm's alone and the test rejected
    far more eagerly than a fixed-horizon z-test (and gave p = 0 when both arms were constant). The
    pooled variance is the variance under "no difference", the one a pooled z-test uses, so with the
    floor the always-valid p-value is never below the fixed-horizon one; it costs little power, as
    the floor only binds on the arm whose own variance is smaller.
    """
    pooled = control.merge(treatment).var
    return max(control.var, pooled), max(treatment.var, pooled)


def effective_n(n_control: float, n_treatment: float) -> float:
    """Balanced-equivalent sample size: ``n_control + n_treatment`` for equal arms, less for unequal ones.

    Examples
    --------
    >>> effective_n(500, 500), effective_n(100, 900)
    (1000.0, 360.0)
    """
    if n_control <= 0 or n_treatment <= 0:
        return 0.0
    return 4.0 / (1.0 / n_control + 1.0 / n_treatment)


class SequentialTest:
    """A running always-valid test: feed cumulative summaries after every batch.

    The p-value is the running minimum over looks and the intervals are the
    running intersection, both of which keep the ``1 - alpha`` guarantee over
    the whole sequence. ``stopped`` turns true at the first look where the
    sequence excludes zero.

    Parameters
    ----------
    alpha : float
        Error probability over all looks together.
    planned_n : float
        Total units (both arms) where the intervals should be tightest.
    pooled_floor : bool
        Floor each arm's variance at the pooled one (the default; see `sequential_test`).

    Examples
    --------
    >>> test = SequentialTest(alpha=0.05, planned_n=20_000)
    >>> r = test.update(Summary.from_proportion(50, 500), Summary.from_proportion(60, 500))
    >>> test.stopped, test.looks
    (False, 1)
    >>> r = test.update(Summary.from_proportion(1000, 10_000), Summary.from_proportion(1200, 10_000))
    >>> test.stopped, r.diff_ci[0] > 0
    (True, True)
    """

    def __init__(self, *, alpha: float = 0.05, planned_n: float = 10_000, pooled_floor: bool = True) -> None:
        self.alpha = alpha
        self.planned_n = planned_n
        self.pooled_floor = pooled_floor
        self.looks = 0
        self.last: Comparison | None = None
        tuned_rho(alpha, planned_n)  # validate early

    @property
    def stopped(self) -> bool:
        """Whether some look so far rejected "no difference"."""
        return self.last is not None and self.last.significant

    def update(self, control: Summary | Any, treatment: Summary | Any) -> Comparison:
        """Take one look at the cumulative data and return the running result."""
        current = sequential_test(control, treatment, alpha=self.alpha, planned_n=self.planned_n,
                                  pooled_floor=self.pooled_floor)
        self.looks += 1
        if self.last is not None:
            current = replace(
                current,
                p_value=min(current.p_value, self.last.p_value),
                diff_ci=_intersect(current.diff_ci, self.last.diff_ci),
                lift_ci=_intersect(current.lift_ci, self.last.lift_ci),
            )
        self.last = current
        return current


def _intersect(new: tuple[float, float], old: tuple[float, float]) -> tuple[float, float]:
    if any(math.isnan(x) for x in (*new, *old)):
        return new
    low, high = max(new[0], old[0]), min(new[1], old[1])
    return (low, high) if low <= high else new


def _extra(n: int, rho: float, planned_n: float) -> dict[str, Any]:
    return {"n": n, "rho": rho, "planned_n": planned_n, "always_valid": True}


__all__ = ["SequentialTest", "always_valid_p", "effective_n", "halfwidth", "sequential_test", "tuned_rho"]
