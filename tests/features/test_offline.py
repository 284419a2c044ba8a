"""Point-in-time retrieval: properties against a brute-force reference, and hand-made edge cases."""

from __future__ import annotations

import functools
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loopstack as ls
import loopstack.features as lf
from loopstack.core.errors import ValidationError
from loopstack.core.project import Project
from loopstack.features import offline
from loopstack.features.catalog import Catalog
from loopstack.features.engine import Engine
from loopstack.features.offline import _overlapping_groups, historical

T0 = datetime(2024, 1, 1)
HOUR = 3_600_000_000
US = timedelta(microseconds=1)
DRIVER = lf.Entity(name="driver", join_keys=["driver_id"])


def _view(table: pa.Table, ttl: timedelta | None = None, created: bool = True, name: str = "stats",
          schema: list[lf.Field] | None = None) -> lf.FeatureView:
    source = lf.TableSource(table, created_timestamp_field="created" if created else None)
    return lf.FeatureView(name=name, entities=[DRIVER], ttl=ttl, source=source,
                          schema=schema or [lf.Field(name="value", dtype=lf.Int64)])


def _join(views: list[lf.FeatureView], entity: pa.Table, refs: list[str], as_of: bool = False,
          full: bool = False) -> pa.Table:
    catalog = Catalog(views)
    with _engine().session() as session:
        return historical(session, catalog, catalog.resolve(refs, full), entity, "event_timestamp", as_of)


@functools.cache
def _engine() -> Engine:
    return Engine(Path("."))


# -- properties ---------------------------------------------------------------------------
feature_rows = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 30), st.integers(-3, 6), st.integers(-1000, 1000) | st.none()),
    max_size=40,
)
entity_rows = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 40)), min_size=1, max_size=25)


def _tables(rows: list[Any], entities: list[Any]) -> tuple[pa.Table, pa.Table, list[dict[str, Any]]]:
    # created = event time + offset, plus the row index in microseconds so no two rows tie on both
    records = [{"driver_id": k, "ts": t * HOUR, "created": (t + off) * HOUR + i, "value": v}
               for i, (k, t, off, v) in enumerate(rows)]
    table = pa.table({
        "driver_id": pa.array([r["driver_id"] for r in records], pa.int64()),
        "event_timestamp": pa.array([r["ts"] for r in records], pa.int64()).cast(pa.timestamp("us")),
        "created": pa.array([r["created"] for r in records], pa.int64()).cast(pa.timestamp("us")),
        "value": pa.array([r["value"] for r in records], pa.int64()),
    })
    entity = pa.table({
        "driver_id": pa.array([k for k, _ in entities], pa.int64()),
        "event_timestamp": pa.array([t * HOUR for _, t in entities], pa.int64()).cast(pa.timestamp("us")),
    })
    return table, entity, records


def _reference(records: list[dict[str, Any]], key: int, at: int, ttl: int | None, as_of: bool) -> Any:
    valid = [r for r in records if r["driver_id"] == key and r["ts"] <= at
             and (ttl is None or r["ts"] >= at - ttl) and (not as_of or r["created"] <= at)]
    if not valid:
        return None
    return max(valid, key=lambda r: (r["ts"], r["created"]))


def _as_parquet(table: pa.Table, unit: str) -> lf.FileSource:
    """`table` written to a Parquet file of 4-row groups, its times stored in `unit`."""
    folder = Path(tempfile.mkdtemp(prefix="loopstack-pit-"))
    if unit == "date":
        kind: pa.DataType = pa.date32()
    else:
        kind = pa.timestamp(unit, tz="UTC" if unit == "ms" else None)
    stored = table.set_column(1, "event_timestamp", table.column("event_timestamp").cast(kind, safe=False))
    pq.write_table(stored, folder / "stats.parquet", row_group_size=4)
    return lf.FileSource(path=str(folder / "stats.parquet"), created_timestamp_field="created")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=feature_rows, entities=entity_rows, ttl_hours=st.none() | st.integers(1, 12), as_of=st.booleans(),
       stored=st.sampled_from(["arrow", "us", "ns", "ms"]), in_duckdb=st.booleans())
