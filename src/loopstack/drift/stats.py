"""Two-sample column tests, vectorized over sorted samples and category counts.

Each function takes a reference and a current sample (arrays, Arrow columns,
or a prepared `NumericPair` / `CategoricalPair` so that one sort serves every
test of a column) and returns a score. The conventions are Evidently's, so the
same data gives the same scores and the same verdicts:

======================  ===========  =========  ==========================
test                    score        default    drift when
======================  ===========  =========  ==========================
``ks``                  p-value      0.05       score <= threshold
``chisquare``           p-value      0.05       score < threshold
``z``                   p-value      0.05       score < threshold
``wasserstein``         distance     0.1        score >= threshold
``jensenshannon``       distance     0.1        score >= threshold
``psi``                 index        0.1        score >= threshold
======================  ===========  =========  ==========================

* Wasserstein is normed by the reference's population standard deviation,
  floored at 0.001 so a constant reference does not divide by zero.
* Jensen-Shannon (natural log) and PSI bin a numerical column with more than
  20 distinct reference values over Sturges bins of both samples together;
  otherwise they compare the frequency of each distinct value.
* PSI replaces an empty bin's share by ``PSI_EPSILON`` (1e-4), or by a
  millionth of the smallest non-empty share when that is below 1e-4, so the
  logarithm stays finite; Jensen-Shannon needs no such correction.
* PSI with ``bins="quantile"`` bins by reference deciles instead (the
  banking convention); the default ``"sturges"`` matches Evidently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.drift.data import CategoricalPair, NumericPair

PSI_EPSILON = 1e-4
WASSERSTEIN_STD_FLOOR = 0.001
MAX_EXACT_KS = 10_000  # SciPy's ks_2samp switches from the exact to the asymptotic p-value above this


def ks(reference: Any, current: Any | None = None) -> float:
    """Two-sided Kolmogorov-Smirnov p-value, as ``scipy.stats.ks_2samp(method='auto')``.

    Examples
    --------
    >>> round(ks([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]), 6)
    0.007937
    """
    pair = _numeric(reference, current)
    n, m = pair.reference.size, pair.current.size
    if max(n, m) <= MAX_EXACT_KS:
        import warnings

        from scipy.stats import ks_2samp

        with warnings.catch_warnings():  # SciPy falls back to the asymptotic p-value and says so
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(ks_2samp(pair.reference, pair.current).pvalue)
    from scipy.stats import kstwo

    big, small = max(n, m), min(n, m)
    return float(kstwo.sf(ks_statistic(pair), np.round(big * small / (big + small))))


def ks_statistic(reference: Any, current: Any | None = None) -> float:
    """The largest gap between the two empirical CDFs, from the merged sorted samples."""
    pair = _numeric(reference, current)
    merged, ref_le = pair.merged
    last_of_ties = np.append(merged[1:] != merged[:-1], True)
    ref_cdf = ref_le[last_of_ties] / pair.reference.size
    cur_cdf = (np.flatnonzero(last_of_ties) + 1 - ref_le[last_of_ties]) / pair.current.size
    return float(np.max(np.abs(ref_cdf - cur_cdf)))


def wasserstein(reference: Any, current: Any | None = None) -> float:
    """First Wasserstein distance divided by max(reference population std, 0.001).

    Examples
    --------
    >>> round(wasserstein([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]), 6)
    1.224745
    """
    pair = _numeric(reference, current)
    return wasserstein_distance(pair) / max(float(np.std(pair.reference)), WASSERSTEIN_STD_FLOOR)


def wasserstein_distance(reference: Any, current: Any | None = None) -> float:
    """The unnormed first Wasserstein distance, as ``scipy.stats.wasserstein_distance``.

    Computed on quantile functions rather than CDFs: the integral of
    ``|Q_ref(u) - Q_cur(u)|`` over u in (0, 1]. Both quantile functions are
    step functions with steps at i/n and j/m, so the steps can be laid out
    with integer arithmetic (no merge of the values), and equal sizes reduce
    to the mean absolute difference of the sorted samples.
    """
    pair = _numeric(reference, current)
    ref, cur = pair.reference, pair.current
    n, m = ref.size, cur.size
    if n == m:
        gaps = np.subtract(ref, cur)
        return float(np.abs(gaps, out=gaps).sum() / n)
    # Steps of both quantile functions on the common grid u = k / (n * m).
    steps = np.concatenate([np.arange(n, dtype=np.int64) * m, np.arange(m, dtype=np.int64) * n])
    steps.sort(kind="stable")  # two sorted runs: a linear merge
    widths = np.diff(steps, append=n * m)
    gaps = np.abs(ref[steps // m] - cur[steps // n])
    return float(np.dot(widths, gaps) / (n * m))


def jensen_shannon(reference: Any, current: Any | None = None) -> float:
    """Jensen-Shannon distance (natural log) between the binned or counted samples.

    Examples
    --------
    >>> jensen_shannon(["a", "a", "b"], ["a", "a", "b"])
    0.0
    """
    ref, cur = binned_shares(reference, current)
    return _js(ref, cur)


def psi(reference: Any, current: Any | None = None, bins: str = "sturges", n_bins: int = 10) -> float:
    """Population stability index, sum((ref - cur) * ln(ref / cur)) over bins.

    Examples
    --------
    >>> psi(["a", "b"] * 50, ["a", "b"] * 50)
    0.0
    """
    if bins == "quantile" and _is_numeric(reference):
        ref, cur = quantile_shares(_numeric(reference, current), n_bins)
    elif bins in ("quantile", "sturges"):
        ref, cur = binned_shares(reference, current)
    else:
        raise ValidationError(f"psi bins={bins!r} is not known; use 'sturges' (Evidently) or 'quantile'")
    ref, cur = _fill_empty(ref), _fill_empty(cur)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def chi_square(reference: Any, current: Any | None = None) -> float:
    """Chi-square goodness-of-fit p-value of current counts against reference shares.

    Expected counts are the reference counts scaled to the current size; a
    category that the reference never saw makes the statistic infinite and
    the p-value 0. One category in both samples is no drift: 1 (scipy and
    Evidently give NaN there).

    Examples
    --------
    >>> chi_square(["a", "b"] * 10, ["a", "b"] * 10)
    1.0
    """
    from scipy.special import chdtrc

    pair = _categorical(reference, current)
    expected = pair.reference * (pair.n_current / pair.n_reference)
    observed = pair.current.astype(np.float64)
    if np.any((expected == 0) & (observed > 0)):
        return 0.0
    if pair.n_unique < 2:  # one category in both: the shares cannot differ (chdtrc(0, 0) is NaN)
        return 1.0
    seen = expected > 0
    statistic = float(np.sum((observed[seen] - expected[seen]) ** 2 / expected[seen]))
    return float(chdtrc(pair.n_unique - 1, statistic))


def z_test(reference: Any, current: Any | None = None) -> float:
    """Two-sided two-proportion z-test p-value for a column with at most two values.

    The share tested is that of every value but the smallest (Evidently's
    convention); identical one-valued samples give 1.

    Examples
    --------
    >>> round(z_test([0] * 50 + [1] * 50, [0] * 30 + [1] * 70), 6)
    0.003892
    """
    from scipy.special import ndtr

    pair = _categorical(reference, current)
    if pair.n_unique > 2:
        raise ValidationError(f"the z-test needs at most 2 distinct values, got {pair.n_unique}; use 'chisquare'")
    if pair.n_unique == 1:
        return 1.0
    order = sorted(range(2), key=lambda i: pair.keys[i])
    first = order[0]
    n1, n2 = pair.n_reference, pair.n_current
    p1 = 1 - pair.reference[first] / n1
    p2 = 1 - pair.current[first] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(2 * ndtr(-abs(z)))


def binned_shares(reference: Any, current: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each sample per bin: Sturges bins for rich numerical columns, else per value."""
    if isinstance(reference, CategoricalPair):
        pair = reference
    elif _is_numeric(reference):
        numeric = _numeric(reference, current)
        if numeric.more_unique_than(20):
            edges = sturges_edges(numeric)
            return _histogram(numeric.reference, edges), _histogram(numeric.current, edges)
        pair = numeric.as_categories()
    else:
        pair = _categorical(reference, current)
    return pair.reference / pair.n_reference, pair.current / pair.n_current


