"""Sample size and power for comparing two proportions or two means.

Normal approximation, as in statsmodels' ``power_proportions_2indep`` and
``NormalIndPower``: for proportions the test statistic's variance is the pooled
rate's under the null and each arm's own under the alternative; for means the
variances are given. ``n`` is always the control arm's size and the treatment
gets ``ratio * n``. Sample sizes are solved on the exact power curve (both
tails for a two-sided test), then rounded up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.frequentist import Alternative, _check_alpha


@dataclass(frozen=True)
class SampleSize:
    """Units needed per arm to reach the planned power.

    Examples
    --------
    >>> s = sample_size_proportions(0.10, 0.05)
    >>> s.control, s.treatment, s.total
    (57763, 57763, 115526)
    """

    control: int
    treatment: int

    @property
    def total(self) -> int:
        """Units over both arms."""
        return self.control + self.treatment


def power_proportions(
    baseline: float,
    mde: float,
    n: float,
    *,
    relative: bool = True,
    ratio: float = 1.0,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> float:
    """Power of the two-proportion z-test with ``n`` control units and ``ratio * n`` treatment units.

    Parameters
    ----------
    baseline : float
        The control's rate, in (0, 1).
    mde : float
        The minimum detectable effect: relative (0.05 = +5 %) unless
        ``relative=False``, then in absolute points (0.005 = +0.5 points).
    n : float
        Control units; the treatment has ``ratio * n``.

    Examples
    --------
    >>> round(power_proportions(0.10, 0.05, 57763), 3)
    0.8
    """
    treatment = _treatment_rate(baseline, mde, relative)
    _check_common(n, ratio, alpha, alternative)
    pooled = (baseline + ratio * treatment) / (1 + ratio)
    std_null = math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
    std_alt = math.sqrt(baseline * (1 - baseline) + treatment * (1 - treatment) / ratio)
    return _normal_power(treatment - baseline, n, std_null, std_alt, alpha, alternative)


def sample_size_proportions(
    baseline: float,
    mde: float,
    *,
    relative: bool = True,
    power: float = 0.8,
    ratio: float = 1.0,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> SampleSize:
    """Units per arm for the z-test to detect ``mde`` on a ``baseline`` rate with the given power.

    Examples
    --------
    >>> sample_size_proportions(0.20, 0.01, relative=False).control
    25583
    """
    return _solve(
        lambda n: power_proportions(
            baseline, mde, n, relative=relative, ratio=ratio, alpha=alpha, alternative=alternative
        ),
        power,
        ratio,
    )


def power_means(
    mde: float,
    std: float,
    n: float,
    *,
    std_treatment: float | None = None,
    ratio: float = 1.0,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> float:
    """Power of a z-test on two means differing by ``mde`` (absolute units) with standard deviation ``std``.

    Examples
    --------
    >>> round(power_means(0.5, 2.0, 252), 3)
    0.801
    """
    _check_common(n, ratio, alpha, alternative)
    if std <= 0 or (std_treatment is not None and std_treatment <= 0):
        raise ValidationError(f"std must be > 0, got std={std}, std_treatment={std_treatment}.")
    st = std if std_treatment is None else std_treatment
    sd = math.sqrt(std**2 + st**2 / ratio)
    return _normal_power(mde, n, sd, sd, alpha, alternative)


def sample_size_means(
    mde: float,
    std: float,
    *,
    std_treatment: float | None = None,
    power: float = 0.8,
    ratio: float = 1.0,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> SampleSize:
    """Units per arm to detect a difference of ``mde`` between two means.

    Examples
    --------
    >>> sample_size_means(0.5, 2.0).control
    252
    """
    return _solve(
        lambda n: power_means(
            mde, std, n, std_treatment=std_treatment, ratio=ratio, alpha=alpha, alternative=alternative
        ),
        power,
        ratio,
    )


def _normal_power(effect: float, n: float, std_null: float, std_alt: float, alpha: float, alternative: str) -> float:
    from scipy import stats

    root = math.sqrt(n)
    if alternative == "two-sided":
        crit = stats.norm.ppf(1 - alpha / 2)
        upper = stats.norm.cdf((abs(effect) * root - crit * std_null) / std_alt)
        lower = stats.norm.cdf((-abs(effect) * root - crit * std_null) / std_alt)
        return float(upper + lower)
    crit = stats.norm.ppf(1 - alpha)
    signed = effect if alternative == "larger" else -effect
    return float(stats.norm.cdf((signed * root - crit * std_null) / std_alt))


def _solve(power_at, target: float, ratio: float) -> SampleSize:
    from scipy.optimize import brentq

    if not 0 < target < 1:
        raise ValidationError(f"power must be in (0, 1), got {target}; 0.8 is the usual choice.")
    low, high = 1.0, 1e12
    if power_at(high) < target:
        raise ValidationError(
            "the requested power cannot be reached (is the effect zero or in the wrong direction "
            "for a one-sided test?)."
        )
    if power_at(low) >= target:
        return SampleSize(1, max(1, math.ceil(ratio)))
    n = brentq(lambda x: power_at(x) - target, low, high, xtol=1e-6)
    control = math.ceil(n - 1e-6)
    return SampleSize(control, math.ceil(ratio * control - 1e-9))


def _treatment_rate(baseline: float, mde: float, relative: bool) -> float:
    if not 0 < baseline < 1:
        raise ValidationError(f"baseline rate must be in (0, 1), got {baseline}.")
    treatment = baseline * (1 + mde) if relative else baseline + mde
    if not 0 < treatment < 1:
        raise ValidationError(
            f"baseline={baseline} with mde={mde} (relative={relative}) gives a treatment rate {treatment} "
            "outside (0, 1); use a smaller effect."
        )
    return treatment


def _check_common(n: float, ratio: float, alpha: float, alternative: str) -> None:
    _check_alpha(alpha, alternative)
    if n <= 0:
        raise ValidationError(f"n must be > 0, got {n}.")
    if ratio <= 0:
        raise ValidationError(f"ratio (treatment / control units) must be > 0, got {ratio}.")


__all__ = ["SampleSize", "power_means", "power_proportions", "sample_size_means", "sample_size_proportions"]
