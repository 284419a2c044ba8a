"""Statistical checks: z-scores against SciPy, planted IsolationForest outliers, distribution drift."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from loopstack.quality import Distribution, IsolationForestOutliers, Suite, ZScoreOutliers


def one(expectation, data):
    return Suite("t", [expectation]).run(data).results[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zscore_counts_match_scipy(seed):
    rng = np.random.default_rng(seed)
    values = np.r_[rng.standard_t(3, size=3000), [None] * 5]
    present = np.array([v for v in values if v is not None], dtype=float)
    expected = int((np.abs(stats.zscore(present, ddof=1)) > 2.5).sum())
    result = one(ZScoreOutliers("x", threshold=2.5), {"x": list(values)})
    assert (result.unexpected_count, result.element_count) == (expected, 3000)
    assert expected > 0


def test_isolation_forest_finds_planted_outliers_and_passes_clean_data():
    rng = np.random.default_rng(3)
    clean = {"a": rng.normal(size=3000), "b": rng.normal(size=3000), "c": rng.normal(size=3000)}
    check = IsolationForestOutliers(["a", "b", "c"], max_ratio=0.005, n_estimators=50)
    assert one(check, clean).passed
    dirty = {k: np.r_[v[:2940], rng.uniform(8, 12, size=60)] for k, v in clean.items()}
    result = one(check, dirty)
    assert not result.passed
    assert 55 <= result.unexpected_count <= 70
    assert all(row["a"] > 7 for row in result.sample)


def test_isolation_forest_fits_on_a_reference_and_samples_large_inputs(tmp_path):
    rng = np.random.default_rng(4)
    pq.write_table(pa.table({"a": rng.normal(size=20000), "b": rng.normal(size=20000)}), tmp_path / "ref.parquet")
    current = {"a": rng.normal(3.0, size=20000), "b": rng.normal(size=20000)}
    check = IsolationForestOutliers(["a", "b"], reference=str(tmp_path / "ref.parquet"), max_rows=2000,
                                    n_estimators=50)  # fmt: skip
    result = one(check, current)
    assert result.element_count == 2000 and result.observed["sampled"]
    assert not result.passed and result.observed["outlier_ratio"] > 0.05


def test_distribution_flags_a_shift_and_agrees_with_scipy_ks(tmp_path):
    rng = np.random.default_rng(5)
    reference = rng.normal(size=800)
    pq.write_table(pa.table({"x": reference}), tmp_path / "ref.parquet")
    check = Distribution("x", reference=str(tmp_path / "ref.parquet"), test="ks")
    same, shifted = rng.normal(size=800), rng.normal(0.5, size=800)
    for current, drifted in ((same, False), (shifted, True)):
        result = one(check, {"x": current})
        assert result.observed["score"] == pytest.approx(stats.ks_2samp(reference, current).pvalue, rel=1e-6)
        assert result.passed is not drifted


def test_distribution_defaults_and_categorical_columns():
    rng = np.random.default_rng(6)
    reference = {"c": rng.choice(["a", "b", "c"], size=5000), "x": rng.normal(size=5000)}
    moved = {"c": rng.choice(["a", "b", "c"], size=5000, p=[0.7, 0.2, 0.1]), "x": rng.normal(size=5000)}
    suite = Suite("d", [Distribution("c", reference=reference), Distribution("x", reference=reference)])
    result = suite.run(moved)
    assert [r.passed for r in result.results] == [False, True]
    assert result["distribution(c)"].observed["test"] == "jensenshannon"
    assert result["distribution(x)"].observed["test"] == "wasserstein"
    missing = one(Distribution("x", reference={"y": [1.0]}), moved)
    assert not missing.passed and "no column 'x'" in missing.error


def test_distribution_on_empty_data_passes_with_a_note_and_an_empty_reference_is_an_error():
    """Drift's compare now refuses an empty sample; the check keeps passing on no data and names an empty baseline."""
    rng = np.random.default_rng(7)
    reference = {"x": rng.normal(size=500)}
    empty = one(Distribution("x", reference=reference), {"x": pa.array([], pa.float64())})
    assert empty.passed and empty.observed["note"] == "no non-null values in the current sample"
    baseline = one(Distribution("x", reference={"x": pa.array([None], pa.float64())}), reference)
    assert not baseline.passed and "reference has no values in column 'x'" in baseline.error
