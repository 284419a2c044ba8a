"""Each expectation on hand-made data whose offending rows are known."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from loopstack.core.errors import ConfigError
from loopstack.quality import (
    Between,
    ColumnTypes,
    CompoundUnique,
    ForeignKey,
    InSet,
    NotNull,
    Query,
    Regex,
    RowCount,
    SchemaMatches,
    StringLength,
    Suite,
    Unique,
    ZScoreOutliers,
)


def one(expectation, data):
    """The single result of a one-check suite."""
    return Suite("t", [expectation]).run(data).results[0]


DATA = {
    "id": [1, 2, 3, 4, 4, 5, None],
    "amount": [10.0, -5.0, 250.0, None, float("nan"), 99.5, 100.0],
    "status": ["new", "paid", "lost", None, "new", "PAID", "paid"],
    "code": ["AB-1234", "ab-1234", "XY-9", "ZZ-0001", None, "AB-12345", "CD-0000"],
}


def test_not_null_counts_nulls_and_nan_over_all_rows():
    result = one(NotNull("amount"), DATA)
    assert (result.unexpected_count, result.element_count, result.passed) == (2, 7, False)
    assert result.observed["null_ratio"] == pytest.approx(2 / 7)
    assert all(row["amount"] is None or math.isnan(row["amount"]) for row in result.sample)


def test_not_null_mostly_is_a_null_ratio_threshold():
    assert one(NotNull("amount", mostly=5 / 7), DATA).passed
    assert not one(NotNull("amount", mostly=0.72), DATA).passed


def test_between_ignores_nulls_and_respects_strict_bounds():
    result = one(Between("amount", min=0, max=100), DATA)
    # -5 and 250 are out; NaN reads as null; 100 is on the bound.
    assert (result.unexpected_count, result.element_count) == (2, 5)
    assert sorted(row["amount"] for row in result.sample) == [-5.0, 250.0]
    assert one(Between("amount", min=0, max=100, strict=True), DATA).unexpected_count == 3
    assert one(Between("id", min=2), DATA).unexpected_count == 1


def test_in_set_is_case_sensitive_and_skips_nulls():
    result = one(InSet("status", ["new", "paid"]), DATA)
    assert (result.unexpected_count, result.element_count) == (2, 6)
    assert {row["status"] for row in result.sample} == {"lost", "PAID"}


def test_regex_searches_unless_anchored_or_full_match():
    assert one(Regex("code", r"[A-Z]{2}-\d{4}"), DATA).unexpected_count == 2  # ab-1234, XY-9
    assert one(Regex("code", r"^[A-Z]{2}-\d{4}$"), DATA).unexpected_count == 3  # and AB-12345
    assert one(Regex("code", r"[A-Z]{2}-\d{4}", full_match=True), DATA).unexpected_count == 3


def test_regex_on_numbers_matches_their_text():
    assert one(Regex("id", r"^[1-3]$"), DATA).unexpected_count == 3  # 4, 4, 5


def test_string_length_bounds():
    result = one(StringLength("code", min=7, max=7), DATA)
    assert result.unexpected_count == 2  # XY-9 (4) and AB-12345 (8)
    assert one(StringLength("status", max=3), DATA).unexpected_count == 4


def test_unique_counts_every_row_of_a_repeated_value():
    result = one(Unique("id"), DATA)
    assert (result.unexpected_count, result.element_count, result.observed) == (2, 6, {"duplicated_values": 1})
    assert result.sample == [{"id": 4, "count": 2}]
    assert one(Unique("amount"), DATA).passed


def test_unique_samples_the_biggest_groups_and_equal_sizes_in_key_order():
    data = {"id": [9, 5, 3, 3, 5, 9, 7, 7, 7, 1]}
    result = Suite("t", [Unique("id")]).run(data, sample_size=3).results[0]
    assert result.sample == [{"id": 7, "count": 3}, {"id": 3, "count": 2}, {"id": 5, "count": 2}]
    pairs = {"a": ["x", "x", "a", "a", "a", "a"], "b": ["q", "q", "z", "z", "b", "b"]}
    result = Suite("t", [CompoundUnique(["a", "b"])]).run(pairs, sample_size=2).results[0]
    assert result.sample == [{"a": "a", "b": "b", "count": 2}, {"a": "a", "b": "z", "count": 2}]


def test_compound_unique_skips_rows_with_a_null_key():
    data = {"a": [1, 1, 1, 2, None, None], "b": ["x", "x", "y", "x", "z", "z"]}
    result = one(CompoundUnique(["a", "b"]), data)
    assert (result.unexpected_count, result.observed["duplicated_keys"]) == (2, 1)
    with pytest.raises(ConfigError, match="two or more"):
        CompoundUnique(["a"])


def test_row_count_bounds():
    assert one(RowCount(min=7, max=7), DATA).passed
    result = one(RowCount(max=6), DATA)
    assert (result.passed, result.observed) == (False, {"row_count": 7})


def test_column_types_accepts_families_and_reports_mismatches():
    assert one(ColumnTypes({"id": "integer", "amount": "float", "status": "string"}), DATA).passed
    result = one(ColumnTypes({"id": "BIGINT", "amount": "integer", "nope": "string"}), DATA)
    assert result.unexpected_count == 2
    assert result.observed["missing"] == ["nope"]
    assert result.observed["mismatched"] == {"amount": {"expected": "integer", "actual": "DOUBLE"}}


def test_schema_matches_reports_added_removed_and_retyped():
    baseline = {"id": "BIGINT", "amount": "DOUBLE", "gone": "VARCHAR", "status": "BIGINT", "code": "VARCHAR"}
    result = one(SchemaMatches(baseline), DATA)
    assert result.observed == {
        "added": {},
        "removed": {"gone": "VARCHAR"},
        "retyped": {"status": {"from": "BIGINT", "to": "VARCHAR"}},
    }
    assert result.unexpected_count == 2
    assert one(SchemaMatches(baseline, allow_removed=True, allow_retyped=True), DATA).passed
    grown = {k: v for k, v in baseline.items() if k not in ("gone", "code", "status")}
    assert one(SchemaMatches(grown), DATA).observed["added"] == {"status": "VARCHAR", "code": "VARCHAR"}
    assert one(SchemaMatches(grown, allow_added=True), DATA).passed


def test_foreign_key_against_a_parquet_reference(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user": [1, 2, 3]}), tmp_path / "users.parquet")
    check = ForeignKey("id", reference=str(tmp_path / "users.parquet"), reference_column="user")
    result = one(check, DATA)
    assert (result.unexpected_count, result.element_count, result.observed) == (3, 6, {"missing_keys": 2})
    assert sorted(row["id"] for row in result.sample) == [4, 4, 5]
    bad = one(ForeignKey("id", reference={"other": [1]}), DATA)
    assert not bad.passed and "no column 'id'" in bad.error


def test_zscore_learns_mean_and_std_from_the_data_when_not_given():
    values = [0.0] * 50 + [1.0] * 50 + [10.0]
    result = one(ZScoreOutliers("x", threshold=3.0), {"x": values})
    assert result.unexpected_count == 1
    assert result.sample == [{"x": 10.0}]
    assert one(ZScoreOutliers("x"), {"x": [2.0, 2.0, 2.0]}).passed  # zero spread: nothing stands out


def test_mostly_and_severity_decide_pass_and_suite_verdict():
    suite = Suite("t", [Between("amount", min=0, max=100, mostly=0.5), InSet("status", ["new"], severity="warning")])
    result = suite.run(DATA)
    assert result.passed
    assert [r.label for r in result.warnings] == ["in_set(status)"]
    with pytest.raises(ConfigError, match="severity"):
        NotNull("x", severity="fatal")
    with pytest.raises(ConfigError, match="mostly"):
        NotNull("x", mostly=1.5)


def test_a_check_that_cannot_run_fails_alone():
    suite = Suite(
        "t",
        [NotNull("id"), Regex("code", "(unclosed"), NotNull("missing"), InSet("id", ["not-a-number"]), Unique("id")],
    )
    result = suite.run(DATA)
    by_label = {r.label: r for r in result.results}
    assert by_label["not_null(id)"].unexpected_count == 1 and by_label["not_null(id)"].error is None
    assert by_label["regex(code)"].error and not by_label["regex(code)"].passed
    assert "not in the data" in by_label["not_null(missing)"].error
    assert by_label["in_set(id)"].error
    assert by_label["unique(id)"].unexpected_count == 2


@pytest.mark.parametrize("kind", ["arrow", "pandas", "polars", "parquet", "folder", "glob", "csv", "query", "sql"])
def test_every_input_kind_gives_the_same_counts(kind, tmp_path):
    import duckdb
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 2, None], "s": ["a", "bb", None, "dddd"]})
    suite = Suite("t", [NotNull("id"), Unique("id"), StringLength("s", max=2)])
    if kind == "arrow":
        data = table
    elif kind == "pandas":
        data = table.to_pandas()
    elif kind == "polars":
        import polars as pl

        data = pl.from_arrow(table)
    elif kind in ("parquet", "folder", "glob"):
        (tmp_path / "sub").mkdir()
        pq.write_table(table.slice(0, 2), tmp_path / "sub" / "a.parquet")
        pq.write_table(table.slice(2), tmp_path / "b.parquet")
        pq.write_table(table, tmp_path / "all.pq")
        data = {"parquet": tmp_path / "all.pq", "folder": tmp_path, "glob": str(tmp_path / "**" / "*.parquet")}[kind]
    elif kind == "csv":
        pacsv.write_csv(table, tmp_path / "t.csv")
        data = str(tmp_path / "t.csv")
    elif kind == "query":
        connection = duckdb.connect()
        connection.register("t", table)
        data = Query("SELECT * FROM t", connection)
    else:
        data = "SELECT * FROM (VALUES (1, 'a'), (2, 'bb'), (2, NULL), (NULL, 'dddd')) v(id, s)"
    counts = [r.unexpected_count for r in suite.run(data).results]
    assert counts == [1, 2, 1]


def test_a_missing_path_is_a_clear_error(tmp_path):
    from loopstack.core.errors import ValidationError

    with pytest.raises(ValidationError, match="does not exist"):
        Suite("t", [NotNull("x")]).run(str(tmp_path / "nope.parquet"))
    with pytest.raises(ValidationError, match="cannot check data of type int"):
        Suite("t", [NotNull("x")]).run(42)


def test_a_hive_partitioned_folder_exposes_its_partition_column(tmp_path):
    import pyarrow.parquet as pq

    for day in (1, 2):
        (tmp_path / f"day={day}").mkdir()
        pq.write_table(pa.table({"x": [day, None]}), tmp_path / f"day={day}" / "part.parquet")
    result = Suite("t", [NotNull("x"), InSet("day", [1])]).run(tmp_path)
    assert [r.unexpected_count for r in result.results] == [2, 2]


def test_a_record_batch_reader_is_checked_like_its_table():
    table = pa.table({"x": [1, -1, 2, 2]})
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    result = Suite("t", [Between("x", min=0), Unique("x")]).run(reader)
    assert [(r.unexpected_count, r.error) for r in result.results] == [(1, None), (2, None)]


def test_nan_reads_as_null_in_parquet_too(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, float("nan"), None, 500.0]}), tmp_path / "x.parquet")
    result = Suite("t", [NotNull("x"), Between("x", max=10)]).run(tmp_path / "x.parquet")
    assert [(r.unexpected_count, r.element_count) for r in result.results] == [(2, 4), (1, 2)]


def test_samples_hold_whole_rows_in_memory_and_the_checked_columns_from_files(tmp_path):
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 3], "x": [5, -1, -2], "note": ["a", "b", "c"]})
    pq.write_table(table, tmp_path / "t.parquet")
    suite = Suite("t", [Between("x", min=0)])
    assert suite.run(table).results[0].sample == [{"id": 2, "x": -1, "note": "b"}, {"id": 3, "x": -2, "note": "c"}]
    path = tmp_path / "t.parquet"
    assert suite.run(path).results[0].sample == [{"x": -1}, {"x": -2}]
    assert suite.run(path, sample_columns=["id"]).results[0].sample == [{"id": 2, "x": -1}, {"id": 3, "x": -2}]
    assert suite.run(path, sample_columns="*", sample_size=1).results[0].sample == [{"id": 2, "x": -1, "note": "b"}]


def test_numpy_float_bounds_compile_to_numbers():
    """Bounds taken from a frame (``df.x.min()``) are NumPy floats; they once compiled to 'np.float64(0.5)'."""
    import numpy as np

    check = Between("x", min=np.float64(0.5), max=np.float64(2.0))
    result = Suite("s", [check, InSet("x", [np.float64(1.0)])]).run({"x": [1.0, 3.0, 0.25]})
    assert [r.error for r in result.results] == [None, None]
    assert [r.unexpected_count for r in result.results] == [2, 2]


def test_a_date_bound_is_recorded_as_its_date():
    """Results and events recorded a date bound as the text 'datetime.date', losing the value."""
    import datetime as dt

    check = Between("d", min=dt.date(2020, 6, 1))
    result = Suite("s", [check]).run({"d": [dt.date(2020, 1, 1), dt.date(2021, 1, 1)]})
    assert result.results[0].expectation["min"] == "2020-06-01" and result.results[0].unexpected_count == 1
    assert check.to_dict()["min"] == dt.date(2020, 6, 1)  # the YAML form keeps the date itself


def test_in_set_with_none_among_the_values_still_flags_values_outside_it():
    """A None in `values` made ``x IN (..., NULL)`` NULL for every other value, so nothing ever offended."""
    result = one(InSet("c", ["a", "b", None]), {"c": ["a", "b", "z", None]})
    assert (result.unexpected_count, result.element_count, result.passed) == (1, 3, False)
    assert one(InSet("c", [None]), {"c": ["a", None]}).unexpected_count == 1


def test_badly_typed_yaml_parameters_are_config_errors():
    """A non-text column type crashed with AttributeError; a text row count with TypeError while running."""
    cases = {
        "{kind: column_types, types: {x: null}}": "type None of 'x'",
        "{kind: column_types, types: [x]}": r"types=\['x'\]",
        "{kind: row_count, min: '2'}": "min='2' is not a number of rows",
        "not_null": "is not a mapping",
    }
    for item, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            Suite.from_yaml(f"name: s\nexpectations:\n  - {item}\n")


def test_mixed_type_object_column_is_a_validation_error_naming_the_column():
    import pandas as pd

    from loopstack.core.errors import ValidationError

    with pytest.raises(ValidationError, match=r"column m.*astype"):
        Suite("s", [NotNull("m")]).run(pd.DataFrame({"m": [1, "a", None]}))


def test_temporal_family_takes_every_timestamp_unit():
    table = pa.table({"t": pa.array([1], pa.timestamp("s")), "z": pa.array([1], pa.time64("us"))})
    assert one(ColumnTypes({"t": "temporal", "z": "temporal"}), table).passed


@pytest.mark.parametrize("bounds", [{"min": 0, "max": math.nan}, {"min": math.nan}])
def test_between_refuses_a_nan_bound(bounds: dict[str, float]) -> None:
    """A NaN bound was accepted and then judged every value against NaN."""
    with pytest.raises(ConfigError, match="=nan is no bound"):
        Between("x", **bounds)