def test_point_in_time_matches_brute_force(rows: list[Any], entities: list[Any], ttl_hours: int | None,
                                           as_of: bool, stored: str, in_duckdb: bool) -> None:
    """Both plans (the sort, and the hash join kept for as_of_known_time and very large views), over an
    Arrow table (read by DuckDB) and a Parquet file (read by Arrow, by row group)."""
    table, entity, records = _tables(rows, entities)
    ttl = None if ttl_hours is None else timedelta(hours=ttl_hours)
    view = _view(table, ttl)
    if stored != "arrow":
        view = lf.FeatureView(name="stats", entities=[DRIVER], ttl=ttl, source=_as_parquet(table, stored),
                              schema=[lf.Field(name="value", dtype=lf.Int64)])
    with mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", -1 if in_duckdb else offline.SORT_PLAN_MAX_ROWS):
        got = _join([view], entity, ["stats:value"], as_of=as_of).column("value").to_pylist()
    ttl_us = None if ttl_hours is None else ttl_hours * HOUR
    for (key, t), value in zip(entities, got, strict=True):
        expected = _reference(records, key, t * HOUR, ttl_us, as_of)
        assert value == (expected["value"] if expected else None)
        # the properties the reference encodes, stated on their own:
        chosen = [r for r in records if r["driver_id"] == key and r is expected]
        for r in chosen:
            assert r["ts"] <= t * HOUR  # never a value from the future
            assert ttl_us is None or t * HOUR - r["ts"] <= ttl_us  # never older than ttl
            assert not as_of or r["created"] <= t * HOUR  # as_of_known_time sees nothing created later
            rivals = [o for o in records if o["driver_id"] == key and o["ts"] == r["ts"]
                      and (not as_of or o["created"] <= t * HOUR)]
            assert r["created"] == max(o["created"] for o in rivals)  # ties go to the larger created


CUSTOMER = lf.Entity(name="customer", join_keys=["customer_id"])
keyed_rows = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 8), st.integers(-2, 4),
                                st.integers(-100, 100) | st.none()), max_size=25)
keyed_entities = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 10)), min_size=1, max_size=15)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(driver=keyed_rows, customer=keyed_rows, both=keyed_rows, entities=keyed_entities,
       ttls=st.lists(st.none() | st.integers(1, 4), min_size=3, max_size=3), as_of=st.booleans(),
       in_duckdb=st.booleans())
def test_views_of_different_entities_in_one_call_match_brute_force(
        driver: list[Any], customer: list[Any], both: list[Any], entities: list[Any], ttls: list[int | None],
        as_of: bool, in_duckdb: bool) -> None:
    """Three views keyed by driver (int), customer (text) and both, joined at once; duplicate entity rows and
    ties on event time (any of the tied rows with the largest created time is right) included."""
    specs = {"drv": (driver, ["driver_id"], [DRIVER]), "cus": (customer, ["customer_id"], [CUSTOMER]),
             "both": (both, ["driver_id", "customer_id"], [DRIVER, CUSTOMER])}
    views, records = [], {}
    for (name, (rows, keys, owners)), ttl in zip(specs.items(), ttls, strict=True):
        records[name] = [{"driver_id": d, "customer_id": str(c), "ts": t * HOUR, "created": (t + off) * HOUR,
                          "value": v} for d, c, t, off, v in rows]
        table = pa.table({**{k: pa.array([r[k] for r in records[name]], pa.string() if k == "customer_id"
                                         else pa.int64()) for k in keys},
                          "event_timestamp": pa.array([r["ts"] for r in records[name]], pa.timestamp("us")),
                          "created": pa.array([r["created"] for r in records[name]], pa.timestamp("us")),
                          "value": pa.array([r["value"] for r in records[name]], pa.int64())})
        views.append(lf.FeatureView(name=name, entities=owners, ttl=None if ttl is None else timedelta(hours=ttl),
                                    source=lf.TableSource(table, created_timestamp_field="created"),
                                    schema=[lf.Field(name="value", dtype=lf.Int64)]))
    entity = pa.table({"driver_id": pa.array([d for d, _, _ in entities], pa.int64()),
                       "customer_id": [str(c) for _, c, _ in entities],
                       "event_timestamp": pa.array([t * HOUR for _, _, t in entities], pa.timestamp("us"))})
    with mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", -1 if in_duckdb else offline.SORT_PLAN_MAX_ROWS):
        got = _join(views, entity, ["drv:value", "cus:value", "both:value"], as_of=as_of, full=True)
    for (name, (_, keys, _)), ttl in zip(specs.items(), ttls, strict=True):
        for (d, c, t), value in zip(entities, got.column(f"{name}__value").to_pylist(), strict=True):
            at, wanted = t * HOUR, {"driver_id": d, "customer_id": str(c)}
            valid = [r for r in records[name] if all(r[k] == wanted[k] for k in keys) and r["ts"] <= at
                     and (ttl is None or r["ts"] >= at - ttl * HOUR) and (not as_of or r["created"] <= at)]
            latest = max(((r["ts"], r["created"]) for r in valid), default=None)
            assert value in ({r["value"] for r in valid if (r["ts"], r["created"]) == latest} or {None})


# -- hand-made edge cases -------------------------------------------------------------------
def _rows(*rows: tuple[int, datetime, datetime, Any]) -> pa.Table:
    return pa.table({
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us")),
        "created": pa.array([r[2] for r in rows], pa.timestamp("us")),
        "value": pa.array([r[3] for r in rows], pa.int64()),
    })


def _entity(*rows: tuple[int, Any]) -> pa.Table:
    return pa.table({"driver_id": pa.array([r[0] for r in rows], pa.int64()),
                     "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us"))})


