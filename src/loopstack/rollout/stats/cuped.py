"""CUPED: variance reduction with a pre-period covariate (Deng et al., WSDM 2013).

A unit's metric before the experiment (last month's spend, past conversion)
predicts much of its metric during it, and that part is noise for the
comparison. CUPED subtracts it: ``y' = y - theta * (x - mean(x))`` with
``theta = cov(x, y) / var(x)`` estimated on both arms pooled. Because ``x`` is
measured before assignment it is independent of the variant, so the
difference of means stays unbiased while its variance shrinks by a factor
``1 - corr(x, y)**2``: a correlation of 0.7 halves the sample size needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.frequentist import Alternative, Comparison, welch_ttest
from loopstack.rollout.stats.summary import Summary


def cuped_theta(y: Any, x: Any) -> float:
    """The regression coefficient ``cov(x, y) / var(x)`` (0 when ``x`` is constant).

    Examples
    --------
    >>> cuped_theta([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    0.5
    """
    y_arr, x_arr = _pair(y, x)
    var_x = x_arr.var(ddof=1)
    if var_x == 0:
        return 0.0
    return float(np.cov(x_arr, y_arr, ddof=1)[0, 1] / var_x)


def cuped_adjust(y: Any, x: Any, theta: float | None = None, x_mean: float | None = None) -> np.ndarray:
    """Return ``y - theta * (x - x_mean)``; estimate ``theta`` and ``x_mean`` from the data when omitted.

    Examples
    --------
    >>> cuped_adjust([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).tolist()
    [2.0, 2.0, 2.0]
    """
    y_arr, x_arr = _pair(y, x)
    theta = cuped_theta(y_arr, x_arr) if theta is None else theta
    x_mean = float(x_arr.mean()) if x_mean is None else x_mean
    return y_arr - theta * (x_arr - x_mean)


def cuped(
    control_y: Any,
    control_x: Any,
    treatment_y: Any,
    treatment_x: Any,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> Comparison:
    """Welch's t-test on CUPED-adjusted metrics, with ``theta`` pooled over both arms.

    The result's ``extra`` holds ``theta`` and ``variance_reduction`` (the share
    of the metric's variance removed by the covariate).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x_c, x_t = rng.normal(10, 2, 2000), rng.normal(10, 2, 2000)
    >>> y_c = x_c + rng.normal(0, 1, 2000)
    >>> y_t = x_t + 0.1 + rng.normal(0, 1, 2000)
    >>> r = cuped(y_c, x_c, y_t, x_t)
    >>> r.extra["variance_reduction"] > 0.7, r.diff_ci[0] < 0.1 < r.diff_ci[1]
    (True, True)
    """
    yc, xc = _pair(control_y, control_x)
    yt, xt = _pair(treatment_y, treatment_x)
    y_all, x_all = np.concatenate([yc, yt]), np.concatenate([xc, xt])
    theta = cuped_theta(y_all, x_all)
    x_mean = float(x_all.mean())
    adj_c, adj_t = cuped_adjust(yc, xc, theta, x_mean), cuped_adjust(yt, xt, theta, x_mean)
    result = welch_ttest(Summary.from_values(adj_c), Summary.from_values(adj_t), alpha=alpha, alternative=alternative)
    raw_var = _pooled_within_var(yc, yt)
    adj_var = _pooled_within_var(adj_c, adj_t)
    reduction = 1 - adj_var / raw_var if raw_var > 0 else 0.0
    extra = {**result.extra, "theta": theta, "variance_reduction": float(reduction)}
    return Comparison(**{**result.__dict__, "method": "cuped-welch", "extra": extra})


def _pooled_within_var(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.var(ddof=1) * (a.size - 1) + b.var(ddof=1) * (b.size - 1)) / (a.size + b.size - 2))


def _pair(y: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=float).ravel()
    x_arr = np.asarray(x, dtype=float).ravel()
    if y_arr.shape != x_arr.shape:
        raise ValidationError(
            f"CUPED needs one covariate value per unit: got {y_arr.size} metric values and {x_arr.size} covariates."
        )
    if y_arr.size < 2:
        raise ValidationError(f"CUPED needs at least 2 units per arm, got {y_arr.size}.")
    if not (np.isfinite(y_arr).all() and np.isfinite(x_arr).all()):
        raise ValidationError("CUPED got values that are not finite (NaN or inf); drop those units, or give a unit "
                              "without a pre-period value x = mean(x).")
    return y_arr, x_arr


__all__ = ["cuped", "cuped_adjust", "cuped_theta"]
