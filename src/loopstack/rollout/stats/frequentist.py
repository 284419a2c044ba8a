"""Fixed-horizon tests: two-proportion z-test and Welch's t-test.

Both report the absolute lift (treatment minus control) with its confidence
interval and the relative lift (treatment / control - 1) with a delta-method
interval, because "+0.4 points" and "+5 %" answer different questions and a
report needs both. These tests are valid when looked at once, at a sample size
fixed in advance (see `loopstack.rollout.stats.power`); to watch an experiment
continuously use `loopstack.rollout.stats.sequential` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.summary import Summary, finite_or_none

Alternative = Literal["two-sided", "larger", "smaller"]
_ALTERNATIVES = ("two-sided", "larger", "smaller")


@dataclass(frozen=True)
class Comparison:
    """The result of comparing a treatment with a control on one metric.

    ``diff`` is treatment minus control, ``lift`` is treatment / control - 1;
    both come with two-sided ``1 - alpha`` intervals. ``p_value`` follows the
    test's ``alternative``.

    Examples
    --------
    >>> r = ztest_proportions(100, 1000, 130, 1000)
    >>> round(r.diff, 3), round(r.lift, 2), r.significant
    (0.03, 0.3, True)
    """

    method: str
    control: Summary
    treatment: Summary
    diff: float
    diff_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    statistic: float
    p_value: float
    alpha: float
    alternative: str = "two-sided"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        """Whether the null hypothesis of no difference is rejected at ``alpha``."""
        return bool(self.p_value < self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON record (for events and reports); NaN and +-inf (a lift over a control mean of 0, Welch's
        statistic on two constant arms, an interval before there is data) are None."""
        return {
            "method": self.method,
            "control": self.control.to_dict(),
            "treatment": self.treatment.to_dict(),
            "diff": finite_or_none(self.diff),
            "diff_ci": [finite_or_none(x) for x in self.diff_ci],
            "lift": finite_or_none(self.lift),
            "lift_ci": [finite_or_none(x) for x in self.lift_ci],
            "statistic": finite_or_none(self.statistic),
            "p_value": finite_or_none(self.p_value),
            "alpha": self.alpha,
            "alternative": self.alternative,
            **{k: finite_or_none(v) if isinstance(v, float) else v for k, v in self.extra.items()},
        }