def test_equal_event_times_take_the_later_created_row_whatever_the_file_order() -> None:
    table = _rows((1, T0, T0 + timedelta(hours=2), 20), (1, T0, T0 + timedelta(hours=1), 10),
                  (1, T0, T0 + timedelta(hours=3), 30), (1, T0, T0, 0))
    got = _join([_view(table)], _entity((1, T0 + timedelta(hours=5))), ["stats:value"])
    assert got.column("value").to_pylist() == [30]


@pytest.mark.parametrize("ttl", [None, timedelta(days=1)])
def test_duplicate_feature_rows_never_duplicate_entity_rows(ttl: timedelta | None) -> None:
    table = _rows((1, T0, T0, 5), (1, T0, T0, 5), (1, T0, T0, 5), (2, T0, T0, 6), (2, T0, T0, 6))
    got = _join([_view(table, ttl)], _entity((1, T0), (2, T0 + US), (1, T0)), ["stats:value"])
    assert got.column("value").to_pylist() == [5, 6, 5]


def test_ttl_boundary_is_inclusive() -> None:
    ttl = timedelta(hours=2)
    table = _rows((1, T0, T0, 7))
    entity = _entity((1, T0 + ttl), (1, T0 + ttl + US), (1, T0 - US), (1, T0))
    got = _join([_view(table, ttl)], entity, ["stats:value"]).column("value").to_pylist()
    assert got == [7, None, None, 7]


def test_missing_entities_and_duplicates_keep_every_row_in_order() -> None:
    table = _rows((1, T0, T0, 1), (2, T0, T0, 2))
    entity = _entity((2, T0), (9, T0), (1, T0), (2, T0), (1, T0 - US), (2, T0))
    got = _join([_view(table)], entity, ["stats:value"]).column("value").to_pylist()
    assert got == [2, None, 1, 2, None, 2]


def test_latest_row_with_null_feature_wins_over_older_value() -> None:
    table = _rows((1, T0, T0, 5), (1, T0 + timedelta(hours=1), T0, None))
    got = _join([_view(table)], _entity((1, T0 + timedelta(hours=2))), ["stats:value"])
    assert got.column("value").to_pylist() == [None]


def test_as_of_known_time_ignores_late_corrections() -> None:
    # the value for T0 was corrected at T0+10h; a training row at T0+1h must see the original
    table = _rows((1, T0, T0, 100), (1, T0, T0 + timedelta(hours=10), 999))
    entity = _entity((1, T0 + timedelta(hours=1)), (1, T0 + timedelta(hours=11)))
    assert _join([_view(table)], entity, ["stats:value"]).column("value").to_pylist() == [999, 999]
    assert _join([_view(table)], entity, ["stats:value"], as_of=True).column("value").to_pylist() == [100, 999]


def test_mixed_timezones_are_compared_as_utc(tmp_path: Path) -> None:
    # the source is stored with a zone, the entity frame in another zone and naive (UTC)
    ts = pd.Timestamp("2024-01-01 10:00", tz="Europe/Berlin")  # 09:00 UTC
    source = pa.table({"driver_id": [1], "event_timestamp": pa.array([ts]), "created": pa.array([ts]),
                       "value": pa.array([1], pa.int64())})
    pq.write_table(source, tmp_path / "s.parquet")
    view = lf.FeatureView(name="stats", entities=[DRIVER], schema=[lf.Field(name="value", dtype=lf.Int64)],
                          source=lf.FileSource(path=str(tmp_path / "s.parquet"), created_timestamp_field="created"))
    new_york = pd.to_datetime(["2024-01-01 03:59:59", "2024-01-01 04:00:00"]).tz_localize("America/New_York")
    aware = pa.table({"driver_id": [1, 1], "event_timestamp": pa.array(new_york)})
    naive = _entity((1, datetime(2024, 1, 1, 8, 59, 59)), (1, datetime(2024, 1, 1, 9)))
    assert _join([view], aware, ["stats:value"]).column("value").to_pylist() == [None, 1]
    assert _join([view], naive, ["stats:value"]).column("value").to_pylist() == [None, 1]


def test_views_joined_in_one_call_with_full_names() -> None:
    a = _view(_rows((1, T0, T0, 1)), name="a")
    b = _view(_rows((1, T0 + timedelta(hours=1), T0, 2)), name="b")
    entity = _entity((1, T0), (1, T0 + timedelta(hours=1)))
    got = _join([a, b], entity, ["a:value", "b:value"], full=True)
    assert got.to_pydict() == {"a__value": [1, 1], "b__value": [None, 2]}
    with pytest.raises(ValidationError, match="full_feature_names=True"):
        _join([a, b], entity, ["a:value", "b:value"])


