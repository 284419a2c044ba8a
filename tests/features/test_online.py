"""Online stores: the shared contract over SQLite and Redis, materialization, push, serving with ttl."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import loopstack.features as lf
from loopstack.core.errors import NotFoundError, ValidationError
from loopstack.core.project import Project
from loopstack.features.online import open_online_store
from loopstack.features.online.conformance import CHECKS

T0 = datetime(2024, 1, 1)
DRIVER = lf.Entity(name="driver", join_keys=["driver_id"])
BACKENDS = ["sqlite", "redis"]


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    return "sqlite:///.loopstack/online.db" if backend == "sqlite" else request.getfixturevalue("redis_url")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_online_store_contract(backend: str, check: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(backend, request)
    counter = iter(range(100))

    def make() -> Any:
        suffix = f"c{next(counter)}"
        if backend == "sqlite":
            return open_online_store(f"sqlite:///{suffix}.db", tmp_path)
        return open_online_store(f"{url}{suffix}:", tmp_path)

    CHECKS[check](make)


# -- a project with a file-backed view, per backend -------------------------------------------
def _write(folder: Path, name: str, rows: list[tuple[int, datetime, float, int | None]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us")),
        "conv_rate": pa.array([r[2] for r in rows], pa.float64()),
        "trips": pa.array([r[3] for r in rows], pa.int64()),
    }), folder / name)


def _definitions(folder: Path) -> list[Any]:
    push = lf.PushSource(name="stats_push", batch_source=lf.FileSource(path=str(folder)))
    stats = lf.FeatureView(name="stats", entities=[DRIVER], ttl=timedelta(days=2), source=push,
                           schema=[lf.Field(name="conv_rate", dtype=lf.Float64),
                                   lf.Field(name="trips", dtype=lf.Int64)])

    @lf.on_demand_feature_view(inputs=["stats:conv_rate", "stats:trips"],
                               schema=[lf.Field(name="weighted", dtype=lf.Float64)],
                               request_schema=[lf.Field(name="weight", dtype=lf.Float64)])
    def weighted(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"weighted": df["conv_rate"] * df["trips"].astype("float64") * df["weight"]})

    service = lf.FeatureService(name="ranker", features=[stats, weighted])
    return [stats, weighted, service]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[lf.FeatureStore]:
    project = Project.init(tmp_path / "p", name="online", online_store=_url(request.param, request))
    folder = project.root / "data" / "stats"
    rows = [(d, T0 + timedelta(days=day), d + day / 10, d * 100 + day) for d in range(1, 21) for day in range(4)]
    _write(folder, "part-0.parquet", rows)
    project.feature_store.apply(_definitions(folder))
    yield project.feature_store
    project.close()


def _online(store: lf.FeatureStore, ids: list[int], at: datetime, features: Any = None) -> lf.OnlineResponse:
    return store.get_online_features(features or ["stats:conv_rate", "stats:trips"],
                                     [{"driver_id": i, "weight": 2.0} for i in ids], now=at)


def test_materialize_then_serve_latest_values(store: lf.FeatureStore) -> None:
    assert store.materialize(T0, T0 + timedelta(days=10), progress=False) == {"stats": 20}
    got = _online(store, [3, 99, 1], T0 + timedelta(days=4)).to_dict(include_status=True)
    assert got["conv_rate"] == [3.3, None, 1.3]
    assert got["trips"] == [303, None, 103]
    assert got["trips__status"] == [lf.PRESENT, lf.NOT_FOUND, lf.PRESENT]
    assert got["trips__age_s"] == [86_400.0, None, 86_400.0]


def test_expired_values_come_back_missing_with_their_age(store: lf.FeatureStore) -> None:
    store.materialize(T0, T0 + timedelta(days=10), progress=False)
    at_ttl = _online(store, [1], T0 + timedelta(days=5))  # latest row is T0+3d: exactly ttl old, still valid
    assert at_ttl.values["conv_rate"] == [1.3] and at_ttl.status["conv_rate"] == [lf.PRESENT]
    late = _online(store, [1], T0 + timedelta(days=5, seconds=1))
    assert late.values["conv_rate"] == [None]
    assert late.status["conv_rate"] == [lf.EXPIRED]
    assert late.age["conv_rate"] == [2 * 86_400.0 + 1]


def test_on_demand_transform_gives_the_same_values_online_and_offline(store: lf.FeatureStore) -> None:
    store.materialize(T0, T0 + timedelta(days=10), progress=False)
    ids = [1, 7, 20]
    online = _online(store, ids, T0 + timedelta(days=4), features="ranker").to_dict()
    entity = pd.DataFrame({"driver_id": ids, "weight": [2.0] * 3, "event_timestamp": [T0 + timedelta(days=4)] * 3})
    offline = store.get_historical_features(entity, "ranker").to_pandas()
    assert online["weighted"] == offline["weighted"].tolist() == [1.3 * 103 * 2, 7.3 * 703 * 2, 20.3 * 2003 * 2]
    assert online["conv_rate"] == offline["conv_rate"].tolist()


def test_materialize_incremental_moves_the_watermark(store: lf.FeatureStore) -> None:
    from loopstack.features.materialize import watermark

    first = T0 + timedelta(days=3)
    store.materialize_incremental(first, progress=False)
    assert watermark(store, store.catalog.view("stats")) == int((first - datetime(1970, 1, 1)).total_seconds() * 1e6)
    _write(store.root / "data" / "stats", "part-1.parquet", [(1, T0 + timedelta(days=6), 9.5, 9)])
    assert store.materialize_incremental(T0 + timedelta(days=7), progress=False) == {"stats": 1}
    got = _online(store, [1, 2], T0 + timedelta(days=7)).to_dict(include_status=True)
    assert got["conv_rate"] == [9.5, None]
    assert got["conv_rate__status"] == [lf.PRESENT, lf.EXPIRED]


class _Failing:
    """An online store that fails after `allowed` batches (a crash mid-materialization)."""

    def __init__(self, inner: Any, allowed: int) -> None:
        self.inner, self.allowed, self.writes = inner, allowed, 0

    def write_batch(self, view: str, rows: Any) -> int:
        if self.writes >= self.allowed:
            raise KeyboardInterrupt("simulated crash")
        self.writes += 1
        return int(self.inner.write_batch(view, rows))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _dump(store: lf.FeatureStore) -> list[Any]:
    return store.online.read([("stats", [str(i) for i in range(1, 25)])])[0]


def test_interrupted_materialization_resumes_to_the_same_store(store: lf.FeatureStore, tmp_path: Path) -> None:
    real = store.online
    store.__dict__["online"] = failing = _Failing(real, allowed=2)
    with pytest.raises(KeyboardInterrupt):
        store.materialize(T0, T0 + timedelta(days=10), chunk_size=3, progress=False)
    assert failing.writes == 2
    table = store.db.table("feature_materializations")
    with store.db.read() as connection:
        job = connection.execute(table.select()).mappings().one()
    assert (job["status"], job["chunks_done"], job["chunks_total"]) == ("running", 2, 7)
    store.__dict__["online"] = resumed = _Failing(real, allowed=100)
    store.materialize(T0, T0 + timedelta(days=10), chunk_size=3, progress=False)
    assert resumed.writes == 5  # only the chunks that had not landed
    store.__dict__["online"] = real
    fresh = Project.init(tmp_path / "fresh", name="fresh").feature_store
    fresh.apply(_definitions(store.root / "data" / "stats"))
    fresh.materialize(T0, T0 + timedelta(days=10), progress=False)
    assert _dump(store) == _dump(fresh)
    fresh.project.close()



def test_a_resumed_materialization_rewrites_landed_chunks_when_the_source_changed(
        store: lf.FeatureStore, tmp_path: Path) -> None:
    # the resume checked only the row count: a source rewritten with as many rows kept the stale landed chunks
    real = store.online
    store.__dict__["online"] = _Failing(real, allowed=2)
    with pytest.raises(KeyboardInterrupt):
        store.materialize(T0, T0 + timedelta(days=10), chunk_size=3, progress=False)
    folder = store.root / "data" / "stats"
    _write(folder, "part-0.parquet", [(d, T0 + timedelta(days=day), 100 + d + day / 10, d * 100 + day)
                                      for d in range(1, 21) for day in range(4)])
    store.__dict__["online"] = resumed = _Failing(real, allowed=100)
    store.materialize(T0, T0 + timedelta(days=10), chunk_size=3, progress=False)
    assert resumed.writes == 7  # every chunk again
    store.__dict__["online"] = real
    fresh = Project.init(tmp_path / "fresh", name="fresh").feature_store
    fresh.apply(_definitions(folder))
    fresh.materialize(T0, T0 + timedelta(days=10), progress=False)
    assert _dump(store) == _dump(fresh)
    assert _online(store, [1, 10], T0 + timedelta(days=4)).values["conv_rate"] == [101.3, 110.3]
    fresh.project.close()

def test_push_serves_newest_and_appends_history(store: lf.FeatureStore) -> None:
    store.materialize(T0, T0 + timedelta(days=10), progress=False)
    late = [{"driver_id": 1, "event_timestamp": T0 + timedelta(days=1), "conv_rate": 0.0, "trips": 0}]
    store.push("stats_push", late)  # older than what is served: ignored
    assert _online(store, [1], T0 + timedelta(days=4)).values["conv_rate"] == [1.3]
    fresh = [{"driver_id": 1, "event_timestamp": T0 + timedelta(days=8), "conv_rate": 42.0, "trips": None}]
    store.push("stats_push", fresh, to="online_and_offline")
    got = _online(store, [1], T0 + timedelta(days=8)).to_dict()
    assert got["conv_rate"] == [42.0] and got["trips"] == [None]
    entity = pa.table({"driver_id": [1], "event_timestamp": pa.array([T0 + timedelta(days=9)], pa.timestamp("us"))})
    offline = store.get_historical_features(entity, ["stats:conv_rate"]).to_arrow()
    assert offline.column("conv_rate").to_pylist() == [42.0]
    with pytest.raises(ValidationError, match="lack column"):
        store.push("stats_push", [{"driver_id": 1, "event_timestamp": T0}])


def test_redis_reads_are_one_round_trip(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = request.getfixturevalue("redis_url")
    project = Project.init(tmp_path / "r", name="r", online_store=url)
    folder = project.root / "data"
    _write(folder, "a.parquet", [(d, T0, float(d), d) for d in range(100)])
    view = _definitions(folder)[0]
    other = lf.FeatureView(name="other", entities=[DRIVER], source=lf.FileSource(path=str(folder)),
                           schema=[lf.Field(name="trips", dtype=lf.Int64)])
    store = project.feature_store
    store.apply([view, other])
    store.materialize(T0, T0, progress=False)
    store.get_online_features(["other:trips"], [{"driver_id": 1}], now=T0)  # connects (handshake commands)
    sent: list[bytes] = []
    online: Any = store.online
    assert len(online._idle) == 1  # the connection of the first read, back in the pool
    connection = online._idle[0]
    original = connection.send_packed_command
    connection.send_packed_command = lambda command, **k: sent.extend(command) or original(command, **k)
    got = store.get_online_features(["stats:conv_rate", "stats:trips", "other:trips"],
                                    {"driver_id": list(range(100))}, full_feature_names=True, now=T0)
    assert len(sent) == 1 and sent[0].startswith(b"*201\r\n$4\r\nMGET\r\n")  # 100 keys x 2 views, one command
    assert got.values["other__trips"] == list(range(100))
    project.close()


def test_redis_read_survives_a_dropped_connection(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = request.getfixturevalue("redis_url")
    store: Any = open_online_store(url, tmp_path)
    try:
        store.write_batch("v", pa.table({"key": ["1"], "event_ts": [5], "created_ts": [5], "value": ['{"x":1}']}))
        assert store.read([("v", ["1"])]) == [[(5, '{"x":1}')]]
        store._idle[0]._sock.shutdown(2)  # the next send or read on it fails
        assert store.read([("v", ["1", "2"])]) == [[(5, '{"x":1}'), None]]
        assert store.read([("v", ["1"])]) == [[(5, '{"x":1}')]]
        assert len(store._idle) == 1  # the dropped connection reconnected, reused
    finally:
        store.close()


def test_redis_reads_from_many_threads_get_their_own_replies(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store: Any = open_online_store(request.getfixturevalue("redis_url"), tmp_path)
    keys = [str(i) for i in range(64)]
    store.write_batch("v", pa.table({"key": keys, "event_ts": list(range(64)), "created_ts": list(range(64)),
                                     "value": [f'{{"x":{i}}}' for i in range(64)]}))

    def reads(worker: int) -> bool:
        wanted = keys[worker::8]
        return all(store.read([("v", wanted)]) == [[(int(k), f'{{"x":{k}}}') for k in wanted]] for _ in range(50))

    try:
        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(reads, range(8)))
        assert 1 <= len(store._idle) <= 8
    finally:
        store.close()


def test_pack_mget_matches_redis_py() -> None:
    from redis.connection import Connection

    from loopstack.features.online.redis import pack_mget

    keys = [b"a", "é:1".encode(), b"", b"x" * 300]
    assert pack_mget(keys) == b"".join(Connection().pack_command("MGET", *keys))


def test_materialize_and_serve_a_view_with_two_join_keys(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "k", name="k")
    folder = project.root / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({
        "city": ["a", "a", "b", "a"], "driver_id": pa.array([1, 1, 1, 2], pa.int64()),
        "event_timestamp": pa.array([T0, T0 + timedelta(hours=1), T0, T0], pa.timestamp("us")),
        "trips": pa.array([10, 11, 20, 30], pa.int64()),
    }), folder / "k.parquet")
    pair = lf.Entity(name="city_driver", join_keys=["city", "driver_id"])
    view = lf.FeatureView(name="k", entities=[pair], source=lf.FileSource(path=str(folder)),
                          schema=[lf.Field(name="trips", dtype=lf.Int64)])
    store = project.feature_store
    store.apply([view])
    assert store.materialize(T0, T0 + timedelta(hours=2), progress=False) == {"k": 3}
    got = store.get_online_features(["k:trips"], {"city": ["a", "b", "a", "b"], "driver_id": [1, 1, 2, 2]},
                                    now=T0 + timedelta(hours=2))
    assert got.values["trips"] == [11, 20, 30, None]
    project.close()


def test_a_value_from_after_now_is_not_served_when_replaying_a_past_moment(store: lf.FeatureStore) -> None:
    store.materialize(T0, T0 + timedelta(days=10), progress=False)  # stores each driver's T0+3d row
    got = _online(store, [1], T0 + timedelta(days=1)).to_dict(include_status=True)
    assert (got["trips"], got["trips__status"], got["trips__age_s"]) == ([None], [lf.NOT_FOUND], [None])
    at_event = _online(store, [1], T0 + timedelta(days=3)).to_dict(include_status=True)
    assert (at_event["trips"], at_event["trips__status"], at_event["trips__age_s"]) == ([103], [lf.PRESENT], [0.0])


def test_decode_mixes_missing_expired_and_present_records_in_order() -> None:
    from loopstack.features.serving import _decode

    found = [None, (100, '{"x":1}'), (10, '{"x":2}'), (95, '{"x":3,"y":"a"}'), None]
    rows, status, ages = _decode(found, ttl=50, now=110, missing={"x": None})
    assert [row.get("x") for row in rows] == [None, 1, None, 3, None]
    assert [row.get("y") for row in rows] == [None, None, None, "a", None]
    assert status == ["not_found", "present", "expired", "present", "not_found"]
    assert ages == [None, 10 / 1e6, 100 / 1e6, 15 / 1e6, None]
    assert _decode([], ttl=None, now=0, missing={}) == ([], [], [])


def test_view_plan_columns_read_none_for_a_feature_a_record_lacks() -> None:
    from loopstack.features.serving import _ViewPlan

    plan = _ViewPlan("v", ["id"], None, [("x", "v:x", None), ("y", "v:y", None)])
    assert plan.columns([{"x": 1, "y": 2}, plan.missing, {"x": 3, "y": 4}]) == [[1, None, 3], [2, None, 4]]
    assert plan.columns([{"x": 1, "y": 2}, {"x": 3}]) == [[1, 3], [2, None]]
    assert plan.columns([]) == [[], []]
    repeated = _ViewPlan("v", ["id"], None, [("x", "v:x", None), ("x", "v:x", None)])
    assert repeated.columns([{"x": 1}, repeated.missing]) == [[1, None], [1, None]]
    single = _ViewPlan("v", ["id"], None, [("x", "v:x", None)])
    assert single.columns([{"x": 1}, single.missing, {}]) == [[1, None, None]]


def test_online_errors_name_the_fix(store: lf.FeatureStore) -> None:
    with pytest.raises(ValidationError, match="join key 'driver_id'"):
        store.get_online_features(["stats:trips"], [{"id": 1}])
    with pytest.raises(NotFoundError, match="no feature view 'nope'"):
        store.get_online_features(["nope:trips"], [{"driver_id": 1}])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_key_matches_nothing_and_an_integral_float_key_matches_its_int(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # a null key was looked up as the text "None" (another entity's id); 2.0 (pandas' int column with a gap)
    # was looked up as "2.0" and missed the entity the offline join found
    project = Project.init(tmp_path / "n", name="n", online_store=_url(backend, request))
    names = pa.table({"user": ["None", "nan", "a"], "event_timestamp": pa.array([T0] * 3, pa.timestamp("us")),
                      "score": pa.array([1, 2, 3], pa.int64())})
    user = lf.FeatureView(name="u", entities=[lf.Entity(name="user", join_keys=["user"])],
                          source=lf.TableSource(names), schema=[lf.Field(name="score", dtype=lf.Int64)])
    pairs = pa.table({"city": ["None"], "driver_id": pa.array([2], pa.int64()),
                      "event_timestamp": pa.array([T0], pa.timestamp("us")), "trips": pa.array([7], pa.int64())})
    pair = lf.FeatureView(name="p", entities=[lf.Entity(name="pair", join_keys=["city", "driver_id"])],
                          source=lf.TableSource(pairs), schema=[lf.Field(name="trips", dtype=lf.Int64)])
    store = project.feature_store
    store.apply([user, pair])
    store.materialize(T0, T0, progress=False)
    got = store.get_online_features(["u:score"], {"user": [None, float("nan"), pd.NA, "a"]}, now=T0)
    assert got.values["score"] == [None, None, None, 3]
    assert got.status["score"] == [lf.NOT_FOUND] * 3 + [lf.PRESENT]
    got = store.get_online_features(["p:trips"], {"city": [None, "None"], "driver_id": [2.0, 2.0]}, now=T0)
    assert got.values["trips"] == [None, 7]
    keys = {"city": ["None"] * 2, "driver_id": [np.float32(2.0), np.int64(2)]}
    got = store.get_online_features(["p:trips"], keys, now=T0)
    assert got.values["trips"] == [7, 7]  # np.float32(2.0) was looked up as "2.0"
    project.close()



@pytest.mark.parametrize("backend", BACKENDS)
def test_float_and_bool_keys_of_a_string_keyed_view_match_the_same_rows_online_and_offline(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # online looked 2.0 up as "2" and True as "True"; the offline join cast them to '2.0' and 'true'
    project = Project.init(tmp_path / "k", name="k", online_store=_url(backend, request))
    keys = ["2", "2.0", "2.5", "True", "true"]
    rows = pa.table({"code": keys, "event_timestamp": pa.array([T0] * 5, pa.timestamp("us")),
                     "score": pa.array(range(5), pa.int64())})
    view = lf.FeatureView(name="c", entities=[lf.Entity(name="code", join_keys=["code"])],
                          source=lf.TableSource(rows), schema=[lf.Field(name="score", dtype=lf.Int64)])
    store = project.feature_store
    store.apply([view])
    store.materialize(T0, T0, progress=False)
    online = store.get_online_features(["c:score"], {"code": [2.0, 2.5, True]}, now=T0).values["score"]
    floats = pa.table({"code": [2.0, 2.5], "event_timestamp": pa.array([T0] * 2, pa.timestamp("us"))})
    bools = pa.table({"code": [True], "event_timestamp": pa.array([T0], pa.timestamp("us"))})
    offline = [v for entity in (floats, bools)
               for v in store.get_historical_features(entity, ["c:score"]).to_arrow().column("score").to_pylist()]
    assert online == offline == [0, 2, None]  # 2.0 is the integer 2; a bool is no key
    project.close()

@pytest.mark.parametrize("backend", BACKENDS)
def test_materialize_and_push_rows_from_before_1970(backend: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    # the latest row was picked by (event << 64) + created, which DuckDB refuses for a negative event time
    project = Project.init(tmp_path / "old", name="old", online_store=_url(backend, request))
    epoch = datetime(1970, 1, 1)
    folder = project.root / "data" / "stats"
    _write(folder, "part-0.parquet", [(1, epoch - timedelta(days=3), 0.1, 1), (1, epoch - timedelta(days=2), 0.2, 2),
                                      (2, epoch - timedelta(days=3), 0.3, 3)])
    store = project.feature_store
    store.apply(_definitions(folder))
    assert store.materialize(epoch - timedelta(days=10), epoch, progress=False) == {"stats": 2}
    store.push("stats_push", [{"driver_id": 2, "event_timestamp": epoch - timedelta(days=1), "conv_rate": 0.4,
                               "trips": 4}])
    got = store.get_online_features(["stats:conv_rate"], {"driver_id": [1, 2]}, now=epoch)
    assert got.values["conv_rate"] == [0.2, 0.4]
    project.close()


def test_an_empty_list_of_entity_rows_gives_empty_columns(store: lf.FeatureStore) -> None:
    # [] names no columns, and was refused as rows lacking the join key
    got = store.get_online_features("ranker", [], now=T0).to_dict(include_status=True)
    assert got == {"conv_rate": [], "trips": [], "weighted": [], "conv_rate__status": [], "conv_rate__age_s": [],
                   "trips__status": [], "trips__age_s": [], "weighted__status": [], "weighted__age_s": []}


def test_a_view_removed_and_applied_again_is_materialized_again(store: lf.FeatureStore) -> None:
    # the watermark outlived the rows apply deleted, so materialize_incremental loaded nothing and served nothing
    definitions = _definitions(store.root / "data" / "stats")
    end = T0 + timedelta(days=4)
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}
    store.apply([DRIVER], prune=True)
    store.apply(definitions)
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}
    assert _online(store, [1, 2], end).values["conv_rate"] == [1.3, 2.3]


def test_push_names_bad_times_and_values_and_takes_an_empty_batch(store: lf.FeatureStore) -> None:
    # an ISO string time and a string for a Float64 field reached DuckDB and came back as raw Binder/Conversion
    # errors; an empty list was refused as lacking every column
    assert store.push("stats_push", []) == 0
    with pytest.raises(ValidationError, match=r"'event_timestamp' of type string, not a timestamp"):
        store.push("stats_push", [{"driver_id": 1, "event_timestamp": "2024-01-02T00:00:00", "conv_rate": 1.0,
                                   "trips": 1}])
    with pytest.raises(ValidationError, match=r"do not fit feature view 'stats': .*'abc'"):
        store.push("stats_push", [{"driver_id": 1, "event_timestamp": T0, "conv_rate": "abc", "trips": 1}],
                   to="online_and_offline")
    assert list((store.root / "data" / "stats").glob("push-*")) == []  # nothing half-written offline


@pytest.mark.parametrize("trips", [2.5, -0.5, 1e30])
def test_push_refuses_a_number_an_integer_field_would_round(store: lf.FeatureStore, trips: float) -> None:
    # 2.5 for the Int64 'trips' was stored as 3, online and offline, without a word
    with pytest.raises(ValidationError, match=r"column 'trips' holds .*, which is not a Int64"):
        store.push("stats_push", [{"driver_id": 1, "event_timestamp": T0, "conv_rate": 0.5, "trips": trips}],
                   to="online_and_offline")
    assert list((store.root / "data" / "stats").glob("push-*")) == []
    store.push("stats_push", [{"driver_id": 1, "event_timestamp": T0, "conv_rate": 0.5, "trips": 3.0}])  # whole


def test_push_to_offline_refuses_a_value_its_type_cannot_hold_and_keeps_declared_types(
        store: lf.FeatureStore) -> None:
    # to="offline" skipped the type check: "abc" landed in the Parquet history and broke every offline read
    folder = store.root / "data" / "stats"
    with pytest.raises(ValidationError, match=r"feature view 'stats': column 'conv_rate' holds 'abc'"):
        store.push("stats_push", [{"driver_id": 1, "event_timestamp": T0 + timedelta(days=5), "conv_rate": "abc",
                                   "trips": 1}], to="offline")
    assert list(folder.glob("push-*")) == []
    # text that casts is stored as the declared type, so the source keeps the types apply checks
    store.push("stats_push", [{"driver_id": 1, "event_timestamp": T0 + timedelta(days=5), "conv_rate": "1.5",
                               "trips": None}], to="offline")
    store.apply(_definitions(folder))
    entity = pa.table({"driver_id": [1], "event_timestamp": pa.array([T0 + timedelta(days=6)], pa.timestamp("us"))})
    offline = store.get_historical_features(entity, ["stats:conv_rate", "stats:trips"]).to_arrow().to_pydict()
    assert (offline["conv_rate"], offline["trips"]) == ([1.5], [None])


def test_request_values_reach_a_transform_as_their_declared_type_online_and_offline(tmp_path: Path) -> None:
    """An int request column for a Float64 request field: integer division offline, true division online."""
    import pyarrow.compute as pc

    rows = pa.table({"driver_id": [1], "v": [1.0], "event_timestamp": pa.array([T0], pa.timestamp("us"))})
    view = lf.FeatureView(name="s", entities=[DRIVER], schema=[lf.Field(name="v", dtype=lf.Float64)],
                          source=lf.TableSource(rows))

    @lf.on_demand_feature_view(inputs=["s:v"], request_schema=[lf.Field(name="amount", dtype=lf.Float64)],
                               schema=[lf.Field(name="half", dtype=lf.Float64)], mode="arrow")
    def half(batch: Any) -> Any:
        return {"half": pc.divide(batch["amount"], 2)}

    project = Project.init(tmp_path / "p", name="odfv")
    try:
        store = project.feature_store
        store.apply([view, half])
        store.materialize(T0, T0 + timedelta(days=1), progress=False)
        at = T0 + timedelta(hours=1)
        entity = pd.DataFrame({"driver_id": [1], "event_timestamp": [at], "amount": [3]})
        offline = store.get_historical_features(entity, ["half:half"], record=False).to_pandas()["half"].tolist()
        online = store.get_online_features(["half:half"], [{"driver_id": 1, "amount": 3}], now=at).to_dict()["half"]
        assert offline == online == [1.5]
        with pytest.raises(ValidationError, match=r"'amount'.*fix the column"):
            store.get_historical_features(entity.assign(amount=["x"]), ["half:half"], record=False).to_arrow()
        with pytest.raises(ValidationError, match=r"'amount'.*'x'"):
            store.get_online_features(["half:half"], [{"driver_id": 1, "amount": "x"}], now=at)
    finally:
        project.close()


def test_a_new_service_object_is_served_its_own_features_not_a_freed_ones(store: lf.FeatureStore) -> None:
    # plans were cached by id(service): CPython gives a new object a freed one's id, whose columns it then got
    store.apply([lf.FeatureService(name=f"svc_{f}", features=[f"stats:{f}"]) for f in ("conv_rate", "trips")])
    store.materialize(T0, T0 + timedelta(days=10), progress=False)
    at = T0 + timedelta(days=4)
    service = lf.FeatureService(name="svc_conv_rate", features=["stats:conv_rate"])
    assert list(_online(store, [1], at, features=service).values) == ["conv_rate"]
    service.features = ["stats:trips"]  # the same id, asking for another feature
    assert list(_online(store, [1], at, features=service).values) == ["trips"]
    for i in range(10):
        wanted = "conv_rate" if i % 2 == 0 else "trips"
        service = lf.FeatureService(name=f"svc_{wanted}", features=[f"stats:{wanted}"])
        assert list(_online(store, [1], at, features=service).values) == [wanted]
        del service
    assert len(store._reader._plans) == 3  # one plan per service content, not one per object


def test_the_online_plan_cache_is_bounded(store: lf.FeatureStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopstack.features import serving

    monkeypatch.setattr(serving, "MAX_PLANS", 3)
    lists = [["stats:conv_rate"], ["stats:trips"], ["stats:conv_rate", "stats:trips"],
             ["stats:trips", "stats:conv_rate"]]
    for features in lists:  # a feature list built per request is a new key each time
        for full in (False, True):
            store.get_online_features(features, [{"driver_id": 1}], full_feature_names=full, now=T0)
            assert len(store._reader._plans) <= 3


def test_an_unapplied_service_object_is_served_and_logged_by_its_own_settings(store: lf.FeatureStore) -> None:
    # it resolved, then the log check looked it up among the applied services: a raw KeyError
    store.materialize(T0, T0 + timedelta(days=10), progress=False)
    at = T0 + timedelta(days=4)
    quiet = lf.FeatureService(name="draft", features=["stats:trips"])
    got = _online(store, [1], at, features=quiet)
    assert got.values == {"trips": [103]} and got.request_id is None
    logged = lf.FeatureService(name="draft_logged", features=["stats:trips"], log=True)
    got = _online(store, [1], at, features=logged)
    assert got.values == {"trips": [103]} and got.request_id is not None
    entity = pa.table({"driver_id": [1], "event_timestamp": pa.array([at], pa.timestamp("us"))})
    offline = store.get_historical_features(entity, quiet, record=False).to_arrow()
    assert offline.column("trips").to_pylist() == [103]  # offline serves the object's refs too
    store.feature_log.flush()
    assert store.feature_log.read("draft_logged").num_rows == 1


def test_a_first_incremental_materialization_without_ttl_loads_rows_from_before_1970(tmp_path: Path) -> None:
    # the first window of a view without ttl started at 0 (1970-01-01): older rows never reached the online store
    rows = pa.table({"driver_id": [1, 2], "event_timestamp": pa.array([datetime(1965, 1, 1), T0], pa.timestamp("us")),
                     "a": pa.array([10, 20], pa.int64())})
    view = lf.FeatureView(name="v", entities=[DRIVER], source=lf.TableSource(rows),
                          schema=[lf.Field(name="a", dtype=lf.Int64)])
    project = Project.init(tmp_path / "p", name="old")
    try:
        store = project.feature_store
        store.apply([view])
        now = T0 + timedelta(days=1)
        assert store.materialize_incremental(now, progress=False) == {"v": 2}
        online = store.get_online_features(["v:a"], {"driver_id": [1, 2]}, now=now).values["a"]
        entity = pa.table({"driver_id": [1, 2], "event_timestamp": pa.array([now] * 2, pa.timestamp("us"))})
        offline = store.get_historical_features(entity, ["v:a"], record=False).to_arrow().column("a").to_pylist()
        assert online == offline == [10, 20]
    finally:
        project.close()


def test_an_offline_push_lands_whole_or_not_at_all(store: lf.FeatureStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # the Parquet file was written under its final name: a reader, or a kill, mid-write saw a truncated file
    folder = store.root / "data" / "stats"
    listing = lf.FileSource(path=str(folder))
    seen = []
    write = pq.write_table

    def killed_mid_write(table: pa.Table, where: Any, **options: Any) -> None:
        write(table, where, **options)
        seen.append([p.name for p in listing.files(store.root)])  # what a reader lists meanwhile
        raise KeyboardInterrupt

    row = {"driver_id": 1, "event_timestamp": T0 + timedelta(days=5), "conv_rate": 7.5, "trips": 7}
    monkeypatch.setattr(pq, "write_table", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        store.push("stats_push", [row], to="offline")
    assert seen == [["part-0.parquet"]]
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]
    monkeypatch.undo()
    store.push("stats_push", [row], to="offline")
    assert [p.name.startswith("push-") and p.suffix == ".parquet" for p in sorted(folder.iterdir())] == [False, True]
    entity = pa.table({"driver_id": [1], "event_timestamp": pa.array([T0 + timedelta(days=5)], pa.timestamp("us"))})
    offline = store.get_historical_features(entity, ["stats:conv_rate"], record=False).to_arrow()
    assert offline.column("conv_rate").to_pylist() == [7.5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_integral_decimal_key_matches_its_integer_online_and_offline(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Decimal("2.0") was looked up online as "2.0" (nothing) while the offline join matched entity 2
    from decimal import Decimal

    project = Project.init(tmp_path / "d", name="d", online_store=_url(backend, request))
    ints = pa.table({"driver_id": pa.array([2], pa.int64()), "event_timestamp": pa.array([T0], pa.timestamp("us")),
                     "score": pa.array([7], pa.int64())})
    codes = pa.table({"code": ["2", "2.0", "2.5"], "event_timestamp": pa.array([T0] * 3, pa.timestamp("us")),
                      "score": pa.array([0, 1, 2], pa.int64())})
    views = [lf.FeatureView(name=name, entities=[lf.Entity(name=key, join_keys=[key])], source=lf.TableSource(rows),
                            schema=[lf.Field(name="score", dtype=lf.Int64)])
             for name, key, rows in (("i", "driver_id", ints), ("c", "code", codes))]
    store = project.feature_store
    store.apply(views)
    store.materialize(T0, T0, progress=False)
    keys = [Decimal("2.0"), Decimal("2.5"), Decimal("NaN")]
    for view, key, expected in (("i", "driver_id", [7, None, None]), ("c", "code", [0, 2, None])):
        online = store.get_online_features([f"{view}:score"], {key: keys}, now=T0).values["score"]
        entity = pa.table({key: pa.array(keys[:2], pa.decimal128(2, 1)),
                           "event_timestamp": pa.array([T0] * 2, pa.timestamp("us"))})
        offline = store.get_historical_features(entity, [f"{view}:score"], record=False).to_arrow()
        assert online == expected  # an integral decimal is its integer, as an integral float is
        assert offline.column("score").to_pylist() == expected[:2]
    project.close()


class Killed(BaseException):
    """A kill -9 at one step: nothing after it runs, what is not committed is lost."""


def _online_rows(store: lf.FeatureStore) -> list[Any]:
    return store.online.read([("stats", [str(i) for i in range(1, 21)])])[0]


def test_apply_killed_while_forgetting_a_removed_view_removes_nothing(store: lf.FeatureStore,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import loopstack.features.materialize as materialize

    definitions = _definitions(store.root / "data" / "stats")
    end = T0 + timedelta(days=4)
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}

    def kill(*args: Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(materialize, "forget", kill)
        with pytest.raises(Killed):
            store.apply([DRIVER], prune=True)
    assert store.plan([DRIVER], prune=True).removed  # the removal was not committed
    assert all(row is not None for row in _online_rows(store))
    store.apply([DRIVER], prune=True)
    assert all(row is None for row in _online_rows(store))
    store.apply(definitions)
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}
    assert _online(store, [1, 2], end).values["conv_rate"] == [1.3, 2.3]


@pytest.mark.parametrize("partial", [False, True])
def test_apply_killed_while_deleting_a_removed_views_rows_is_repaired(store: lf.FeatureStore, partial: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # killed after the online rows went but before the watermark did, the view applied again materialized
    # "0 entities" and served not_found forever
    definitions = _definitions(store.root / "data" / "stats")
    end = T0 + timedelta(days=4)
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}
    delete_view = store.online.delete_view

    def kill(view: str) -> None:
        if partial:  # every row gone, killed before the deletion was recorded as done
            delete_view(view)
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(store.online, "delete_view", kill)
        with pytest.raises(Killed):
            store.apply([DRIVER], prune=True)
    assert not store.plan([DRIVER], prune=True).changes  # the removal is committed
    assert any(row is not None for row in _online_rows(store)) is not partial
    store.apply(definitions)  # applied again: the deletion cut short finishes first
    assert all(row is None for row in _online_rows(store))
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}
    assert _online(store, [1, 2], end).values["conv_rate"] == [1.3, 2.3]


def test_rows_left_by_a_killed_removal_go_at_the_next_apply(store: lf.FeatureStore,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.materialize_incremental(T0 + timedelta(days=4), progress=False) == {"stats": 20}

    def kill(view: str) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(store.online, "delete_view", kill)
        with pytest.raises(Killed):
            store.apply([DRIVER], prune=True)
    assert all(row is not None for row in _online_rows(store))
    assert not store.apply([DRIVER], prune=True).changes
    assert all(row is None for row in _online_rows(store))


def test_materialize_finishes_a_pending_deletion_before_writing(store: lf.FeatureStore) -> None:
    # rows of the removed version could be newer than the source's, and the online store never replaces a newer
    # record with an older one: they must be gone before a materialization writes
    from loopstack.features.materialize import delete_removed, forget

    end = T0 + timedelta(days=4)
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}
    store.push("stats_push", [{"driver_id": 1, "event_timestamp": end, "conv_rate": 9.0, "trips": 9}])
    with store.db.write() as connection:  # as a removal left it, the view applied again meanwhile
        forget(store, "stats", connection)
    assert store.materialize_incremental(end, progress=False) == {"stats": 20}
    assert delete_removed(store) == []
    assert _online(store, [1, 2], end).values["conv_rate"] == [1.3, 2.3]