def ztest_proportions(
    successes_control: int,
    n_control: int,
    successes_treatment: int,
    n_treatment: int,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> Comparison:
    """Two-proportion z-test with pooled variance, Wald interval on the difference.

    The statistic uses the pooled rate (the variance under the null, as
    statsmodels' ``proportions_ztest`` does); the interval uses each arm's own
    rate, since it describes the difference rather than testing zero.

    Examples
    --------
    >>> r = ztest_proportions(200, 2000, 250, 2000)
    >>> round(r.p_value, 4)
    0.0124
    """
    _check_alpha(alpha, alternative)
    c = Summary.from_proportion(successes_control, n_control)
    t = Summary.from_proportion(successes_treatment, n_treatment)
    _check_sizes(c, t, minimum=1)
    pooled = (successes_control + successes_treatment) / (n_control + n_treatment)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    var_c = c.mean * (1 - c.mean) / n_control
    var_t = t.mean * (1 - t.mean) / n_treatment
    diff = t.mean - c.mean
    z = diff / se_null if se_null > 0 else 0.0
    return _comparison("z-test", c, t, z, _normal_p(z, alternative), var_c, var_t, alpha, alternative, None)


def welch_ttest(
    control: Summary | Any,
    treatment: Summary | Any,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> Comparison:
    """Welch's unequal-variance t-test on two means.

    Accepts `Summary` objects or arrays of per-unit values.

    Examples
    --------
    >>> r = welch_ttest(Summary(500, 10.0, 4.0), Summary(500, 10.5, 9.0))
    >>> round(r.diff, 2), round(r.p_value, 5), round(r.extra["df"], 1)
    (0.5, 0.00199, 869.4)
    """
    _check_alpha(alpha, alternative)
    c, t = as_summary(control), as_summary(treatment)
    _check_sizes(c, t, minimum=2)
    var_c, var_t = c.var / c.n, t.var / t.n
    se = math.sqrt(var_c + var_t)
    diff = t.mean - c.mean
    stat = diff / se if se > 0 else _exact_statistic(diff)
    df = _welch_df(var_c, var_t, c.n, t.n)
    from scipy import stats

    p = _p_from_cdf(stat, alternative, lambda x: float(stats.t.sf(x, df)))
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return _comparison("welch", c, t, stat, p, var_c, var_t, alpha, alternative, crit, df=df)


def as_summary(values: Summary | Any) -> Summary:
    """Return ``values`` if it is a `Summary`, else summarise it as an array."""
    return values if isinstance(values, Summary) else Summary.from_values(values)


def relative_lift(control: Summary, treatment: Summary) -> tuple[float, float]:
    """Relative lift ``treatment.mean / control.mean - 1`` and its delta-method standard error.

    The ratio of two independent means has variance approximately
    ``var_t / m_c**2 + m_t**2 * var_c / m_c**4`` (first-order Taylor expansion),
    where ``var_*`` are the variances of the means. NaN when the control mean is 0.

    Examples
    --------
    >>> lift, se = relative_lift(Summary(1000, 0.10, 0.09), Summary(1000, 0.12, 0.1056))
    >>> round(lift, 3), round(se, 3)
    (0.2, 0.153)
    """
    return _delta_lift(control.mean, treatment.mean, control.var / control.n, treatment.var / treatment.n)


def _delta_lift(m_c: float, m_t: float, var_c: float, var_t: float) -> tuple[float, float]:
    if m_c == 0:
        return float("nan"), float("nan")
    ratio = m_t / m_c
    # sqrt(var_t + ratio**2 * var_c) / |m_c| is the same variance, arranged not to underflow.
    se = math.sqrt(var_t + ratio * ratio * var_c) / abs(m_c)
    return float(ratio - 1), float(se)


def _comparison(
    method: str,
    c: Summary,
    t: Summary,
    stat: float,
    p: float,
    var_c: float,
    var_t: float,
    alpha: float,
    alternative: str,
    crit: float | None,
    **extra: Any,
) -> Comparison:
    from scipy import stats

    z = float(stats.norm.ppf(1 - alpha / 2))
    crit = z if crit is None else crit
    diff = t.mean - c.mean
    half = crit * math.sqrt(var_c + var_t)
    lift, lift_se = _delta_lift(c.mean, t.mean, var_c, var_t)
    return Comparison(
        method=method,
        control=c,
        treatment=t,
        diff=float(diff),
        diff_ci=(float(diff - half), float(diff + half)),
        lift=lift,
        lift_ci=(lift - z * lift_se, lift + z * lift_se),
        statistic=float(stat),
        p_value=float(p),
        alpha=alpha,
        alternative=alternative,
        extra=extra,
    )


def _exact_statistic(diff: float) -> float:
    """The statistic when both arms are constant: the difference is known exactly (scipy's +-inf), or is 0."""
    return math.copysign(math.inf, diff) if diff else 0.0


def _welch_df(var_c: float, var_t: float, n_c: int, n_t: int) -> float:
    denominator = var_c**2 / (n_c - 1) + var_t**2 / (n_t - 1)
    return float((var_c + var_t) ** 2 / denominator) if denominator > 0 else float(n_c + n_t - 2)


def _normal_p(z: float, alternative: str) -> float:
    from scipy import stats

    return _p_from_cdf(z, alternative, lambda x: float(stats.norm.sf(x)))


def _p_from_cdf(stat: float, alternative: str, sf: Any) -> float:
    if alternative == "larger":
        return sf(stat)
    if alternative == "smaller":
        return sf(-stat)
    return min(1.0, 2 * sf(abs(stat)))


def _check_alpha(alpha: float, alternative: str) -> None:
    if not 0 < alpha < 1:
        raise ValidationError(f"alpha must be in (0, 1), got {alpha}; 0.05 is the usual choice.")
    if alternative not in _ALTERNATIVES:
        raise ValidationError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}.")


def _check_sizes(c: Summary, t: Summary, minimum: int) -> None:
    if c.n < minimum or t.n < minimum:
        raise ValidationError(
            f"each variant needs at least {minimum} units, got control n={c.n}, treatment n={t.n}; "
            "wait for more data before testing."
        )


__all__ = ["Alternative", "Comparison", "as_summary", "relative_lift", "welch_ttest", "ztest_proportions"]