def test_entity_frame_errors_name_the_missing_column() -> None:
    table = _rows((1, T0, T0, 1))
    with pytest.raises(ValidationError, match="join key"):
        _join([_view(table)], pa.table({"event_timestamp": pa.array([T0])}), ["stats:value"])
    with pytest.raises(ValidationError, match="not a timestamp"):
        _join([_view(table)], pa.table({"driver_id": [1], "event_timestamp": ["2024"]}), ["stats:value"])


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns", "ns-utc", "date"])
def test_parquet_read_by_arrow_equals_duckdb_reading_the_same_table(tmp_path: Path, unit: str) -> None:
    """Arrow's reading of a Parquet file (times in any unit) gives what DuckDB gives for the same rows.

    Nanoseconds before 1970 are floored to microseconds, as DuckDB's epoch_us does. ``ns-utc`` is a
    zoned nanosecond column (pandas 2's default for aware times), DuckDB's TIMESTAMPTZ_NS.
    """
    ns = [-1_500, 1_500, 3_600 * 10**9 - 1, 86_400 * 10**9, 2 * 86_400 * 10**9 + 999]
    event = pa.array(ns, pa.int64()).cast(pa.timestamp("ns"))
    if unit == "date":
        event = event.cast(pa.date32())
    elif unit == "ns-utc":
        event = event.cast(pa.timestamp("ns", tz="UTC"))
    else:
        event = event.cast(pa.timestamp(unit), safe=False)
    table = pa.table({"driver_id": pa.array([1, 1, 2, 2, 1], pa.int32()), "event_timestamp": event,
                      "created": event, "value": pa.array([1, 2, 3, None, 5], pa.int32())})
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=2)
    entity = _entity(*[(k, datetime(1970, 1, 1) + timedelta(microseconds=t // 1000) + delta)
                       for k in (1, 2, 3) for t in ns for delta in (-US, timedelta(0), US)])
    from_parquet = lf.FileSource(path=str(tmp_path / "s.parquet"), created_timestamp_field="created")
    declared = [lf.Field(name="value", dtype=lf.Int64)]
    for ttl in (None, timedelta(hours=1)):
        views = [lf.FeatureView(name="stats", entities=[DRIVER], ttl=ttl, source=source, schema=declared)
                 for source in (from_parquet, lf.TableSource(table, created_timestamp_field="created"))]
        by_arrow, by_duckdb = (_join([view], entity, ["stats:value"]) for view in views)
        assert by_arrow.schema.field("value").type == pa.int64()  # cast to the declared type
        assert by_arrow.column("value").to_pylist() == by_duckdb.column("value").to_pylist()
    assert any(v is not None for v in by_arrow.column("value").to_pylist())


@pytest.mark.parametrize("stored", ["arrow", "parquet"])
def test_an_empty_entity_frame_gives_empty_typed_columns(tmp_path: Path, stored: str) -> None:
    table = _rows((1, T0, T0, 1))
    source: lf.Source = lf.TableSource(table, created_timestamp_field="created")
    if stored == "parquet":
        pq.write_table(table, tmp_path / "s.parquet")
        source = lf.FileSource(path=str(tmp_path / "s.parquet"), created_timestamp_field="created")
    view = lf.FeatureView(name="stats", entities=[DRIVER], source=source,
                          schema=[lf.Field(name="value", dtype=lf.Int64)])
    got = _join([view], _entity(), ["stats:value"])
    assert got.num_rows == 0 and got.schema.field("value").type == pa.int64()


def test_parquet_columns_named_in_another_case_still_join(tmp_path: Path) -> None:
    # DuckDB matches column names case-insensitively, Arrow does not: such a file takes the DuckDB path
    table = pa.table({"Driver_ID": [1], "Event_Timestamp": pa.array([T0], pa.timestamp("us")), "VALUE": [4]})
    pq.write_table(table, tmp_path / "s.parquet")
    view = lf.FeatureView(name="stats", entities=[DRIVER], schema=[lf.Field(name="value", dtype=lf.Int64)],
                          source=lf.FileSource(path=str(tmp_path / "s.parquet")))
    assert _join([view], _entity((1, T0)), ["stats:value"]).column("value").to_pylist() == [4]


@pytest.mark.parametrize("kind", [pa.timestamp("s"), pa.timestamp("ms", tz="UTC"), pa.timestamp("ns"), pa.date32()])
def test_row_groups_are_pruned_in_the_unit_the_statistics_are_stored_in(tmp_path: Path, kind: pa.DataType) -> None:
    # Arrow's seconds are stored as milliseconds: the statistics are in the Parquet column's own unit
    days = pa.array([T0 + timedelta(days=d) for d in range(10)], pa.timestamp("us"))
    pq.write_table(pa.table({"event_timestamp": days.cast(kind)}), tmp_path / "s.parquet", row_group_size=1)
    start = int((T0 + timedelta(days=9) - datetime(1970, 1, 1)).total_seconds() * 1e6)
    groups = _overlapping_groups(pq.ParquetFile(tmp_path / "s.parquet"), "event_timestamp",
                                 {"min": start, "max": start + 3600 * 10**6}, 86_400 * 10**6)
    assert groups == [8, 9]


def test_row_groups_outside_every_window_are_not_needed(tmp_path: Path) -> None:
    # one row group per day; entity rows on day 9 with a 1-day ttl can only use days 8 and 9
    days = [T0 + timedelta(days=d) for d in range(10)]
    table = pa.table({"driver_id": [1] * 10, "event_timestamp": pa.array(days, pa.timestamp("us")),
                      "value": list(range(10))})
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=1)
    parquet = pq.ParquetFile(tmp_path / "s.parquet")
    start = int((days[9] - datetime(1970, 1, 1)).total_seconds() * 1e6)
    groups = _overlapping_groups(parquet, "event_timestamp", {"min": start, "max": start + 3600 * 10**6},
                                 86_400 * 10**6)
    assert groups == [8, 9]
    view = lf.FeatureView(name="stats", entities=[DRIVER], ttl=timedelta(days=1), schema=[lf.Field(
        name="value", dtype=lf.Int64)], source=lf.FileSource(path=str(tmp_path / "s.parquet")))
    got = _join([view], _entity((1, days[9]), (1, days[9] - US), (1, days[0] - US)), ["stats:value"])
    assert got.column("value").to_pylist() == [9, 8, None]


# -- through the store: pandas, extra columns, nullable ints, range mode, lineage --------------
@pytest.fixture
def applied(project: Project) -> Project:
    table = _rows((1, T0, T0, 10), (2, T0, T0, 20), (1, T0 + timedelta(days=1), T0 + timedelta(days=1), 11))
    rates = pa.table({"driver_id": [1, 2], "event_timestamp": pa.array([T0, T0], pa.timestamp("us")),
                      "rate": [0.5, 0.25], "label": ["a", "b"]})
    other = lf.FeatureView(name="rates", entities=[DRIVER], source=lf.TableSource(rates),
                           schema=[lf.Field(name="rate", dtype=lf.Float64), lf.Field(name="label", dtype=lf.String)])

    @lf.on_demand_feature_view(inputs=["rates:rate", "stats:value"], schema=[lf.Field(name="score", dtype=lf.Float64)],
                               request_schema=[lf.Field(name="boost", dtype=lf.Float64)])
    def scored(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"score": df["rate"] * df["value"] + df["boost"]})

    project.feature_store.apply([_view(table, ttl=timedelta(days=2)), other, scored])
    return project


