"""CUPED, sample ratio mismatch and multiple-testing corrections against reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats import (
    adjust,
    benjamini_hochberg,
    cuped,
    cuped_adjust,
    cuped_theta,
    holm,
    srm_check,
    welch_ttest,
)

p_values = st.lists(st.floats(0, 1), min_size=1, max_size=25)


@settings(max_examples=10, deadline=None)  # statsmodels' Holm takes ~0.1 s a call
@given(p_values)
def test_holm_matches_statsmodels(p):
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1].tolist(), abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(p_values)
def test_benjamini_hochberg_matches_statsmodels(p):
    assert benjamini_hochberg(p) == pytest.approx(multipletests(p, method="fdr_bh")[1].tolist(), abs=1e-12)


def test_unknown_correction_and_bad_p_values_are_rejected():
    with pytest.raises(ValidationError, match="'bonf'"):
        adjust([0.1], "bonf")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="lie in"):
        holm([0.1, 1.2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=5), st.data())
def test_srm_matches_scipy_chisquare(counts, data):
    weights = data.draw(st.lists(st.floats(0.05, 1), min_size=len(counts), max_size=len(counts)))
    result = srm_check(counts, weights)
    if sum(counts) == 0:
        assert result.p_value == 1.0
        return
    expected = np.array(weights) / sum(weights) * sum(counts)
    ref = stats.chisquare(counts, expected)
    assert result.chi2 == pytest.approx(ref.statistic, rel=1e-9, abs=1e-9)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    assert result.flagged is bool(ref.pvalue < 0.001)


def test_srm_flags_a_small_imbalance_at_scale_but_not_noise():
    assert srm_check([50_800, 49_200], [0.5, 0.5]).flagged
    assert not srm_check([50_100, 49_900], [0.5, 0.5]).flagged
    assert srm_check([900, 100, 5], [0.9, 0.1, 0.0]).flagged  # units in a variant with no traffic


def test_srm_false_alarm_rate_is_near_its_threshold():
    rng = np.random.default_rng(5)
    counts = rng.multinomial(20_000, [0.2, 0.8], size=2000)
    flags = sum(srm_check(c, [0.2, 0.8]).flagged for c in counts)
    assert flags <= 8  # expectation 2 at p < 0.001


def test_srm_rejects_mismatched_input():
    with pytest.raises(ValidationError, match="one count and one weight"):
        srm_check([10, 20, 30], [0.5, 0.5])


def test_cuped_theta_is_the_ols_slope():
    rng = np.random.default_rng(1)
    x = rng.normal(5, 2, 1000)
    y = 3 + 0.7 * x + rng.normal(0, 1, 1000)
    assert cuped_theta(y, x) == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)
    assert cuped_adjust(y, x).mean() == pytest.approx(y.mean())


def test_cuped_keeps_the_effect_and_shrinks_the_interval():
    rng = np.random.default_rng(2)
    n = 4000
    x_c, x_t = rng.normal(100, 20, n), rng.normal(100, 20, n)
    y_c = 0.8 * x_c + rng.normal(0, 10, n)
    y_t = 0.8 * x_t + 1.0 + rng.normal(0, 10, n)
    plain = welch_ttest(y_c, y_t)
    adjusted = cuped(y_c, x_c, y_t, x_t)
    rho2 = np.corrcoef(np.r_[x_c, x_t], np.r_[y_c, y_t])[0, 1] ** 2
    assert adjusted.extra["variance_reduction"] == pytest.approx(rho2, abs=0.02)
    width = lambda r: r.diff_ci[1] - r.diff_ci[0]  # noqa: E731
    assert width(adjusted) < 0.6 * width(plain)
    assert adjusted.diff_ci[0] < 1.0 < adjusted.diff_ci[1]
    assert adjusted.method == "cuped-welch"


def test_cuped_is_unbiased_across_repetitions():
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(200):
        x_c, x_t = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
        diffs.append(cuped(x_c + rng.normal(0, 0.5, 300), x_c, x_t + 0.2 + rng.normal(0, 0.5, 300), x_t).diff)
    assert np.mean(diffs) == pytest.approx(0.2, abs=0.01)


def test_cuped_rejects_misaligned_covariates():
    with pytest.raises(ValidationError, match="one covariate value per unit"):
        cuped([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize(("counts", "weights"), [([float("nan"), 10], [0.5, 0.5]), ([10, 10], [float("nan"), 0.5]),
                                                 ([10, 10], [float("inf"), 0.5]), ([float("inf"), 10], [0.5, 0.5])])
def test_srm_rejects_counts_or_weights_that_are_not_finite(counts, weights):
    # a NaN weight gave p=1 (no mismatch) and a NaN count a raw ValueError
    with pytest.raises(ValidationError, match="finite"):
        srm_check(counts, weights)


def test_cuped_names_infinite_values_as_such():
    with pytest.raises(ValidationError, match="CUPED got values that are not finite"):
        cuped([1.0, 2.0, 3.0], [1.0, float("inf"), 2.0], [1.0, 2.0], [1.0, 2.0])