def sturges_edges(pair: NumericPair) -> np.ndarray:
    """``np.histogram_bin_edges`` of both samples together with bins='sturges', without concatenating."""
    low = min(pair.reference[0], pair.current[0])
    high = max(pair.reference[-1], pair.current[-1])
    size = pair.reference.size + pair.current.size
    width = (high - low) / (np.log2(size) + 1.0)  # from the data's range, as NumPy does
    if pair.integer and width < 1:  # NumPy (and so Evidently) never bins integers narrower than 1
        width = 1.0
    if low == high:
        low, high = low - 0.5, high + 0.5
    n_bins = int(np.ceil((high - low) / width)) if width else 1
    return np.linspace(low, high, n_bins + 1, endpoint=True)


def quantile_shares(pair: NumericPair, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Shares per bin of reference quantiles (open-ended outer bins, so nothing falls outside).

    Bins are closed on the right, ``(q_i, q_i+1]``: a value repeated in most of the reference makes
    several quantiles one edge, and that edge's mass then has a bin of its own below everything
    larger. Closed on the left, it shared the top bin with all larger values, and a current sample
    that moved away from the repeated value scored no drift at all.
    """
    inner = np.unique(np.quantile(pair.reference, np.linspace(0, 1, n_bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    return _right_closed(pair.reference, edges), _right_closed(pair.current, edges)


def _right_closed(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares per bin (e_i, e_i+1] of sorted data, by bisection."""
    return np.diff(np.searchsorted(sorted_values, edges, side="right")) / sorted_values.size


def _histogram(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares per bin [e_i, e_i+1), last bin closed: ``np.histogram`` on sorted data, by bisection."""
    cuts = np.searchsorted(sorted_values, edges, side="left")
    cuts[-1] = np.searchsorted(sorted_values, edges[-1], side="right")
    return np.diff(cuts) / sorted_values.size


def _fill_empty(shares: np.ndarray) -> np.ndarray:
    smallest = shares[shares > 0].min()
    fill = smallest / 10**6 if smallest <= PSI_EPSILON else PSI_EPSILON
    return np.where(shares == 0, fill, shares)


def _js(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.special import rel_entr

    ref, cur = ref / ref.sum(), cur / cur.sum()
    middle = (ref + cur) / 2.0
    return float(np.sqrt((np.sum(rel_entr(ref, middle)) + np.sum(rel_entr(cur, middle))) / 2.0))


def _is_numeric(values: Any) -> bool:
    if isinstance(values, NumericPair):
        return True
    if isinstance(values, CategoricalPair):
        return False
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
    return np.asarray(values).dtype.kind in "iuf"


def _numeric(reference: Any, current: Any | None) -> NumericPair:
    if isinstance(reference, NumericPair):
        return reference
    if isinstance(reference, CategoricalPair):
        raise ValidationError("this test needs a numerical column; use chisquare, z, jensenshannon or psi")
    pair = NumericPair.from_arrays(reference, current)
    if not pair.reference.size or not pair.current.size:
        raise ValidationError("a drift test needs at least one finite value in each sample")
    return pair


def _categorical(reference: Any, current: Any | None) -> CategoricalPair:
    if isinstance(reference, CategoricalPair):
        pair = reference
    elif isinstance(reference, NumericPair):
        pair = reference.as_categories()
    else:
        pair = CategoricalPair.from_arrays(reference, current)
    if not pair.n_reference or not pair.n_current:
        raise ValidationError("a drift test needs at least one non-null value in each sample")
    return pair