def test_pandas_result_keeps_entity_columns_index_and_nullable_ints(applied: Project) -> None:
    entity = pd.DataFrame({"driver_id": [2, 1, 3, 1], "note": ["x", "y", "z", "w"], "boost": [0.0, 1.0, 0.0, 0.0],
                           "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02", "2023-12-31"])},
                          index=[10, 11, 12, 13])
    out = applied.feature_store.get_historical_features(
        entity, ["stats:value", "rates:label", "scored:score"]).to_pandas()
    assert list(out.index) == [10, 11, 12, 13]
    assert list(out.columns) == ["driver_id", "note", "boost", "event_timestamp", "value", "label", "score"]
    assert str(out["value"].dtype) == "Int64"
    assert out["value"].tolist()[:2] == [20, 11] and out["value"].isna().tolist() == [False, False, True, True]
    assert out["score"].tolist()[:2] == [5.0, 6.5]
    assert out["note"].tolist() == ["x", "y", "z", "w"]


def test_pandas_result_with_a_repeated_index_is_a_new_frame(applied: Project) -> None:
    entity = pd.DataFrame({"driver_id": [2, 1], "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"])},
                          index=[7, 7])
    store = applied.feature_store
    out = store.get_historical_features(entity, ["stats:value"]).to_pandas()
    assert list(out.index) == [7, 7] and out["value"].tolist() == [20, 11]
    out.loc[:, "driver_id"] = 0
    assert entity["driver_id"].tolist() == [2, 1] and list(entity.columns) == ["driver_id", "event_timestamp"]
    with pytest.raises(ValidationError, match="already has a column 'value'"):
        store.get_historical_features(entity.assign(value=1), ["stats:value"]).to_pandas()


def test_range_mode_returns_every_entity_event_in_range(applied: Project) -> None:
    job = applied.feature_store.get_historical_features(features=["stats:value", "rates:rate"],
                                                        start=T0, end=T0 + timedelta(days=1))
    got = job.to_arrow().to_pydict()
    assert got["driver_id"] == [1, 2, 1]
    assert got["value"] == [10, 20, 11]
    assert got["rate"] == [0.5, 0.25, 0.5]


def test_result_is_a_dataset_version_linked_to_the_run(applied: Project, tmp_path: Path) -> None:
    entity = _entity((1, T0), (2, T0))
    store = applied.feature_store
    with ls.start_run(project=applied) as run:
        job = store.get_historical_features(entity, ["stats:value"])
        job.to_parquet(tmp_path / "train.parquet")
    assert pq.read_table(tmp_path / "train.parquet").column("value").to_pylist() == [10, 20]
    inputs = ls.Client(applied).get_run(run.id).inputs
    assert [i["digest"] for i in inputs] == [job.digest]
    again = store.get_historical_features(entity, ["stats:value"])
    again.to_arrow()
    assert again.digest == job.digest  # same inputs, same version
    changed = store.get_historical_features(_entity((1, T0)), ["stats:value"])
    changed.to_arrow()
    assert changed.digest != job.digest
    table = applied.db.table("feature_datasets")
    with applied.db.read() as connection:
        row = connection.execute(table.select().where(table.c.digest == job.digest)).mappings().one()
    assert row["features"] == ["stats:value"] and set(row["sources"]) == {"stats"}


