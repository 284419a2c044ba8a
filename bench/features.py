"""Feature store benchmark: loopstack vs Feast on the same generated data, same machine, one run.

    .venv/bin/python bench/features.py            # full size (the issue's workload)
    .venv/bin/python bench/features.py --quick    # a small smoke run

Workload (issue "Feature store", benchmark section):
  view A: 10,000 entities x 100 timestamps = 1,000,000 rows, 10 float features, ttl 2 days
          (2 of each entity's 100 rows repeat an event time with a later created time: ties);
  view B: the same entities daily for 30 days = 300,000 rows, 3 features (int with nulls, float,
          string), ttl 7 days;
  entity frame: 100,000 rows, about 5% with unknown entities.

The Feast half runs in Feast's own virtualenv (``bash bench/anchors.sh feast``) as a subprocess
of this same file (``--feast-worker``), which imports only Feast, pandas and pyarrow. Results
are checked row for row against Feast's DuckDB offline store before anything is timed; rows
where Feast's file offline store differs are counted and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "features"
FEAST_PYTHON = HERE / ".anchors" / "feast" / "bin" / "python"
START = datetime(2024, 1, 1, tzinfo=UTC)
A_FEATURES = [f"a{i}" for i in range(10)]
B_FEATURES = ["b_int", "b_float", "b_str"]
REDIS = ("127.0.0.1", 6379)


# -- data -----------------------------------------------------------------------------------------
def generate(work: Path, entities: int, stamps: int, entity_rows: int, seed: int = 7) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    work.mkdir(parents=True, exist_ok=True)
    start_us = int(START.timestamp() * 1e6)
    day = 86_400_000_000
    ids = np.repeat(np.arange(entities, dtype=np.int64), stamps)
    offsets = rng.integers(0, 30 * day, size=(entities, stamps))
    offsets[:, 1] = offsets[:, 0]  # a tie on event time for every entity ...
    offsets[:, 3] = offsets[:, 2]
    created_delay = rng.integers(0, 2 * 3_600_000_000, size=(entities, stamps))
    created_delay[:, 1] = created_delay[:, 0] + 1_000_000  # ... broken by a later created time
    created_delay[:, 3] = np.maximum(created_delay[:, 2] - 1_000_000, 0)
    event = (start_us + offsets).ravel()
    a = {"entity_id": ids, "event_timestamp": _ts(event), "created": _ts(event + created_delay.ravel())}
    for name in A_FEATURES:
        a[name] = rng.standard_normal(entities * stamps)
    pq.write_table(pa.table(a), work / "a.parquet", row_group_size=128 * 1024)

    days = 30
    b_ids = np.repeat(np.arange(entities, dtype=np.int64), days)
    b_event = start_us + np.tile(np.arange(days, dtype=np.int64) * day, entities) + (b_ids % 24) * 3_600_000_000
    b_int = rng.integers(0, 1000, entities * days)
    b = {"entity_id": b_ids, "event_timestamp": _ts(b_event), "created": _ts(b_event),
         "b_int": pa.array(b_int, mask=rng.random(entities * days) < 0.05),
         "b_float": rng.random(entities * days),
         "b_str": pa.array([f"s{v % 97}" for v in b_int])}
    pq.write_table(pa.table(b), work / "b.parquet", row_group_size=128 * 1024)

    unknown = int(entities * 1.05)
    e_ids = rng.integers(0, unknown, entity_rows)
    e_ts = start_us + rng.integers(0, 32 * day, entity_rows)
    entity = {"entity_id": e_ids, "event_timestamp": _ts(e_ts), "row_id": np.arange(entity_rows)}
    pq.write_table(pa.table(entity), work / "entity.parquet")


def _ts(micros: Any) -> Any:
    import pyarrow as pa

    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


# -- loopstack ----------------------------------------------------------------------------------------
def loopstack_definitions(work: Path) -> list[Any]:
    from loopstack.features import Entity, FeatureView, Field, FileSource, Float64, Int64, String

    entity = Entity(name="entity", join_keys=["entity_id"])
    view_a = FeatureView(
        name="view_a", entities=[entity], ttl=timedelta(days=2),
        schema=[Field(name=n, dtype=Float64) for n in A_FEATURES],
        source=FileSource(path=str(work / "a.parquet"), created_timestamp_field="created"),
    )
    view_b = FeatureView(
        name="view_b", entities=[entity], ttl=timedelta(days=7),
        schema=[Field(name="b_int", dtype=Int64), Field(name="b_float", dtype=Float64),
                Field(name="b_str", dtype=String)],
        source=FileSource(path=str(work / "b.parquet"), created_timestamp_field="created"),
    )
    return [entity, view_a, view_b]


def run_loopstack(work: Path, reps: int, online_reps: int) -> dict[str, Any]:
    import shutil

    import pyarrow.parquet as pq

    import loopstack
    from loopstack.core.project import Project

    out: dict[str, Any] = {"version": loopstack.__version__}
    entity_df = pq.read_table(work / "entity.parquet").to_pandas()
    refs = [f"view_a:{n}" for n in A_FEATURES] + [f"view_b:{n}" for n in B_FEATURES]
    stores = {"sqlite": "sqlite:///.loopstack/online.db",
              "redis": f"redis://{REDIS[0]}:{REDIS[1]}/0?prefix=lsbench:{uuid.uuid4().hex}:"}
    for backend, url in stores.items():
        root = work / f"ls_{backend}"
        shutil.rmtree(root, ignore_errors=True)
        project = Project.init(root, name="bench", online_store=url)
        store = project.feature_store
        store.apply(loopstack_definitions(work))
        # Feast's apply loads its online store (importing its client library, creating tables)
        # before anything is timed; opening ours here keeps the materialize timings alike.
        store.online  # noqa: B018
        if backend == "sqlite":
            store.get_historical_features(entity_df, refs).to_pandas()  # warm-up (file hashes, caches)
            times, cpu = [], []
            for _ in range(reps):
                began, began_cpu = time.perf_counter(), time.process_time()
                result = store.get_historical_features(entity_df, refs).to_pandas()
                times.append(time.perf_counter() - began)
                cpu.append(time.process_time() - began_cpu)
            out["historical_s"] = statistics.median(times)
            out["historical_cpu_s"] = statistics.median(cpu)
            result.sort_values("row_id").to_parquet(work / "loopstack_result.parquet")
        began, began_cpu = time.perf_counter(), time.process_time()
        rows = store.materialize(START, START + timedelta(days=31), views=["view_a"], progress=False)
        out[f"materialize_{backend}_s"] = time.perf_counter() - began
        out[f"materialize_{backend}_cpu_s"] = time.process_time() - began_cpu
        out[f"materialize_{backend}_rows"] = rows["view_a"]
        now = START + timedelta(days=31)
        online_refs = [f"view_a:{n}" for n in A_FEATURES]
        out[f"online_{backend}"] = _latency(
            lambda rows, s=store, r=online_refs, n=now: s.get_online_features(r, rows, now=n).to_dict(), online_reps)
        out[f"online_{backend}_sample"] = store.get_online_features(online_refs, [{"entity_id": 3}], now=now).to_dict()
        if backend == "redis":
            store.online.delete_view("view_a")
        project.close()
    return out


def _latency(read: Any, reps: int) -> dict[str, float]:
    import random

    rng = random.Random(1)
    result = {}
    for size, count in (("1", reps), ("100", max(50, reps // 10))):
        n = int(size)
        for _ in range(20):
            read([{"entity_id": rng.randrange(10_000)} for _ in range(n)])
        samples = []
        for _ in range(count):
            rows = [{"entity_id": rng.randrange(10_000)} for _ in range(n)]
            began = time.perf_counter()
            read(rows)
            samples.append(time.perf_counter() - began)
        samples.sort()
        result[f"p50_{size}_ms"] = samples[len(samples) // 2] * 1e3
        result[f"p99_{size}_ms"] = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e3
    return result


# -- Feast (runs inside Feast's virtualenv) ---------------------------------------------------------
def feast_worker(work: Path, reps: int, online_reps: int, skip_file: bool) -> None:
    import feast
    import pyarrow.parquet as pq
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64, Int64, String

    out: dict[str, Any] = {"version": feast.__version__}
    entity_df = pq.read_table(work / "entity.parquet").to_pandas()
    entity = Entity(name="entity", join_keys=["entity_id"])
    view_a = FeatureView(name="view_a", entities=[entity], ttl=timedelta(days=2),
                         schema=[Field(name=n, dtype=Float64) for n in A_FEATURES],
                         source=FileSource(path=str(work / "a.parquet"), timestamp_field="event_timestamp",
                                           created_timestamp_column="created"))
    view_b = FeatureView(name="view_b", entities=[entity], ttl=timedelta(days=7),
                         schema=[Field(name="b_int", dtype=Int64), Field(name="b_float", dtype=Float64),
                                 Field(name="b_str", dtype=String)],
                         source=FileSource(path=str(work / "b.parquet"), timestamp_field="event_timestamp",
                                           created_timestamp_column="created"))
    refs = [f"view_a:{n}" for n in A_FEATURES] + [f"view_b:{n}" for n in B_FEATURES]
    project = f"bench_{uuid.uuid4().hex[:8]}"
    online = {"sqlite": {"type": "sqlite", "path": str(work / "feast_online.db")},
              "redis": {"type": "redis", "connection_string": f"{REDIS[0]}:{REDIS[1]},db=0"}}
    offline = {"duckdb": {"type": "duckdb"}, "file": {"type": "file"}}
    for name in ("duckdb", "file"):
        if name == "file" and skip_file:
            continue
        store = _feast_store(work, project, offline[name], online["sqlite"], f"registry_{name}.db")
        store.apply([entity, view_a, view_b])
        times, cpu = [], []
        for rep in range(reps if name == "duckdb" else 1):
            began, began_cpu = time.perf_counter(), time.process_time()
            frame = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
            times.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
            if rep == 0:
                frame.sort_values("row_id").to_parquet(work / f"feast_{name}_result.parquet")
        out[f"historical_{name}_s"] = statistics.median(times)
        out[f"historical_{name}_cpu_s"] = statistics.median(cpu)
        out[f"historical_{name}_rows"] = len(frame)
    for backend in ("sqlite", "redis"):
        if backend == "sqlite" and (work / "feast_online.db").exists():
            (work / "feast_online.db").unlink()
        store = _feast_store(work, project, offline["duckdb"], online[backend], f"registry_{backend}.db")
        store.apply([entity, view_a, view_b])
        began, began_cpu = time.perf_counter(), time.process_time()
        store.materialize(START, START + timedelta(days=31), feature_views=["view_a"])
        out[f"materialize_{backend}_s"] = time.perf_counter() - began
        out[f"materialize_{backend}_cpu_s"] = time.process_time() - began_cpu
        online_refs = [f"view_a:{n}" for n in A_FEATURES]
        out[f"online_{backend}"] = _latency(
            lambda rows, s=store, r=online_refs: s.get_online_features(features=r, entity_rows=rows).to_dict(),
            online_reps)
        out[f"online_{backend}_sample"] = store.get_online_features(
            features=online_refs, entity_rows=[{"entity_id": 3}]).to_dict()
        if backend == "redis":
            store.teardown()
    print(json.dumps(out, default=str))


def _feast_store(work: Path, project: str, offline: dict[str, Any], online: dict[str, Any], registry: str) -> Any:
    from feast import FeatureStore, RepoConfig

    path = work / registry
    if path.exists():
        path.unlink()
    config = RepoConfig(project=project, registry=str(path), provider="local", offline_store=offline,
                        online_store=online, entity_key_serialization_version=3, repo_path=work)
    return FeatureStore(config=config)


# -- checking and reporting ---------------------------------------------------------------------------
def compare(work: Path, name: str) -> dict[str, Any]:
    """Row-for-row differences between loopstack's result and one of Feast's."""
    import numpy as np
    import pandas as pd

    ours = pd.read_parquet(work / "loopstack_result.parquet").set_index("row_id").sort_index()
    theirs = pd.read_parquet(work / f"feast_{name}_result.parquet")
    missing_rows = len(ours) - theirs["row_id"].nunique()
    theirs = theirs.drop_duplicates("row_id").set_index("row_id").reindex(ours.index)
    differing = np.zeros(len(ours), dtype=bool)
    for column in A_FEATURES + B_FEATURES:
        a, b = ours[column], theirs[column]
        both_null = a.isna().to_numpy() & b.isna().to_numpy()
        if column == "b_str":
            equal = (a.astype(object) == b.astype(object)).to_numpy(dtype=bool, na_value=False)
        else:
            equal = np.isclose(a.astype("float64").to_numpy(na_value=np.nan),
                               b.astype("float64").to_numpy(na_value=np.nan), rtol=1e-12, atol=0)
        differing |= ~(both_null | equal)
    return {"rows": len(ours), "rows_missing": int(missing_rows), "rows_differing": int(differing.sum()),
            "b_int_dtype": str(theirs["b_int"].dtype)}


def report(ls: dict[str, Any], feast: dict[str, Any], checks: dict[str, Any], args: argparse.Namespace) -> str:
    def ratio(theirs: float | None, ours: float) -> str:
        return f"{theirs / ours:.1f}x" if theirs else "-"

    lines = [f"loopstack {ls['version']} vs feast {feast.get('version')} | {platform.machine()} "
             f"{os.cpu_count()} cpus | {datetime.now(UTC):%Y-%m-%d} | entities={args.entities} "
             f"stamps={args.stamps} entity_rows={args.entity_rows}",
             f"{'measure':44} {'loopstack':>12} {'feast':>12} {'speed-up':>9}"]
    duck = feast.get("historical_duckdb_s")
    lines.append(f"{'get_historical_features vs feast duckdb (s)':44} {ls['historical_s']:12.3f} "
                 f"{duck or 0:12.3f} {ratio(duck, ls['historical_s']):>9}")
    if "historical_file_s" in feast:
        lines.append(f"{'get_historical_features vs feast file (s)':44} {ls['historical_s']:12.3f} "
                     f"{feast['historical_file_s']:12.3f} {ratio(feast['historical_file_s'], ls['historical_s']):>9}")
    for name in ("duckdb", "file"):
        key = f"historical_{name}_cpu_s"
        if key in feast:
            lines.append(f"{'  cpu seconds, vs feast ' + name:44} {ls['historical_cpu_s']:12.3f} {feast[key]:12.3f} "
                         f"{ratio(feast[key], ls['historical_cpu_s']):>9}")
    for backend in ("sqlite", "redis"):
        key = f"materialize_{backend}_s"
        lines.append(f"{'materialize view A -> ' + backend + ' (s)':44} {ls[key]:12.3f} {feast[key]:12.3f} "
                     f"{ratio(feast[key], ls[key]):>9}")
        key = f"materialize_{backend}_cpu_s"
        lines.append(f"{'  cpu seconds':44} {ls[key]:12.3f} {feast[key]:12.3f} {ratio(feast[key], ls[key]):>9}")
        for stat in ("p50_1_ms", "p99_1_ms", "p50_100_ms", "p99_100_ms"):
            ours, theirs = ls[f"online_{backend}"][stat], feast[f"online_{backend}"][stat]
            lines.append(f"{'online ' + backend + ' ' + stat:44} {ours:12.3f} {theirs:12.3f} {ratio(theirs, ours):>9}")
    for name, check in checks.items():
        lines.append(f"check vs feast {name}: {json.dumps(check)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--stamps", type=int, default=100)
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--online-reps", type=int, default=2_000)
    parser.add_argument("--skip-feast-file", action="store_true", help="skip Feast's (slow) file offline store")
    parser.add_argument("--feast-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    if args.quick:
        args.entities, args.stamps, args.entity_rows, args.reps, args.online_reps = 500, 20, 5_000, 1, 200
    if args.feast_worker:
        feast_worker(args.work, args.reps, args.online_reps, args.skip_feast_file)
        return
    generate(args.work, args.entities, args.stamps, args.entity_rows)
    print(f"data in {args.work}", file=sys.stderr)
    if not FEAST_PYTHON.exists():
        sys.exit("Feast is not installed; run `bash bench/anchors.sh feast` first")
    command = [str(FEAST_PYTHON), __file__, "--feast-worker", "--work", str(args.work), "--reps", str(args.reps),
               "--online-reps", str(args.online_reps)] + (["--skip-feast-file"] if args.skip_feast_file else [])
    feast_run = subprocess.run(command, capture_output=True, text=True, check=False)
    if feast_run.returncode != 0:
        sys.exit(f"the Feast worker failed:\n{feast_run.stderr[-4000:]}")
    feast = json.loads(feast_run.stdout.strip().splitlines()[-1])
    ours = run_loopstack(args.work, args.reps, args.online_reps)
    checks: dict[str, Any] = {"duckdb": compare(args.work, "duckdb")}
    for backend in ("sqlite", "redis"):  # one served entity, same values from both stores
        ours_row, theirs_row = ours[f"online_{backend}_sample"], feast[f"online_{backend}_sample"]
        checks[f"online_{backend}_equal"] = all(ours_row[f] == theirs_row[f] for f in A_FEATURES)
    if (args.work / "feast_file_result.parquet").exists() and not args.skip_feast_file:
        checks["file"] = compare(args.work, "file")
    text = report(ours, feast, checks, args)
    print(text)
    (args.work / "results.json").write_text(json.dumps({"loopstack": ours, "feast": feast, "checks": checks},
                                                       indent=2, default=str))
    online_equal = checks["online_sqlite_equal"] and checks["online_redis_equal"]
    if checks["duckdb"]["rows_missing"] or checks["duckdb"]["rows_differing"] or not online_equal:
        sys.exit("loopstack and Feast disagree; see the check lines above")


if __name__ == "__main__":
    main()
