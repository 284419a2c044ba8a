"""The engine's two paths: checks of a Parquet input split over threads, and everything else in turn."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopstack.core.errors import ValidationError
from loopstack.quality import (
    Between,
    ForeignKey,
    InSet,
    NotNull,
    Query,
    Regex,
    RowCount,
    StringLength,
    Suite,
    Unique,
    configure,
    engine,
)
from loopstack.quality.source import open_source

TABLE = pa.table(
    {
        "id": [1, 2, 3, 3, 5, 6, 7, 7, 9, None],
        "amount": [1.0, -2.0, None, float("nan"), 50.0, 7.0, 8.0, 900.0, 3.0, 4.0],
        "status": ["new", "paid", "lost", None, "new", "new", "PAID", "paid", "new", "x"],
        "code": ["AB-1", "ab-2", "AB-3", "AB-4", None, "AB-6", "AB-77", "AB-8", "AB-9", "AB-0"],
    }
)
SUITE = Suite(
    "engine",
    [NotNull("amount"), Between("amount", min=0, max=100), Unique("id"), InSet("status", ["new", "paid"]),
     Regex("code", r"^AB-\d$"), Regex("status", "(unclosed"), StringLength("code", max=4), NotNull("missing"),
     RowCount(min=20), ForeignKey("id", {"id": [1, 2, 3, 5, 6]})],
)  # fmt: skip


@pytest.fixture
def parquet(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(TABLE, path)
    return path


def run_with_threads(threads, data, monkeypatch):
    """The suite's results with DuckDB on `threads` threads, and whether the checks were split over threads."""
    split = []
    real = engine._in_parallel
    monkeypatch.setattr(engine, "_in_parallel", lambda *args: split.append(True) or real(*args))
    try:
        configure(threads=threads)
        result = SUITE.run(data, sample_columns=["id"])
    finally:
        configure()
    return [r.to_dict() for r in result.results], result.row_count, bool(split)


def test_a_parquet_suite_split_over_threads_gives_the_results_of_one_thread(parquet, monkeypatch):
    alone, rows, split = run_with_threads(1, parquet, monkeypatch)
    assert (rows, split) == (10, False)
    together, rows, split = run_with_threads(3, parquet, monkeypatch)
    assert (rows, split) == (10, True)
    assert together == alone
    by_label = {(r["expectation"]["kind"], r["expectation"].get("column")): r for r in together}
    assert by_label["between", "amount"]["unexpected_count"] == 2
    assert by_label["between", "amount"]["sample"] == [{"id": 2, "amount": -2.0}, {"id": 7, "amount": 900.0}]
    assert by_label["unique", "id"]["sample"] == [{"id": 3, "count": 2}, {"id": 7, "count": 2}]
    assert by_label["regex", "status"]["error"] and by_label["not_null", "missing"]["error"]
    assert by_label["regex", "code"]["unexpected_count"] == 2  # ab-2, AB-77: the bad pattern fails alone
    assert by_label["row_count", None]["observed"] == {"row_count": 10}
    assert by_label["foreign_key", "id"]["unexpected_count"] == 3


def test_row_checks_are_grouped_by_column_and_the_costliest_scan_starts_first():
    checks = [Between("amount", min=0), NotNull("code"), InSet("status", ["new"]), Regex("code", "^AB"),
              NotNull("amount"), StringLength("status", max=3), NotNull("id")]  # fmt: skip
    schema = {"id": "BIGINT", "amount": "DOUBLE", "status": "VARCHAR", "code": "VARCHAR"}
    groups = engine._groups(dict(enumerate(checks)), 8, schema)
    assert [sorted(group) for group in groups] == [[1, 3], [2, 5], [0, 4], [6]]  # code: a regex over text
    merged = engine._groups(dict(enumerate(checks)), 2, schema)
    assert [sorted(group) for group in merged] == [[1, 3, 6], [0, 2, 4, 5]]  # costs 7 + 2 and 5 + 3
    assert engine._groups({}, 8, schema) == []


def test_only_parquet_inputs_are_read_by_several_queries(parquet, tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("x\n1\n")
    try:
        configure(threads=2)
        with open_source(parquet) as source, source.reopen() as copy:
            assert source.workers == 2
            assert copy.one("SELECT count(*) FROM data") == (10,) and copy.schema == source.schema
        for data in (csv, TABLE, Query("SELECT 1 AS x")):
            with open_source(data) as source:
                assert source.workers == 1
                with pytest.raises(ValidationError, match="cannot be opened again"):
                    source.reopen()
    finally:
        configure()


def test_an_error_in_a_thread_reaches_the_caller(parquet):
    def broken(source):
        raise RuntimeError("boom")

    with open_source(parquet) as source, pytest.raises(RuntimeError, match="boom"):
        engine._in_parallel(source, [lambda source: 1, broken, lambda source: 3], 2)
    with open_source(parquet) as source:
        assert engine._in_parallel(source, [lambda s, i=i: i for i in range(5)], 2) == [0, 1, 2, 3, 4]


def test_our_cursors_use_the_perfect_hash_aggregate_and_a_users_connection_is_left_alone(parquet):
    import duckdb

    settings = "SELECT current_setting('perfect_ht_threshold'), current_setting('disable_parquet_prefetching')"
    with open_source(parquet) as source, source.reopen() as copy:
        assert source.one(settings) == copy.one(settings) == (20, True)
    with open_source(TABLE) as source:
        assert source.one(settings) == (20, False)  # prefetching only matters for files
    own = duckdb.connect()
    default = own.execute(settings).fetchall()
    with open_source(Query("SELECT 1 AS x", own)) as source:
        assert source.one(settings) == default[0]


def test_checks_read_naive_bounds_as_utc_whatever_the_machine_time_zone() -> None:
    """DuckDB took the process's zone: under New York, 02:00 UTC fell before a naive 00:00 bound."""
    import os
    import subprocess
    import sys

    script = """
import datetime as dt
import pandas as pd
from loopstack.quality import Between, Suite, profile
frame = pd.DataFrame({"t": pd.to_datetime(["2024-01-01 02:00"], utc=True)})
print(Suite("s", [Between("t", min=dt.datetime(2024, 1, 1))]).run(frame).passed)
print([e.to_dict()["min"] for e in profile(frame, distribution=False) if e.kind == "between"])
"""
    env = {**os.environ, "TZ": "America/New_York"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["True", "['2024-01-01T02:00:00+00:00']"]