# -- inputs where the sort plan and the hash join once disagreed (or one of them failed) ------------
@pytest.mark.parametrize("in_duckdb", [False, True])
def test_a_null_entity_time_matches_nothing_and_leaves_the_other_rows_exact(in_duckdb: bool) -> None:
    # a null made the entity times floats; keys x a 30-year span then packed past 2**53 and lost microseconds
    keys, late = list(range(100)), 10**15
    table = pa.table({"driver_id": pa.array(keys * 2, pa.int64()),
                      "event_timestamp": pa.array([0] * 100 + [late] * 100, pa.int64()).cast(pa.timestamp("us")),
                      "value": pa.array(range(200), pa.int64())})
    entity = pa.table({"driver_id": pa.array([*keys, *keys, 0], pa.int64()),
                       "event_timestamp": pa.array([late - 1] * 100 + [late] * 100 + [None]).cast(pa.timestamp("us"))})
    with mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", -1 if in_duckdb else offline.SORT_PLAN_MAX_ROWS):
        got = _join([_view(table, created=False)], entity, ["stats:value"]).column("value").to_pylist()
    assert got == [*keys, *(k + 100 for k in keys), None]


@pytest.mark.parametrize("as_of", [False, True])
def test_event_times_before_1970(as_of: bool) -> None:
    # the hash join ordered rows by (event << 64) + created, which DuckDB refuses for a negative event time
    epoch = datetime(1970, 1, 1)
    table = _rows((1, epoch - timedelta(days=2), epoch - timedelta(days=2), 1),
                  (1, epoch - timedelta(days=1), epoch - timedelta(days=3), 2),
                  (1, epoch - timedelta(days=1), epoch - timedelta(days=4), 3))
    entity = _entity((1, epoch - timedelta(days=3)), (1, epoch - timedelta(hours=36)), (1, epoch))
    got = _join([_view(table)], entity, ["stats:value"], as_of=as_of).column("value").to_pylist()
    assert got == [None, 1, 2]


@pytest.mark.parametrize("in_duckdb", [False, True])
def test_a_key_that_does_not_convert_exactly_matches_no_entity(in_duckdb: bool) -> None:
    # TRY_CAST rounded 2.5 to driver 2 and read true as driver 1, joining another entity's features
    table = _rows((1, T0, T0, 10), (2, T0, T0, 20))
    floats = pa.table({"driver_id": [2.5, 2.0, 0.5, None], "event_timestamp": pa.array([T0] * 4, pa.timestamp("us"))})
    flags = pa.table({"driver_id": [True], "event_timestamp": pa.array([T0], pa.timestamp("us"))})
    with mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", -1 if in_duckdb else offline.SORT_PLAN_MAX_ROWS):
        assert _join([_view(table)], floats, ["stats:value"]).column("value").to_pylist() == [None, 20, None, None]
        assert _join([_view(table)], flags, ["stats:value"]).column("value").to_pylist() == [None]


@pytest.mark.parametrize("in_duckdb", [False, True])
def test_text_matches_an_integer_key_only_as_the_integers_own_spelling(in_duckdb: bool) -> None:
    """As online, where the stored key is the integer's text: '01' or '+1' never matched there."""
    table = _rows((1, T0, T0, 10), (-2, T0, T0, 20))
    texts = ["1", "-2", "01", " 1", "1 ", "+1", "1.0", "-02", None]
    entity = pa.table({"driver_id": pa.array(texts, pa.string()),
                       "event_timestamp": pa.array([T0] * len(texts), pa.timestamp("us"))})
    with mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", -1 if in_duckdb else offline.SORT_PLAN_MAX_ROWS):
        got = _join([_view(table)], entity, ["stats:value"]).column("value").to_pylist()
    assert got == [10, 20] + [None] * 7


def test_parquet_columns_that_differ_only_by_case_resolve_as_duckdb_does(tmp_path: Path) -> None:
    # DuckDB binds `value` to the first of VALUE / value (the second becomes value_1); Arrow would take `value`
    table = pa.table({"driver_id": [1], "event_timestamp": pa.array([T0], pa.timestamp("us")),
                      "VALUE": [4], "value": [40]})
    pq.write_table(table, tmp_path / "s.parquet")
    view = lf.FeatureView(name="stats", entities=[DRIVER], schema=[lf.Field(name="value", dtype=lf.Int64)],
                          source=lf.FileSource(path=str(tmp_path / "s.parquet")))
    for in_duckdb in (False, True):
        with mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", -1 if in_duckdb else offline.SORT_PLAN_MAX_ROWS):
            assert _join([view], _entity((1, T0)), ["stats:value"]).column("value").to_pylist() == [4]


