"""The always-valid test keeps its error rate under continuous peeking; the naive test does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats import (
    SequentialTest,
    Summary,
    always_valid_p,
    effective_n,
    halfwidth,
    sequential_test,
    tuned_rho,
)


def _peeking_rates(effect: float, experiments: int = 300, units: int = 4000, every: int = 100, seed: int = 0):
    """Share of experiments declared significant at any look: sequential vs naive z-test."""
    rng = np.random.default_rng(seed)
    looks = np.arange(every, units + 1, every)
    per_arm = looks // 2
    y_c = np.cumsum(rng.random((experiments, units // 2)) < 0.1, axis=1)[:, per_arm - 1]
    y_t = np.cumsum(rng.random((experiments, units // 2)) < 0.1 * (1 + effect), axis=1)[:, per_arm - 1]
    p_c, p_t = y_c / per_arm, y_t / per_arm
    var = lambda p: p * (1 - p) * per_arm / (per_arm - 1)  # noqa: E731
    se = np.sqrt(var(p_c) / per_arm + var(p_t) / per_arm)
    seq = always_valid_p(p_t - p_c, se, looks, tuned_rho(0.05, units))
    with np.errstate(divide="ignore", invalid="ignore"):
        naive = 2 * stats.norm.sf(np.abs(np.nan_to_num((p_t - p_c) / se)))
    return (seq.min(axis=1) <= 0.05).mean(), (naive.min(axis=1) < 0.05).mean()


def test_a_a_peeking_keeps_false_positives_below_alpha_and_naive_does_not():
    sequential, naive = _peeking_rates(0.0)
    assert sequential <= 0.05
    assert naive > 0.15


def test_sequential_test_detects_a_real_effect():
    sequential, _ = _peeking_rates(0.5, experiments=200)
    assert sequential > 0.8


def test_halfwidth_matches_the_published_formula():
    # Waudby-Smith et al. (2021), as in GrowthBook gbstats:
    # sigma * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) log(sqrt(n rho^2 + 1) / alpha))
    alpha, n, planned = 0.05, 5000, 20_000
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / planned)
    sigma = 0.3 * math.sqrt(n)  # se = 0.3 / sqrt(n) * sqrt(n) ... n * se^2 = sigma^2
    se = sigma / math.sqrt(n)
    expected = sigma * math.sqrt(2 * (n * rho**2 + 1) / (n**2 * rho**2) * math.log(math.sqrt(n * rho**2 + 1) / alpha))
    assert tuned_rho(alpha, planned) == pytest.approx(rho)
    assert halfwidth(se, n, alpha, rho) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    estimate=st.floats(-1, 1),
    se=st.floats(1e-3, 1),
    n=st.integers(10, 10**6),
    planned=st.integers(100, 10**6),
)
def test_p_at_most_alpha_exactly_when_the_interval_excludes_zero(estimate, se, n, planned):
    rho = tuned_rho(0.05, planned)
    excludes = abs(estimate) > halfwidth(se, n, 0.05, rho)
    p = always_valid_p(estimate, se, n, rho)
    if not math.isclose(abs(estimate), halfwidth(se, n, 0.05, rho), rel_tol=1e-9):
        assert (p <= 0.05) is excludes


def test_confidence_sequence_is_wider_than_the_fixed_interval():
    c, t = Summary.from_proportion(500, 5000), Summary.from_proportion(560, 5000)
    from loopstack.rollout.stats import welch_ttest

    fixed, seq = welch_ttest(c, t), sequential_test(c, t, planned_n=10_000)
    assert seq.diff_ci[0] < fixed.diff_ci[0] and seq.diff_ci[1] > fixed.diff_ci[1]
    assert seq.p_value > fixed.p_value
    assert seq.extra["always_valid"]


def _null_stop_rate(reps: int, looks: int, per_look: tuple[int, int], rate: float, seed: int = 0) -> float:
    """Share of A/A experiments that a `SequentialTest` looked at after every batch ever stops."""
    rng = np.random.default_rng(seed)
    stops = 0
    for _ in range(reps):
        hits = [rng.binomial(size, rate, looks).cumsum() for size in per_look]
        test = SequentialTest(alpha=0.05, planned_n=20_000)
        for k in range(looks):
            n_c, n_t = (size * (k + 1) for size in per_look)
            test.update(Summary.from_proportion(int(hits[0][k]), n_c), Summary.from_proportion(int(hits[1][k]), n_t))
            if test.stopped:
                stops += 1
                break
    return stops / reps


@pytest.mark.parametrize("per_look", [(5, 495), (495, 5)])
def test_unequal_arms_keep_false_positives_below_alpha_under_the_null(per_look):
    # a canary at 1 %: 5 units a look against 495, 10 % conversion in both. The small arm often had
    # 0 conversions, variance 0, and the test stopped in 11.5 % of these A/A runs instead of <= 5 %.
    reps = 400
    margin = 3 * math.sqrt(0.05 * 0.95 / reps)  # three binomial standard errors of the estimated rate
    assert _null_stop_rate(reps, looks=40, per_look=per_look, rate=0.1) <= 0.05 + margin


@settings(max_examples=150, deadline=None)
@given(
    n_c=st.integers(2, 3000),
    n_t=st.integers(2, 3000),
    share_c=st.floats(0, 1),
    share_t=st.floats(0, 1),
    planned=st.sampled_from([100, 20_000, 10**6]),
)
def test_always_valid_p_is_never_below_the_fixed_horizon_z_test(n_c, n_t, share_c, share_t, planned):
    # 0/20 against 198/1980 gave an always-valid p of 0.036 where a pooled z-test, which may be looked at
    # once only, gives 0.136: the sequential test must never claim more than the fixed-horizon one.
    from statsmodels.stats.proportion import proportions_ztest

    x_c, x_t = round(share_c * n_c), round(share_t * n_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        fixed = proportions_ztest([x_t, x_c], [n_t, n_c])[1]
    seq = sequential_test(Summary.from_proportion(x_c, n_c), Summary.from_proportion(x_t, n_t), planned_n=planned)
    if math.isnan(fixed):  # both arms all 0 or all 1: no difference to test
        assert seq.p_value == 1.0
    else:
        assert seq.p_value >= fixed - 1e-12


def test_constant_arms_with_different_values_are_not_certainty_on_a_handful_of_units():
    # 3/3 against 0/3 had standard error 0 and p = 0: "proof" from six units
    r = sequential_test(Summary.from_proportion(3, 3), Summary.from_proportion(0, 3))
    assert r.p_value > 0.5
    assert not r.significant


def test_running_test_keeps_minimum_p_and_intersected_interval():
    test = SequentialTest(alpha=0.05, planned_n=20_000)
    rng = np.random.default_rng(4)
    c_hits = t_hits = n = 0
    previous_p, previous_ci = 1.0, (-math.inf, math.inf)
    for _ in range(20):
        n += 500
        c_hits += rng.binomial(500, 0.1)
        t_hits += rng.binomial(500, 0.1)
        r = test.update(Summary.from_proportion(c_hits, n), Summary.from_proportion(t_hits, n))
        assert r.p_value <= previous_p
        assert previous_ci[0] <= r.diff_ci[0] and r.diff_ci[1] <= previous_ci[1]
        previous_p, previous_ci = r.p_value, r.diff_ci
    assert test.looks == 20


def test_effective_n_is_the_balanced_equivalent():
    assert effective_n(500, 500) == 1000
    assert effective_n(100, 900) == pytest.approx(360)
    assert effective_n(0, 10) == 0


def test_too_little_data_gives_an_uninformative_result():
    r = sequential_test(Summary.from_values([1.0]), Summary.from_values([1.0, 2.0]))
    assert r.p_value == 1.0
    assert r.diff_ci == (-math.inf, math.inf)


def test_planned_n_must_be_positive():
    with pytest.raises(ValidationError, match="planned_n"):
        SequentialTest(planned_n=0)


def test_without_the_pooled_floor_each_arm_keeps_its_own_variance_as_gbstats_does():
    """The gbstats-compatible mode: the interval's half-width comes from the arms' own variances."""
    c, t = Summary(2_000, 0.10, 0.09), Summary(3_000, 0.13, 0.1131)
    own = sequential_test(c, t, planned_n=20_000, pooled_floor=False)
    se = math.sqrt(c.var / c.n + t.var / t.n)
    half = halfwidth(se, effective_n(c.n, t.n), 0.05, tuned_rho(0.05, 20_000))
    assert own.diff_ci == pytest.approx((0.03 - half, 0.03 + half), rel=1e-12)
    floored = sequential_test(c, t, planned_n=20_000)
    assert floored.diff_ci[0] < own.diff_ci[0] and floored.p_value > own.p_value  # the smaller variance was raised
    same = Summary(2_000, 0.10, 0.09), Summary(2_000, 0.10, 0.09)  # equal arms: the floor changes nothing
    assert sequential_test(*same, pooled_floor=False).diff_ci == sequential_test(*same).diff_ci
    test = SequentialTest(planned_n=20_000, pooled_floor=False)
    assert test.update(c, t).diff_ci == own.diff_ci
