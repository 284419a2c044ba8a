"""Online serves what the offline join gives, on every plan, when rows tie on key and times."""

from __future__ import annotations

import functools
import json
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loopstack.features as lf
from loopstack.core.project import Project
from loopstack.features import offline

T0 = datetime(2024, 1, 1)
HOUR = timedelta(hours=1)
DRIVER = lf.Entity(name="driver", join_keys=["driver_id"])
AT = T0 + 10 * HOUR  # after every row's event and created time

# (key, event hour, created hour or None): few values of each, so most rows tie
tied_rows = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1) | st.none()),
                     min_size=1, max_size=30)


def _source(rows: list[Any], created: bool) -> pa.Table:
    columns = {
        "driver_id": pa.array([k for k, _, _ in rows], pa.int64()),
        "event_timestamp": pa.array([T0 + e * HOUR for _, e, _ in rows], pa.timestamp("us")),
        "value": pa.array(range(len(rows)), pa.int64()),  # the row's position: which row won
    }
    if created:
        columns["created"] = pa.array([None if c is None else T0 + c * HOUR for _, _, c in rows], pa.timestamp("us"))
    return pa.table(columns)


def _expected(rows: list[Any], created: bool, key: int) -> int | None:
    """The latest event time, then the latest created time (a null one counts as earliest), then the last row."""
    mine = [(e, (c if c is not None else -1) if created else 0, i) for i, (k, e, c) in enumerate(rows) if k == key]
    return max(mine)[2] if mine else None


def _answers(rows: list[Any], created: bool) -> dict[str, list[Any]]:
    table = _source(rows, created)
    source = lf.TableSource(table, created_timestamp_field="created" if created else None)
    view = lf.FeatureView(name="s", entities=[DRIVER], source=source, schema=[lf.Field(name="value", dtype=lf.Int64)])
    keys = [0, 1, 2]
    entity = pa.table({"driver_id": pa.array(keys, pa.int64()),
                       "event_timestamp": pa.array([AT] * len(keys), pa.timestamp("us"))})
    with tempfile.TemporaryDirectory() as folder:
        project = Project.init(Path(folder) / "p", name="ties")
        try:
            store = project.feature_store
            store.apply([view])
            answers: dict[str, Any] = {
                "sort": store.get_historical_features(entity, ["s:value"], record=False),
                "as_of_known_time": store.get_historical_features(entity, ["s:value"], as_of_known_time=True,
                                                                  record=False),
            }
            with mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", -1):
                answers["hash join"] = store.get_historical_features(entity, ["s:value"], record=False)
            answers = {name: job.to_arrow().column("value").to_pylist() for name, job in answers.items()}
            store.materialize(T0 - HOUR, AT, progress=False)
            answers["online"] = store.get_online_features(["s:value"], [{"driver_id": k} for k in keys],
                                                          now=AT).to_dict()["value"]
        finally:
            project.close()
    return answers


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=tied_rows, created=st.booleans())
def test_every_path_picks_the_same_row_when_rows_tie(rows: list[Any], created: bool) -> None:
    """A full tie goes to the last row in source order: sort plan, hash join, as_of_known_time and online.

    A null created time ranks below every known one, on every path."""
    expected = [_expected(rows, created, key) for key in (0, 1, 2)]
    for path, got in _answers(rows, created).items():
        assert got == expected, path


def test_a_null_created_time_loses_to_a_known_one_online_as_offline() -> None:
    """Materialization read a null created time as the event time, so it beat an earlier known one there only."""
    rows = [(1, 0, None), (1, 0, -1)]  # same event time; the second was created an hour before it
    assert set(map(tuple, _answers(rows, created=True).values())) == {(None, 1, None)}


# (driver, city or None, event hour or None, created hour or None, value or None)
# (few nulls, few values: most keys repeat and many rows tie)
parquet_rows = st.lists(st.tuples(st.sampled_from([None, 0, 1, 2]), st.sampled_from([None, "a", "b"]),
                                  st.sampled_from([None, 0, 1, 2, 3]), st.sampled_from([None, 0, 1, 2]),
                                  st.floats(-5, 5) | st.none()), min_size=2, max_size=40)
window_hours = st.tuples(st.none() | st.integers(-1, 6), st.none() | st.integers(-1, 6))


def _parquet_table(rows: list[Any]) -> pa.Table:
    return pa.table({
        "driver_id": pa.array([r[0] for r in rows], pa.int64()), "city": pa.array([r[1] for r in rows], pa.string()),
        "event_timestamp": pa.array([None if r[2] is None else T0 + r[2] * HOUR for r in rows], pa.timestamp("us")),
        "created": pa.array([None if r[3] is None else T0 + r[3] * HOUR for r in rows], pa.timestamp("us")),
        "value": pa.array([r[4] for r in rows], pa.float64()),
        "label": pa.array([None if r[4] is None else f"v{i}" for i, r in enumerate(rows)], pa.string()),
    })


@functools.cache
def _parquet_store() -> tuple[Any, Path]:
    """One project for every example: a view over one Parquet file (two join keys), rewritten per example."""
    folder = Path(tempfile.mkdtemp())
    pq.write_table(_parquet_table([(1, "a", 0, 0, 1.0)]), folder / "rows.parquet")
    store = Project.init(folder / "p", name="fast").feature_store
    city = lf.Entity(name="city", join_keys=["city"])
    source = lf.FileSource(path=str(folder / "rows.parquet"), created_timestamp_field="created")
    store.apply([DRIVER, city, lf.FeatureView(
        name="trips", entities=[DRIVER, city], source=source,
        schema=[lf.Field(name="value", dtype=lf.Float64), lf.Field(name="label", dtype=lf.String)])])
    return store, folder / "rows.parquet"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=parquet_rows, window=window_hours)
def test_materializing_a_parquet_view_by_the_sort_plan_encodes_what_duckdb_does(rows: list[Any], window: Any) -> None:
    """The fast path picks winners in NumPy; DuckDB's arg_max is the reference, nulls and windows included."""
    from loopstack.features import materialize

    store, path = _parquet_store()
    pq.write_table(_parquet_table(rows), path, row_group_size=7)
    start, end = (None if h is None else int((T0 + h * HOUR).timestamp() * 1e6) for h in window)
    view = store.catalog.view("trips")
    with store.engine.session() as session:
        assert offline.latest_parquet_rows(session, store.catalog, view, start, end) is not None
    fast = materialize.encoded_rows(store, view, start, end)
    with mock.patch.object(offline, "latest_parquet_rows", return_value=None):
        reference = materialize.encoded_rows(store, view, start, end)
    # Values compare as numbers: DuckDB's arg_max over a struct turns -0.0 into 0.0, the fast path keeps -0.0
    # (as the offline join does); every other difference, a key, a time or a value, fails.
    assert [(r["key"], r["event_ts"], r["created_ts"], json.loads(r["value"])) for r in fast.to_pylist()] == \
        [(r["key"], r["event_ts"], r["created_ts"], json.loads(r["value"])) for r in reference.to_pylist()]