def test_a_feature_may_be_the_join_key_itself() -> None:
    table = _rows((1, T0, T0, 10), (2, T0, T0, 20))
    view = _view(table, schema=[lf.Field(name="driver_id", dtype=lf.Int64), lf.Field(name="value", dtype=lf.Int64)])
    got = _join([view], _entity((2, T0), (3, T0)), ["stats:driver_id", "stats:value"])
    assert got.to_pydict() == {"driver_id": [2, None], "value": [20, None]}


def test_nanosecond_entity_times_before_1970_never_see_a_later_row() -> None:
    # the source's -1000 ns is -1 µs; an entity row at -1500 ns (-1.5 µs) must floor to -2 µs, not truncate to -1
    ns = pa.array([-1000], pa.int64()).cast(pa.timestamp("ns"))
    table = pa.table({"driver_id": [1], "event_timestamp": ns, "created": ns, "value": pa.array([1], pa.int64())})
    entity = pa.table({"driver_id": [1, 1, 1],
                       "event_timestamp": pa.array([-1500, -1000, -999], pa.int64()).cast(pa.timestamp("ns"))})
    for as_of in (False, True):
        got = _join([_view(table)], entity, ["stats:value"], as_of=as_of)
        assert got.column("value").to_pylist() == [None, 1, 1]


def test_zoned_nanosecond_times_from_pandas_2_apply_join_and_materialize(tmp_path: Path) -> None:
    # pandas 2 stores aware times as datetime64[ns, tz]: DuckDB reads them as TIMESTAMPTZ_NS
    times = pd.to_datetime(["2024-01-01 00:00:00.000001500", "2024-01-02 00:00:00", "2024-01-01 00:00:00"],
                           format="ISO8601").tz_localize("UTC")
    frame = pd.DataFrame({"driver_id": [1, 1, 2], "event_timestamp": times.as_unit("ns"), "value": [10, 11, 20]})
    frame.to_parquet(tmp_path / "s.parquet")
    project = Project.init(tmp_path / "p", name="p")
    store = project.feature_store
    for source in (lf.FileSource(path=str(tmp_path / "s.parquet")), lf.TableSource(frame)):
        store.apply([lf.FeatureView(name="v", entities=[DRIVER], source=source,
                                    schema=[lf.Field(name="value", dtype=lf.Int64)])])
        entity = pd.DataFrame({"driver_id": [1, 1, 2], "event_timestamp": pd.to_datetime(
            ["2024-01-01 00:00:00", "2024-01-01 00:00:00.000001", "2024-01-03"], format="ISO8601")})
        got = store.get_historical_features(entity, ["v:value"]).to_arrow().column("value").to_pylist()
        assert got == [None, 10, 20]  # the row at 1.5 µs counts as 1 µs (floored, as naive nanoseconds are)
        store.materialize(T0, T0 + timedelta(days=3), progress=False)
        assert store.get_online_features(["v:value"], [{"driver_id": 1}]).to_dict()["value"] == [11]
    project.close()


# -- which plan: the sort plan holds a view's rows in memory, so large sources stay in DuckDB ---------------
def _csv_source(table: pa.Table) -> lf.FileSource:
    folder = Path(tempfile.mkdtemp(prefix="loopstack-pit-csv-"))
    table.to_pandas().to_csv(folder / "stats.csv", index=False)
    return lf.FileSource(path=str(folder / "stats.csv"), created_timestamp_field="created")


