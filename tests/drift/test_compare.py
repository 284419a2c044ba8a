"""Data-set drift: Evidently's test selection and verdict conventions, A/A calm, planted shifts found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats as ss

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.drift import TESTS, EmptySampleError, benjamini_hochberg, compare, default_test


@pytest.mark.parametrize(
    ("kind", "n_reference", "n_unique", "expected"),
    [
        ("numerical", 1000, 6, "ks"),
        ("numerical", 1000, 5, "chisquare"),
        ("numerical", 1000, 2, "z"),
        ("categorical", 1000, 3, "chisquare"),
        ("categorical", 500, 2, "z"),
        ("numerical", 1001, 6, "wasserstein"),
        ("numerical", 1001, 5, "jensenshannon"),
        ("categorical", 1001, 40, "jensenshannon"),
    ],
)
def test_default_test_follows_evidently(kind: str, n_reference: int, n_unique: int, expected: str) -> None:
    assert default_test(kind, n_reference, n_unique) == expected


def test_threshold_equality_conventions() -> None:
    assert TESTS["ks"].drifted(0.05, 0.05) and not TESTS["chisquare"].drifted(0.05, 0.05)
    assert not TESTS["z"].drifted(0.05, 0.05)
    assert TESTS["wasserstein"].drifted(0.1, 0.1) and TESTS["jensenshannon"].drifted(0.1, 0.1)
    assert not TESTS["psi"].drifted(0.0999, 0.1)
    assert not TESTS["ks"].drifted(float("nan"), 0.05)


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "a": rng.normal(shift, 1, n),
        "b": rng.exponential(1, n),
        "c": rng.choice(["x", "y", "z"], n),
        "d": rng.integers(0, 2, n),
    }


@pytest.mark.parametrize("n", [300, 3000])
def test_identical_distributions_raise_no_alarm_in_most_seeds(n: int) -> None:
    alarms = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        alarms += compare(_frame(rng, n), _frame(rng, n), histograms=False).dataset_drift
    assert alarms <= 2  # 4 columns, half must drift: rare at the default thresholds


def test_planted_shifts_are_flagged_with_the_right_tests() -> None:
    rng = np.random.default_rng(0)
    ref = _frame(rng, 5000)
    cur = _frame(rng, 5000)
    cur["a"] = cur["a"] + 0.5
    cur["c"] = rng.choice(["x", "y", "z"], 5000, p=[0.7, 0.2, 0.1])
    result = compare(ref, cur)
    assert result.drifted_columns == ["a", "c"]
    assert {n: c.test for n, c in result.columns.items()} == {
        "a": "wasserstein", "b": "wasserstein", "c": "jensenshannon", "d": "jensenshannon",
    }
    assert result.dataset_drift and result.share == 0.5


def test_small_reference_uses_p_value_tests() -> None:
    rng = np.random.default_rng(1)
    result = compare(_frame(rng, 500), _frame(rng, 500, shift=1.0))
    assert {n: c.test for n, c in result.columns.items()} == {"a": "ks", "b": "ks", "c": "chisquare", "d": "z"}
    assert result.columns["a"].drifted and result.columns["a"].p_value


def test_overrides_per_column_kind_and_threshold() -> None:
    rng = np.random.default_rng(2)
    ref, cur = _frame(rng, 2000), _frame(rng, 2000, shift=0.05)
    result = compare(ref, cur, tests={"a": "psi"}, cat_test="chisquare", thresholds={"b": 0.5},
                     kinds={"d": "numerical"})
    assert result.columns["a"].test == "psi"
    assert result.columns["c"].test == "chisquare"
    assert result.columns["b"].threshold == 0.5
    assert result.columns["d"].kind == "numerical"
    with pytest.raises(ConfigError, match="cannot run on a categorical"):
        compare(ref, cur, tests={"c": "ks"})
    with pytest.raises(ConfigError, match="unknown drift test"):
        compare(ref, cur, num_test="nope")


def test_corrections_adjust_p_values() -> None:
    rng = np.random.default_rng(4)
    ref = {f"x{i}": rng.normal(size=400) for i in range(6)}
    cur = {f"x{i}": rng.normal(0.2 if i == 0 else 0, 1, size=400) for i in range(6)}
    raw = compare(ref, cur)
    p = np.array([c.score for c in raw.columns.values()])
    bonf = compare(ref, cur, correction="bonferroni")
    np.testing.assert_allclose([c.adjusted for c in bonf.columns.values()], np.minimum(p * 6, 1))
    bh = compare(ref, cur, correction="bh")
    np.testing.assert_allclose([c.adjusted for c in bh.columns.values()], ss.false_discovery_control(p))


def test_benjamini_hochberg_matches_scipy() -> None:
    p = np.random.default_rng(5).uniform(size=50) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), ss.false_discovery_control(p))


def test_inputs_pandas_arrow_parquet_agree(tmp_path) -> None:
    rng = np.random.default_rng(6)
    ref, cur = pd.DataFrame(_frame(rng, 1500)), pd.DataFrame(_frame(rng, 1500, shift=0.3))
    pq.write_table(pa.Table.from_pandas(ref), tmp_path / "ref.parquet")
    pq.write_table(pa.Table.from_pandas(cur), tmp_path / "cur.parquet")
    from_pandas = compare(ref, cur).scores
    from_parquet = compare(tmp_path / "ref.parquet", str(tmp_path / "cur.parquet")).scores
    assert from_pandas == from_parquet


def test_nulls_dropped_and_empty_columns_reported() -> None:
    ref = pa.table({"x": pa.array([1.0, None, 2.0, float("nan"), 3.0] * 10), "e": pa.array([None] * 50, pa.float64())})
    cur = pa.table({"x": pa.array([1.0, 2.0, 3.0] * 10), "e": pa.array([1.0] * 30)})
    result = compare(ref, cur)
    assert result.columns["x"].n_reference == 30 and not result.columns["x"].drifted
    assert np.isnan(result.columns["e"].score) and "reference" in result.columns["e"].note


def test_an_empty_sample_is_an_error_not_a_verdict_of_no_drift(tmp_path) -> None:
    """A current sample of 0 rows gave "no drift (0 of 1 columns drifted)": an empty export passed a drift gate."""
    ref = pa.table({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    pq.write_table(ref.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(EmptySampleError, match=r"current file .*empty\.parquet has 0 rows") as caught:
        compare(ref, tmp_path / "empty.parquet")
    assert caught.value.side == "current" and isinstance(caught.value, ValidationError)
    with pytest.raises(EmptySampleError, match="reference sample has 0 rows") as caught:
        compare({"x": []}, {"x": [1.0]})
    assert caught.value.side == "reference"
    nulls = pa.table({"x": pa.array([None, None], pa.float64()), "c": pa.array([None, None], pa.string())})
    with pytest.raises(EmptySampleError, match=r"current sample has no non-null value in any column tested \(x, c\)"):
        compare(ref, nulls)


def test_columns_only_one_side_has_are_reported_not_tested() -> None:
    """A column that vanished from the current data was left out without a word ("1 of 1 columns drifted")."""
    rng = np.random.default_rng(2)
    ref = {"x": rng.normal(size=500), "city": rng.choice(["a", "b"], 500)}
    cur = {"x": rng.normal(size=500), "region": rng.choice(["n", "s"], 500)}
    result = compare(ref, cur)
    assert list(result.columns) == ["x"] and not result.dataset_drift
    assert result.missing_columns == ["city"] and result.new_columns == ["region"]
    assert result.to_dict()["missing_columns"] == ["city"] and result.to_dict()["new_columns"] == ["region"]
    chosen = compare(ref, cur, columns=["x"])  # the user chose the columns: nothing left out by surprise
    assert chosen.missing_columns == [] and chosen.new_columns == []
    page = result.report()
    assert "Missing from the current data" in page and "New in the current data" in page


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="share no name"):
        compare({"a": [1.0]}, {"b": [1.0]})
    with pytest.raises(ValidationError, match=r"\['zz'\]"):
        compare({"a": [1.0]}, {"a": [1.0]}, columns=["zz"])
    with pytest.raises(ConfigError, match="drift_share"):
        compare({"a": [1.0]}, {"a": [1.0]}, drift_share=0)


@pytest.mark.parametrize("settings", [{"threshold": "0.1"}, {"drift_share": "0.5"}, {"thresholds": {"a": "x"}},
                                      {"threshold": float("nan")}, {"drift_share": True}])
def test_settings_that_are_not_numbers_are_named(settings: dict) -> None:
    """Text raised a raw TypeError from a comparison; NaN passed as a threshold no test can cross."""
    name = next(iter(settings))
    with pytest.raises(ConfigError, match=f"{name}.* must be"):
        compare({"a": [1.0]}, {"a": [1.0]}, **settings)


def test_a_time_column_is_named_with_the_kind_that_can_test_it() -> None:
    times = pa.array([0, 1, 2] * 10, pa.timestamp("s"))
    with pytest.raises(ValidationError, match="'categorical'") as error:
        compare(pa.table({"t": times}), pa.table({"t": times}))
    assert "'numerical'" not in str(error.value)  # numerical tests cannot read times: it would fail next
    result = compare(pa.table({"t": times}), pa.table({"t": times}), kinds={"t": "categorical"})
    assert not result.columns["t"].drifted


def test_categories_of_different_types_are_counted_on_a_common_type() -> None:
    """A current value the reference type cannot hold (2.5 in an int column, -3 in uint8) is drift, not a crash."""
    ints = pa.table({"k": pa.array([0, 1, 2] * 20, pa.int64())})
    result = compare(ints, pa.table({"k": pa.array([0.0, 1.0, 2.5] * 20)}), kinds={"k": "categorical"})
    assert result.columns["k"].drifted and result.columns["k"].n_current == 60
    small = pa.table({"k": pa.array([0, 1, 2, 3] * 20, pa.uint8())})
    result = compare(small, pa.table({"k": pa.array([-3, 1, 2, 3] * 20, pa.int64())}))
    assert result.columns["k"].test == "chisquare" and result.columns["k"].score == 0.0
    same = compare(small, pa.table({"k": pa.array([0, 1, 2, 3] * 20, pa.int64())}))
    assert same.columns["k"].score == pytest.approx(1.0)
    mixed = compare({"k": ["a", "b"] * 20}, {"k": np.array([1, 2] * 20)})
    assert mixed.columns["k"].drifted


def test_columns_that_cannot_be_tested_are_named() -> None:
    with pytest.raises(ValidationError, match=r"column 's'.*numbers.*categorical"):
        compare({"s": ["a", "b"]}, {"s": ["a", "c"]}, kinds={"s": "numerical"})
    twice = pa.table([pa.array([1.0]), pa.array([2.0])], names=["x", "x"])
    with pytest.raises(ValidationError, match=r"\['x'\].*more than once"):
        compare(twice, {"x": [1.0]})
    with pytest.raises(ValidationError, match=r"\['x'\].*more than once"):
        compare({"x": [1.0]}, twice)
    with pytest.raises(ValidationError, match="same number of values"):
        compare({"x": [1.0, 2.0], "y": [1.0]}, {"x": [1.0]})


def test_a_mixed_type_column_is_named_with_the_way_out() -> None:
    """A pandas object column holding "a" and 1 raised Arrow's bare ArrowTypeError from compare."""
    reference = pd.DataFrame({"code": ["a", 1, "b"] * 20, "x": np.arange(60.0)})
    current = pd.DataFrame({"code": ["a", "b", "c"] * 20, "x": np.arange(60.0) + 1})
    with pytest.raises(ValidationError, match=r"column 'code' holds values of types \['int', 'str'\].*astype\(str\)"
                                              r".*columns="):
        compare(reference, current)
    assert list(compare(reference, current, columns=["x"]).columns) == ["x"]  # left out: never converted
    fixed = reference.assign(code=reference["code"].astype(str))
    assert set(compare(fixed, current).columns) == {"code", "x"}
