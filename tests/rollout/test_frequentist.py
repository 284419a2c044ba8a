"""Fixed-horizon tests agree with statsmodels and scipy; intervals cover at their nominal rate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats import Summary, relative_lift, welch_ttest, ztest_proportions


@settings(max_examples=50, deadline=None)
@given(
    n_c=st.integers(20, 5000),
    n_t=st.integers(20, 5000),
    p_c=st.floats(0.05, 0.95),
    p_t=st.floats(0.05, 0.95),
    alternative=st.sampled_from(["two-sided", "larger", "smaller"]),
)
def test_ztest_matches_statsmodels(n_c, n_t, p_c, p_t, alternative):
    x_c, x_t = round(p_c * n_c), round(p_t * n_t)
    ours = ztest_proportions(x_c, n_c, x_t, n_t, alternative=alternative)
    z, p = proportions_ztest([x_t, x_c], [n_t, n_c], alternative=alternative)
    assert ours.statistic == pytest.approx(z, rel=1e-9, abs=1e-12)
    assert ours.p_value == pytest.approx(p, rel=1e-7, abs=1e-12)
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff")
    assert ours.diff_ci == pytest.approx((low, high), rel=1e-9, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    n_c=st.integers(2, 3000),
    n_t=st.integers(2, 3000),
    m_c=st.floats(-100, 100),
    m_t=st.floats(-100, 100),
    sd_c=st.floats(0.1, 50),
    sd_t=st.floats(0.1, 50),
)
def test_welch_matches_scipy(n_c, n_t, m_c, m_t, sd_c, sd_t):
    ours = welch_ttest(Summary(n_c, m_c, sd_c**2), Summary(n_t, m_t, sd_t**2))
    ref = stats.ttest_ind_from_stats(m_t, sd_t, n_t, m_c, sd_c, n_c, equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-9, abs=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)


def test_welch_on_arrays_matches_scipy_confidence_interval():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 2, 200)
    ours = welch_ttest(a, b)
    ref = stats.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert ours.diff_ci == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_relative_lift_interval_covers_at_nominal_rate():
    # Delta-method interval for the ratio: simulate 1,000 experiments with a true +10 % lift.
    rng = np.random.default_rng(7)
    n, p_c, p_t = 4000, 0.2, 0.22
    x_c, x_t = rng.binomial(n, p_c, 1000), rng.binomial(n, p_t, 1000)
    covered = 0
    for a, b in zip(x_c, x_t, strict=True):
        low, high = ztest_proportions(int(a), n, int(b), n).lift_ci
        covered += low <= p_t / p_c - 1 <= high
    assert 0.925 <= covered / 1000 <= 0.975


def test_relative_lift_delta_method_against_simulation():
    c, t = Summary(5000, 10.0, 25.0), Summary(5000, 11.0, 36.0)
    lift, se = relative_lift(c, t)
    rng = np.random.default_rng(0)
    draws = rng.normal(11, np.sqrt(36 / 5000), 200_000) / rng.normal(10, np.sqrt(25 / 5000), 200_000) - 1
    assert lift == pytest.approx(0.1)
    assert se == pytest.approx(draws.std(), rel=0.02)


def test_zero_control_mean_gives_nan_lift_not_an_error():
    r = ztest_proportions(0, 100, 5, 100)
    assert np.isnan(r.lift)
    assert r.diff == pytest.approx(0.05)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=30), st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=30))
def test_summary_merge_equals_summary_of_concatenation(a, b):
    merged = Summary.from_values(a).merge(Summary.from_values(b))
    direct = Summary.from_values(a + b)
    assert merged.n == direct.n
    assert merged.mean == pytest.approx(direct.mean, rel=1e-9, abs=1e-6)
    assert merged.var == pytest.approx(direct.var, rel=1e-6, abs=1e-6)


def test_summary_from_sums_matches_values():
    x = np.array([1.0, 4.0, 4.0, 7.0])
    s = Summary.from_sums(4, x.sum(), (x**2).sum())
    assert (s.mean, s.var) == pytest.approx((x.mean(), x.var(ddof=1)))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ztest_proportions(5, 0, 1, 10), "successes"),
        (lambda: ztest_proportions(1, 10, 1, 10, alpha=1.5), "alpha"),
        (lambda: ztest_proportions(1, 10, 1, 10, alternative="up"), "alternative"),
        (lambda: welch_ttest([1.0], [1.0, 2.0]), "at least 2"),
        (lambda: Summary(-1, 0.0, 0.0), "n must be"),
        (lambda: Summary.from_values([1.0, float("nan")]), "NaN"),
    ],
)
def test_bad_input_names_the_value(call, match):
    with pytest.raises(ValidationError, match=match):
        call()


def test_welch_on_constant_arms_that_differ_rejects_no_difference():
    # every unit of each arm has the same value: the difference is known exactly, as scipy says (t=inf, p=0);
    # p=1 contradicted the interval [1, 1] that excludes 0 and hid a guardrail that always fails
    r = welch_ttest([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert r.p_value == 0.0 and r.statistic == float("inf")
    assert r.significant and r.diff_ci == (1.0, 1.0)
    assert welch_ttest([2.0, 2.0], [1.0, 1.0, 1.0], alternative="larger").p_value == 1.0
    assert welch_ttest([5.0, 5.0], [5.0, 5.0]).p_value == 1.0  # identical constants: no evidence of a difference


def test_records_for_event_payloads_are_strict_json_when_a_number_is_undefined():
    # PostgreSQL's JSON type refuses NaN and Infinity: Welch's statistic on constant arms is inf, a lift over 0 NaN
    import json

    from loopstack.rollout.stats import subgroup_breakdown

    r = welch_ttest([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert r.statistic == float("inf") and np.isnan(r.lift)
    record = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert (record["statistic"], record["lift"], record["lift_ci"]) == (None, None, [None, None])
    assert record["diff"] == 1.0 and record["p_value"] == 0.0 and record["df"] == 4.0
    untested = subgroup_breakdown(["a", "a", "b"], ["c", "t", "c"], [1.0, 2.0, 3.0], control="c", treatment="t")
    assert [json.loads(json.dumps(s.to_dict(), allow_nan=False))["p_adjusted"] for s in untested] == [None, None]