def test_stored_rows_of_csv_and_sql_sources(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_text("a,b\n1,2\n3,4")  # no newline at the end
    big = tmp_path / "big.csv"
    big.write_text("a,b\n" + "".join(f"{i:06d},{i * 7 % 1000:03d}\n" for i in range(300_000)))
    assert big.stat().st_size > 2 << 20  # past the 1 MiB sample: estimated
    with Engine(tmp_path).session() as session:
        assert offline._stored_rows(session, lf.FileSource(path=str(small))) == 2
        estimate = offline._stored_rows(session, lf.FileSource(path=str(big)))
        assert abs(estimate - 300_000) < 0.05 * 300_000
        both = lf.SqlSource(query=f"SELECT * FROM read_csv('{big}') UNION ALL SELECT * FROM read_csv('{small}')")
        assert offline._stored_rows(session, both) == 300_002


def test_stored_rows_of_a_gzipped_csv_count_its_decompressed_lines(tmp_path: Path) -> None:
    # the newlines of the compressed bytes were counted: hundreds of times too few rows, so a huge .csv.gz
    # passed the in-memory limit of the sort plan
    import gzip

    small = tmp_path / "small.csv.gz"
    small.write_bytes(gzip.compress(b"a,b\n1,2\n3,4\n") + gzip.compress(b"5,6"))  # two members, no final newline
    big = tmp_path / "big.csv.gz"
    with gzip.open(big, "wt") as file:
        file.write("a,b\n" + "".join(f"{i:06d},{i * 7 % 1000:03d}\n" for i in range(300_000)))
    with Engine(tmp_path).session() as session:
        assert offline._stored_rows(session, lf.FileSource(path=str(small))) == 3
        estimate = offline._stored_rows(session, lf.FileSource(path=str(big)))
        assert abs(estimate - 300_000) < 0.05 * 300_000
    damaged = tmp_path / "damaged.csv.gz"
    damaged.write_bytes(big.read_bytes()[:1000] + b"\0" * 1000)
    # only a plan's estimate: it must not raise (it did: a zlib error at plan time); DuckDB refuses the file when
    # it is read. Nothing of it decompresses to whole lines, so the estimate is 0 rows.
    assert offline._csv_rows(damaged) == 0


@pytest.mark.parametrize("kind", ["csv", "sql"])
def test_a_source_over_the_limit_is_joined_in_duckdb(kind: str) -> None:
    rows = [(k, t, 0, k * 100 + t) for k in range(3) for t in range(0, 30, 3)]
    table, entity, records = _tables(rows, [(k, t) for k in range(4) for t in (2, 11, 40)])
    source = _csv_source(table)
    if kind == "sql":
        source = lf.SqlSource(query=f"SELECT * FROM read_csv('{source.path}')", created_timestamp_field="created")
    view = lf.FeatureView(name="stats", entities=[DRIVER], source=source,
                          schema=[lf.Field(name="value", dtype=lf.Int64)])
    answers = {}
    for limit in (len(rows), len(rows) - 1):  # at the limit: the sort plan; one row over: DuckDB
        sort_merge = mock.Mock(wraps=offline._sort_merge)
        with (mock.patch.object(offline, "SORT_PLAN_MAX_ROWS", limit),
              mock.patch.object(offline, "_sort_merge", sort_merge)):
            answers[limit] = _join([view], entity, ["stats:value"]).column("value").to_pylist()
        assert sort_merge.called == (limit == len(rows))
    expected = [(_reference(records, k, t * HOUR, None, False) or {}).get("value")
                for k in range(4) for t in (2, 11, 40)]
    assert answers[len(rows)] == answers[len(rows) - 1] == expected


def test_picked_rows_keep_every_column_type_and_turn_missing_ones_null() -> None:
    """The gather takes row 0 for a missing row and nulls it after: every Arrow type must survive that."""
    import numpy as np

    table = pa.table({
        "int": pa.array([1, None, 3, 4], pa.int64()), "text": pa.array(["a", "b", None, "d"]),
        "category": pa.array(["x", "y", "x", None]).dictionary_encode(), "list": pa.array([[1], [], None, [2, 3]]),
        "struct": pa.array([{"a": 1}, None, {"a": 3}, {"a": 4}]),
        "time": pa.array([1, 2, 3, None], pa.timestamp("us", tz="UTC")), "flag": pa.array([True, False, None, True]),
        "decimal": pa.array([1, 2, 3, 4], pa.decimal128(5, 2)),
        "map": pa.array([[("k", 1)], None, [], [("z", 2)]], pa.map_(pa.string(), pa.int64())),
    })
    positions = np.array([3, -1, 0, 2, -1, 1, 1], dtype=np.int64)
    expected = table.take(pa.array(positions, mask=positions < 0))
    got = offline._take_rows(table, positions)
    assert got.schema == expected.schema
    assert all(got.column(name).equals(expected.column(name)) for name in table.column_names)
    assert offline._take_rows(table, np.array([2, 0])).equals(table.take([2, 0]))
    assert offline._take_rows(table.slice(0, 0), np.array([-1, -1])).column("int").null_count == 2


def test_a_damaged_parquet_file_is_named_by_retrieval_and_materialization_alike(tmp_path: Path) -> None:
    # materialize opened the file with Arrow first and let its ArrowInvalid out, naming neither view nor fix
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"driver_id": [1, 2], "event_timestamp": pa.array([T0] * 2, pa.timestamp("us")),
                             "value": [10, 20]}), path)
    view = lf.FeatureView(name="v", entities=[DRIVER], source=lf.FileSource(path=str(path)),
                          schema=[lf.Field(name="value", dtype=lf.Int64)])
    project = Project.init(tmp_path / "p", name="p")
    try:
        store = project.feature_store
        store.apply([view])
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # a copy in progress
        assert offline._ParquetView.of(path, view, ["driver_id"], ["value"], {"min": None, "max": 0}, None) is None
        entity = pa.table({"driver_id": [1], "event_timestamp": pa.array([T0], pa.timestamp("us"))})
        with pytest.raises(ValidationError, match="feature view 'v': cannot read its source"):
            store.get_historical_features(entity, ["v:value"], record=False).to_arrow()
        with pytest.raises(ValidationError, match="feature view 'v': cannot read its source"):
            store.materialize(T0, T0 + timedelta(days=1), progress=False)
    finally:
        project.close()
