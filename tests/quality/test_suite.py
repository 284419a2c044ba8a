"""Suites in YAML, profile(), the gate, serving request validation, stored results and the CLI."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import loopstack.quality as quality
from loopstack.core.errors import ConfigError, ValidationError
from loopstack.quality import (
    Between,
    ForeignKey,
    InSet,
    NotNull,
    QualityGateError,
    Regex,
    Suite,
    Unique,
    ZScoreOutliers,
    gate,
    history,
    profile,
    record,
    validate_request,
)
from loopstack.quality.cli import quality as quality_cli

ORDERS = pa.table(
    {
        "order_id": list(range(1, 101)),
        "amount": [float(i % 50) for i in range(100)],
        "status": ["new", "paid", "shipped", "paid"] * 25,
        "sku": [f"SKU-{i:04d}" for i in range(100)],
        "note": [None if i % 10 == 0 else "ok" for i in range(100)],
    }
)


def test_exported_names_are_the_public_api():
    assert set(quality.__all__) == {
        "Suite", "Query", "Expectation", "RowExpectation", "TableExpectation", "NotNull", "Between", "InSet",
        "Regex", "StringLength", "Unique", "CompoundUnique", "RowCount", "ForeignKey", "ColumnTypes",
        "SchemaMatches", "Distribution", "ZScoreOutliers", "IsolationForestOutliers", "profile",
        "ExpectationResult", "SuiteResult", "gate", "QualityGateError", "validate_request", "RequestValidation",
        "record", "history", "configure",
    }  # fmt: skip
    assert all(hasattr(quality, name) for name in quality.__all__)


def test_yaml_round_trip_runs_the_same(tmp_path):
    suite = Suite(
        "orders",
        [NotNull("order_id"), Between("amount", min=0, max=40, mostly=0.5), InSet("status", ["new", "paid"]),
         Regex("sku", r"^SKU-\d{4}$"), Unique("order_id", severity="warning")],
    )  # fmt: skip
    path = tmp_path / "orders.yaml"
    suite.to_yaml(path)
    loaded = Suite.load(path)
    assert loaded.to_dict() == suite.to_dict()
    first, second = suite.run(ORDERS), loaded.run(ORDERS)
    assert [(r.passed, r.unexpected_count) for r in first.results] == [
        (r.passed, r.unexpected_count) for r in second.results
    ]
    assert first["in_set(status)"].unexpected_count == 25


def test_yaml_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown expectation kind 'betwen'"):
        Suite.from_yaml("name: s\nexpectations:\n  - {kind: betwen, column: x}\n")
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['maximum'\]"):
        Suite.from_yaml("name: s\nexpectations:\n  - {kind: between, column: x, maximum: 3}\n")
    with pytest.raises(ConfigError, match="give min, max or both"):
        Suite.from_yaml("name: s\nexpectations:\n  - {kind: between, column: x}\n")
    with pytest.raises(ConfigError, match="does not exist"):
        Suite.load(tmp_path / "missing.yaml")
    import numpy as np

    with pytest.raises(ConfigError, match="YAML cannot store"):
        Suite("s", [ForeignKey("x", reference={"x": np.arange(3)})]).to_yaml()


def test_profile_proposes_a_suite_that_passes_on_its_reference_and_catches_changes(tmp_path):
    pq.write_table(ORDERS, tmp_path / "ref.parquet")
    suite = profile(str(tmp_path / "ref.parquet"), name="orders", outliers=True)
    kinds = {(e.kind, e.columns_used[0] if e.columns_used else None) for e in suite}
    assert {("unique", "order_id"), ("in_set", "status"), ("string_length", "sku"), ("distribution", "amount")} <= kinds
    assert ("not_null", "note") in kinds and ("unique", "status") not in kinds
    reloaded = Suite.from_yaml(suite.to_yaml())
    assert reloaded.run(ORDERS).passed
    changed = ORDERS.set_column(2, "status", pa.array(["new", "lost"] * 50)).append_column("extra", pa.nulls(100))
    result = reloaded.run(changed)
    assert {r.label for r in result.failures} >= {"in_set(status)", "schema_matches", "distribution(status)"}


def test_gate_raises_with_the_result_and_records_it(sqlite_project):
    suite = Suite("features", [NotNull("note"), Between("amount", max=10)])
    with pytest.raises(QualityGateError) as caught:
        gate(suite, ORDERS, project=sqlite_project)
    assert isinstance(caught.value, ValidationError) and caught.value.http_status == 400
    assert "not_null(note): 10 unexpected of 100" in str(caught.value)
    assert len(caught.value.result.failures) == 2
    passed = gate(Suite("features", [NotNull("order_id")]), ORDERS, project=sqlite_project)
    past = history(sqlite_project, "features")
    assert [r.passed for r in past] == [True, False]
    assert past[0].event_id == passed.event_id
    stored = past[1]["between(amount)"]
    assert (stored.unexpected_count, stored.element_count) == (78, 100)
    assert len(stored.sample) == 5 and all(row["amount"] > 10 for row in stored.sample)
    event = sqlite_project.events.list(kind="quality.suite", limit=1)[0]
    assert event.subject == "features" and event.payload["passed"] is True


def test_validate_request_applies_the_row_checks_that_judge_one_row():
    suite = Suite(
        "req",
        [NotNull("age"), Between("age", min=0, max=120), InSet("country", ["FR", "DE"], severity="warning"),
         Between("income", min=0, mostly=0.9), ZScoreOutliers("score", threshold=3, mean=0.0, std=1.0),
         ZScoreOutliers("score2"), Unique("age")],
    )  # fmt: skip
    rows = [
        {"age": 30, "country": "FR", "income": -1, "score": 0.5, "score2": 99.0},
        {"age": 200, "country": "US", "score": 5.0},
        {"country": "DE"},
    ]
    report = validate_request(suite, rows)
    assert not report.ok and report.rows == 3
    assert [(e["row"], e["check"], e["value"]) for e in report.errors] == [
        (1, "between(age)", 200),
        (1, "zscore_outliers(score)", 5.0),
        (2, "not_null(age)", None),
    ]
    assert [(w["row"], w["value"]) for w in report.warnings] == [(1, "US")]
    assert validate_request(suite, {"age": 40, "score": 1.0}).ok
    with pytest.raises(ValidationError, match=r"row 0: between\(age\) got -3"):
        validate_request(suite, {"age": -3}, raise_on_error=True)


def test_validate_request_names_the_row_column_and_value_of_a_wrong_typed_value():
    """These raised DuckDB's and Arrow's own exceptions (a 500 when served) instead of a ValidationError (a 400)."""
    suite = Suite("req", [InSet("status", ["new", "paid"]), Between("age", min=0, max=120)])
    with pytest.raises(ValidationError, match=r"row 0: column 'status' value 5 cannot be checked by in_set"):
        validate_request(suite, {"status": 5, "age": 3})
    with pytest.raises(ValidationError, match=r"row 1: column 'age' value 'abc' cannot be checked by between"):
        validate_request(suite, [{"status": "new", "age": None}, {"status": "new", "age": "abc"}])
    with pytest.raises(ValidationError, match=r"row 1: column 'age' value 'x' is not of the type"):
        validate_request(suite, [{"age": 1}, {"age": "x"}])
    assert validate_request(suite, {"status": "new", "age": 3}).ok


def test_cli_check_profile_and_history(tmp_path, sqlite_project):
    pq.write_table(ORDERS, tmp_path / "orders.parquet")
    runner = CliRunner()
    out = runner.invoke(quality_cli, ["profile", str(tmp_path / "orders.parquet"), "-o", str(tmp_path / "s.yaml")])
    assert out.exit_code == 0, out.output
    good = runner.invoke(quality_cli, ["check", str(tmp_path / "s.yaml"), str(tmp_path / "orders.parquet")])
    assert good.exit_code == 0, good.output
    bad_data = "SELECT * REPLACE (amount * 10 AS amount) FROM read_parquet('" + str(tmp_path / "orders.parquet") + "')"
    obj = {"project_path": str(sqlite_project.root)}
    bad = runner.invoke(quality_cli, ["check", "--json", "--record", str(tmp_path / "s.yaml"), bad_data], obj=obj)
    assert bad.exit_code == 1
    payload = json.loads(bad.output)
    assert not payload["passed"]
    assert {r["expectation"]["kind"] for r in payload["results"] if not r["passed"]} >= {"between", "distribution"}
    shown = runner.invoke(quality_cli, ["history", "profile"], obj=obj)
    assert shown.exit_code == 0 and "FAILED" in shown.output


def test_cli_history_of_a_suite_without_results_names_the_suites_that_have_some(sqlite_project):
    """A mistyped suite name (`history orderz`) printed an empty table and exited 0."""
    from loopstack.core.errors import NotFoundError

    runner = CliRunner()
    obj = {"project_path": str(sqlite_project.root)}
    none_yet = runner.invoke(quality_cli, ["history", "orders"], obj=obj)
    assert none_yet.exit_code == 1 and isinstance(none_yet.exception, NotFoundError)
    assert "no recorded results of suite 'orders'; no suite has run yet" in str(none_yet.exception)
    listing = runner.invoke(quality_cli, ["history"], obj=obj)
    assert listing.exit_code == 0 and "no suite has run yet" in listing.output
    for name in ("orders", "users", "orders"):
        record(sqlite_project, Suite(name, [NotNull("order_id")]).run(ORDERS))
    typo = runner.invoke(quality_cli, ["history", "orderz"], obj=obj)
    assert typo.exit_code == 1
    assert "no recorded results of suite 'orderz'; suites with history: orders, users" in str(typo.exception)
    shown = runner.invoke(quality_cli, ["history", "orders"], obj=obj)
    assert shown.exit_code == 0 and shown.output.count("orders") >= 2


def test_configure_sets_duckdb_limits_for_later_checks():
    from loopstack.quality import configure
    from loopstack.quality.source import shared_database

    query = "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'threads')"
    defaults = dict(shared_database().execute(query).fetchall())
    try:
        configure(memory_limit="300MB", threads=1)
        settings = dict(shared_database().execute(query).fetchall())
        assert settings["threads"] == "1" and settings["memory_limit"] != defaults["memory_limit"]
        assert Suite("t", [Unique("order_id")]).run(ORDERS).passed
    finally:
        configure()
    assert dict(shared_database().execute(query).fetchall()) == defaults


def test_numpy_scalar_parameters_write_plain_yaml():
    """A bound from ``df.x.min()`` is a NumPy float (a float subclass); YAML could not represent it."""
    import numpy as np

    suite = Suite("s", [Between("x", min=np.float64(0.5), max=np.int64(3)), InSet("c", [np.str_("a")])])
    reloaded = Suite.from_yaml(suite.to_yaml())
    assert reloaded.to_dict() == suite.to_dict()
    assert type(reloaded.to_dict()["expectations"][0]["min"]) is float


def test_profile_of_nanosecond_timestamps_passes_on_its_reference():
    """min/max went through Python datetimes, cut to microseconds, so the range failed on the very same rows."""
    ns = pa.table({"t": pa.array([1_700_000_000_000_000_001, 1_700_000_000_000_000_999], pa.timestamp("ns"))})
    suite = profile(ns)
    assert suite.run(ns).passed and Suite.from_yaml(suite.to_yaml()).run(ns).passed
    later = pa.table({"t": pa.array([1_700_000_000_000_001_000], pa.timestamp("ns"))})
    assert suite.run(later)["between(t)"].unexpected_count == 1


def test_profile_of_an_empty_table_passes_on_it():
    empty = pa.table({"x": pa.array([], pa.int64())})
    assert profile(empty).run(empty).passed


def test_date_and_datetime_bounds_write_yaml_and_read_back():
    """to_yaml refused a date bound ('YAML cannot store'), though YAML writes dates and datetimes."""
    import datetime as dt

    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    suite = Suite("s", [Between("d", min=dt.date(2020, 6, 1)), Between("t", max=aware)])
    reloaded = Suite.from_yaml(suite.to_yaml())
    assert reloaded.to_dict() == suite.to_dict()
    data = {"d": [dt.date(2020, 1, 1), dt.date(2021, 1, 1)], "t": [aware, aware + dt.timedelta(seconds=1)]}
    assert [r.unexpected_count for r in reloaded.run(data).results] == [1, 1]


def test_a_bad_value_deep_in_a_large_request_is_named_after_a_few_tries():
    """The offending row was found by converting one more prefix per row: quadratic in the request's size."""
    import importlib
    from unittest import mock

    gate = importlib.import_module("loopstack.quality.gate")
    suite = Suite("req", [Between("age", min=0, max=120)])
    rows = [{"age": i % 100} for i in range(5000)]
    rows[3777] = {"age": "old"}
    with (mock.patch("pyarrow.array", wraps=pa.array) as conversions,
          pytest.raises(ValidationError, match=r"row 3777: column 'age' value 'old' is not of the type")):
        validate_request(suite, rows)
    assert conversions.call_count < 30
    rows = [{"age": None}] + [{"age": str(i)} for i in range(1, 5000)]
    with (mock.patch.object(gate, "_query_flags", wraps=gate._query_flags) as queries,
          pytest.raises(ValidationError, match=r"row 1: column 'age' value '1' cannot be checked by between")):
        validate_request(suite, rows)
    assert queries.call_count < 30


def test_an_integer_beyond_64_bits_in_a_request_is_named():
    """Arrow raises OverflowError for it, which the request path let through (a 500 when served)."""
    suite = Suite("req", [Between("age", min=0, max=120)])
    for rows in ([{"age": 2**70}], [{"age": 3}, {"age": -(2**63) - 1}]):
        with pytest.raises(ValidationError, match=r"column 'age' value -?\d+ cannot be read \(OverflowError"):
            validate_request(suite, rows)
