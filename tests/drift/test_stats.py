"""Every column statistic cross-checked against SciPy/NumPy on random samples, plus known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from loopstack.drift import stats
from loopstack.drift.data import NumericPair

FAST = settings(max_examples=40, deadline=None)

# Values on a coarse grid so that ties, the hard case for merged CDFs, are common.
samples = st.lists(st.integers(-50, 50).map(lambda v: v / 4), min_size=1, max_size=300)
continuous = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300)


@FAST
@pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")
@given(samples, samples)
def test_ks_matches_scipy(a: list[float], b: list[float]) -> None:
    expected = ss.ks_2samp(a, b)
    assert stats.ks_statistic(a, b) == pytest.approx(expected.statistic, abs=1e-12)
    assert stats.ks(a, b) == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-12)


def test_ks_asymptotic_branch_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=12_000), rng.normal(0.03, 1, size=15_000)
    assert stats.ks(a, b) == pytest.approx(ss.ks_2samp(a, b).pvalue, rel=1e-9)


@FAST
@given(st.one_of(samples, continuous), st.one_of(samples, continuous))
def test_wasserstein_matches_scipy(a: list[float], b: list[float]) -> None:
    expected = ss.wasserstein_distance(a, b)
    assert stats.wasserstein_distance(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    normed = expected / max(np.std(a), 0.001)
    assert stats.wasserstein(a, b) == pytest.approx(normed, rel=1e-9, abs=1e-9)


@FAST
@given(st.one_of(samples, continuous), st.one_of(samples, continuous))
def test_sturges_edges_and_histogram_match_numpy(a: list[float], b: list[float]) -> None:
    pair = NumericPair.from_arrays(a, b)
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
    np.testing.assert_array_equal(stats.sturges_edges(pair), edges)
    np.testing.assert_array_equal(stats._histogram(pair.reference, edges), np.histogram(a, edges)[0] / len(a))


@FAST
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=30, max_size=300),
       st.lists(st.floats(-100, 100, allow_nan=False), min_size=30, max_size=300))
def test_jensen_shannon_matches_scipy_over_sturges_bins(a: list[float], b: list[float]) -> None:
    if len(set(a)) <= 20:
        return
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
    expected = jensenshannon(np.histogram(a, edges)[0] / len(a), np.histogram(b, edges)[0] / len(b))
    assert stats.jensen_shannon(a, b) == pytest.approx(expected, abs=1e-12)


@FAST
@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=200),
       st.lists(st.sampled_from("abcde"), min_size=1, max_size=200))
def test_categorical_tests_match_scipy(a: list[str], b: list[str]) -> None:
    keys = sorted(set(a) | set(b))
    ref = np.array([a.count(k) for k in keys], dtype=float)
    cur = np.array([b.count(k) for k in keys], dtype=float)
    assert stats.jensen_shannon(a, b) == pytest.approx(jensenshannon(ref / len(a), cur / len(b)), abs=1e-12)
    if len(keys) == 1:  # scipy has no answer (NaN); one shared category cannot have moved
        assert stats.chi_square(a, b) == 1.0 and np.isnan(ss.chisquare(cur, ref * len(b) / len(a)).pvalue)
    elif np.all(ref > 0):
        expected = ss.chisquare(cur, ref * len(b) / len(a)).pvalue
        assert stats.chi_square(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    else:
        assert stats.chi_square(a, b) == (0.0 if np.any(cur[ref == 0] > 0) else stats.chi_square(a, b))


@FAST
@given(st.lists(st.booleans(), min_size=2, max_size=300), st.lists(st.booleans(), min_size=2, max_size=300))
def test_z_test_equals_uncorrected_two_by_two_chi_square(a: list[bool], b: list[bool]) -> None:
    table = np.array([[sum(a), len(a) - sum(a)], [sum(b), len(b) - sum(b)]])
    if len(set(a) | set(b)) < 2:
        assert stats.z_test(a, b) == 1.0
        return
    expected = ss.chi2_contingency(table, correction=False).pvalue
    assert stats.z_test(a, b) == pytest.approx(expected, rel=1e-7, abs=1e-12)


def test_psi_known_answer_and_epsilon() -> None:
    # shares (0.5, 0.5) vs (0.25, 0.75): psi = 0.25 ln 2 + (-0.25) ln(2/3)
    assert stats.psi(["a", "b"] * 2, ["a", "b", "b", "b"]) == pytest.approx(0.25 * np.log(2) - 0.25 * np.log(2 / 3))
    # an empty current bin is filled with PSI_EPSILON, so the index stays finite
    value = stats.psi(["a", "b"] * 50, ["a"] * 100)
    eps = stats.PSI_EPSILON
    assert value == pytest.approx((0.5 - 1) * np.log(0.5 / 1) + (0.5 - eps) * np.log(0.5 / eps))


def test_psi_quantile_bins_are_reference_deciles() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=10_000)
    shares, _ = stats.quantile_shares(NumericPair.from_arrays(ref, ref), 10)
    np.testing.assert_allclose(shares, 0.1, atol=1e-3)
    assert stats.psi(ref, ref + 1.0, bins="quantile") > 0.5
    assert stats.psi(ref, rng.normal(size=10_000), bins="quantile") < 0.01


def test_known_answers() -> None:
    assert stats.wasserstein([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(1 / np.std([0, 1, 2]))
    # a constant reference: the std floor of 0.001 keeps the distance finite
    assert stats.wasserstein([1.0, 1.0], [2.0, 2.0]) == pytest.approx(1000.0)
    assert stats.jensen_shannon(["a"] * 10, ["b"] * 10) == pytest.approx(np.sqrt(np.log(2)))
    assert stats.chi_square(["a", "b"], ["a", "c"]) == 0.0  # a category the reference never saw


def test_nan_and_infinities_are_dropped() -> None:
    a = [1.0, 2.0, np.nan, np.inf, 3.0]
    assert stats.wasserstein(a, [1.0, 2.0, 3.0, -np.inf]) == 0.0


def test_callers_arrays_are_not_modified() -> None:
    a, b = np.array([3.0, 1.0, 2.0]), np.array([2.0, 0.0, 5.0])
    stats.wasserstein(a, b)
    stats.ks(a, b)
    assert a.tolist() == [3.0, 1.0, 2.0] and b.tolist() == [2.0, 0.0, 5.0]


def test_psi_quantile_bins_see_a_shift_away_from_a_value_most_of_the_reference_repeats() -> None:
    """95 % zeros make the deciles one edge at 0; bins closed on the left put the zeros with everything above."""
    rng = np.random.default_rng(0)
    ref = np.r_[np.zeros(9500), rng.uniform(0, 1, 500)]
    cur = np.r_[np.zeros(5000), rng.uniform(5, 10, 5000)]
    shares, moved = stats.quantile_shares(NumericPair.from_arrays(ref, cur), 10)
    assert shares == pytest.approx([0.95, 0.05]) and moved == pytest.approx([0.5, 0.5])
    expected = (0.5 - 0.95) * np.log(0.5 / 0.95) + (0.5 - 0.05) * np.log(0.5 / 0.05)
    assert stats.psi(ref, cur, bins="quantile") == pytest.approx(expected)


@pytest.mark.parametrize("as_arrow", [False, True])
def test_sturges_bins_of_integer_columns_are_numpys_at_least_one_wide(as_arrow: bool) -> None:
    """NumPy (and so Evidently) widens integer bins to 1; floats gave one more bin above ~1M rows."""
    import pyarrow as pa

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 22, 700_000), rng.integers(0, 22, 700_000)
    numpy_bins = len(np.histogram_bin_edges(np.r_[a, b], bins="sturges")) - 1
    pair = NumericPair.from_arrays(pa.array(a), pa.array(b)) if as_arrow else NumericPair.from_arrays(a, b)
    assert len(stats.sturges_edges(pair)) - 1 == numpy_bins == 21
    floats = NumericPair.from_arrays(a.astype(float), b.astype(float))
    float_bins = len(np.histogram_bin_edges(np.r_[a, b].astype(float), bins="sturges")) - 1
    assert len(stats.sturges_edges(floats)) - 1 == float_bins == 22


def test_chi_square_of_one_category_in_both_samples_is_no_drift_not_nan() -> None:
    # chdtrc(0, 0) is NaN, which reached event payloads; one shared category cannot have moved
    assert stats.chi_square(["a"] * 10, ["a"] * 5) == 1.0
    assert stats.chi_square(["a"] * 10, ["a"] * 5 + ["b"]) == 0.0  # a new category still is drift
