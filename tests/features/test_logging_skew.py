"""Feature logging off the request path, the skew check, and the CLI commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from loopstack.core.errors import NotFoundError
from loopstack.core.project import Project
from loopstack.features.cli import apply, features
from loopstack.features.feature_log import FeatureLogger, log_meta

T0 = datetime(2024, 1, 1)
NOW = T0 + timedelta(days=3, hours=12)

DEFINITIONS = '''
from datetime import timedelta
from loopstack.features import (Entity, FeatureService, FeatureView, Field, FileSource, Float64, Int64,
                                on_demand_feature_view)

driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=2),
                    schema=[Field(name="conv_rate", dtype=Float64), Field(name="trips", dtype=Int64)],
                    source=FileSource(path="data/stats"))


@on_demand_feature_view(inputs=["stats:trips"], schema=[Field(name="trips_x2", dtype=Int64)], mode="arrow")
def doubled(batch):
    import pyarrow.compute as pc
    return {"trips_x2": pc.multiply(batch["trips"], 2)}


ranker = FeatureService(name="ranker", features=[stats, doubled], log=True)
'''


def _write(root: Path, name: str, rows: list[tuple[int, datetime, float, int]]) -> None:
    folder = root / "data" / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us")),
        "conv_rate": [r[2] for r in rows], "trips": pa.array([r[3] for r in rows], pa.int64()),
    }), folder / name)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "features.py").write_text(DEFINITIONS)
    _write(root, "base.parquet", [(d, T0 + timedelta(days=day), d + day / 10, d * 10 + day)
                                  for d in range(1, 6) for day in range(4)])
    opened = Project.init(root, name="skew", definitions=["features.py"])
    yield opened
    opened.close()


def test_logger_writes_off_the_request_path(tmp_path: Path) -> None:
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    meta = {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}
    for i in range(3):
        log.log("svc", f"r{i}", 1_000_000 * i, {"id": [i, i + 10]}, {"x": [float(i), None]}, meta)
    assert log.segments("svc") == []  # nothing written while serving
    log.flush()
    table = log.read("svc")
    assert table.num_rows == 6
    assert table.column("request_id").to_pylist() == ["r0", "r0", "r1", "r1", "r2", "r2"]
    assert table.column("x").to_pylist() == [0.0, None, 1.0, None, 2.0, None]
    assert table.column("row_in_request").to_pylist() == [0, 1] * 3
    log.close()


def _segments(log: FeatureLogger, meta: dict[str, Any], count: int, start: int = 0) -> None:
    """`count` one-request segments."""
    for i in range(start, start + count):
        log.log("svc", f"r{i}", 1_000_000 * i, {"id": [i]}, {"x": [float(i)]}, meta)
        log.flush()


def test_compaction_merges_runs_of_old_segments_and_keeps_every_row_in_order(tmp_path: Path) -> None:
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    first = {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}
    second = {"features": ["v:x", "v:y"], "columns": ["x"], "join_keys": ["id"]}
    _segments(log, first, 3)
    _segments(log, second, 2, start=3)
    before = log.read("svc")
    assert len(log.segments("svc")) == 5
    assert log.compact("svc", older_than_s=3600) == 0  # nothing is old enough
    assert log.compact("svc", older_than_s=0) == 5
    assert len(log.segments("svc")) == 2  # one file per run of segments with the same features
    after = log.read("svc")
    assert after.equals(before.replace_schema_metadata(after.schema.metadata))
    assert log_meta(after)["features"] == ["v:x", "v:y"]  # still the latest segment's features
    _segments(log, second, 1, start=5)
    assert log.compact("svc", older_than_s=0) == 0  # a merged file is not merged again; one new segment stays
    assert log.read("svc").column("request_id").to_pylist() == [f"r{i}" for i in range(6)]
    log.close()


def test_a_compaction_killed_before_deleting_its_sources_loses_and_doubles_nothing(tmp_path: Path,
                                                                                    monkeypatch: Any) -> None:
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    _segments(log, {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}, 4)
    before = log.read("svc")
    with monkeypatch.context() as patched:
        patched.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            log.compact("svc", older_than_s=0)
    assert len(list((tmp_path / "logs" / "svc").glob("*.parquet"))) == 5  # the merged file and its 4 sources
    assert log.read("svc").column("request_id").to_pylist() == before.column("request_id").to_pylist()
    assert log.compact("svc", older_than_s=0) == 0  # deletes the leftovers, merges nothing new
    assert len(list((tmp_path / "logs" / "svc").glob("*.parquet"))) == 1
    assert log.read("svc").column("x").to_pylist() == before.column("x").to_pylist()
    log.close()


def test_a_reader_that_listed_segments_before_a_compaction_still_reads_every_row_once(tmp_path: Path,
                                                                                        monkeypatch: Any) -> None:
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    _segments(log, {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}, 4)
    expected = log.read("svc").column("request_id").to_pylist()
    listed = FeatureLogger.segments

    def listed_then_compacted(self: FeatureLogger, name: str) -> list[Path]:
        files = listed(self, name)
        monkeypatch.setattr(FeatureLogger, "segments", listed)  # only the first listing is stale
        assert self.compact(name, older_than_s=0) == 4  # deletes the files just listed
        return files

    monkeypatch.setattr(FeatureLogger, "segments", listed_then_compacted)
    assert log.read("svc").column("request_id").to_pylist() == expected  # was FileNotFoundError
    log.close()


def test_compaction_removes_half_written_files_a_killed_process_left(tmp_path: Path) -> None:
    import os
    import time

    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    _segments(log, {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}, 1)
    folder = tmp_path / "logs" / "svc"
    killed_compaction, abandoned, being_written = (folder / n for n in (
        "segment-1-a-compacted.tmp", "segment-2-b.tmp", "segment-3-c.tmp"))
    for path in (killed_compaction, abandoned, being_written):
        path.write_bytes(b"PAR1 partial")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))
    log.compact("svc", older_than_s=0)
    assert sorted(p.name for p in folder.glob("*.tmp")) == ["segment-3-c.tmp"]  # a writer may still finish it
    assert log.read("svc").num_rows == 1
    log.close()


def test_a_segment_is_synced_before_its_rename_and_its_folder_after(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # renamed without an fsync, a segment could come back empty after an OS crash
    import os

    import loopstack.core.paths as paths

    steps: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def synced(fd: int) -> None:
        steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def renamed(source: Any, target: Any) -> None:
        steps.append(("rename", str(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(os, "replace", renamed)
    monkeypatch.setattr(paths, "fsync_folder", lambda folder: steps.append(("fsync folder", str(folder))))
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    _segments(log, {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}, 2)
    [first, _] = log.segments("svc")
    folder = str(tmp_path / "logs" / "svc")
    assert steps[:3] == [("fsync", str(first.with_suffix(".tmp"))), ("rename", str(first)), ("fsync folder", folder)]
    steps.clear()
    assert log.compact("svc", older_than_s=0) == 2  # the merged file too, before its sources are deleted
    [merged] = log.segments("svc")
    assert steps == [("fsync", str(merged.with_suffix(".tmp"))), ("rename", str(merged)), ("fsync folder", folder)]
    log.close()


@pytest.mark.parametrize("torn", [b"", b"PAR1 truncated"])
def test_a_segment_that_cannot_be_read_is_skipped_with_a_warning(tmp_path: Path, torn: bytes,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # one empty segment (an OS crash after an unsynced rename) made every read fail with ArrowInvalid
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    meta = {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}
    _segments(log, meta, 2)
    bad = tmp_path / "logs" / "svc" / "segment-1-torn.parquet"  # sorts first
    bad.write_bytes(torn)
    _segments(log, meta, 1, start=2)
    assert log.read("svc").column("request_id").to_pylist() == ["r0", "r1", "r2"]
    assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert log.compact("svc", older_than_s=0) == 3  # the others are merged; the torn one is left alone
    assert bad.exists()
    assert log.read("svc").column("request_id").to_pylist() == ["r0", "r1", "r2"]
    log.close()
    empty = FeatureLogger(tmp_path / "only-torn", flush_interval_s=60)
    (tmp_path / "only-torn" / "svc").mkdir(parents=True)
    (tmp_path / "only-torn" / "svc" / "segment-1-torn.parquet").write_bytes(torn)
    with pytest.raises(NotFoundError, match="no readable segment"):
        empty.read("svc")
    empty.close()


def test_served_rows_are_logged_and_skew_is_zero_when_paths_agree(project: Project) -> None:
    store = project.feature_store
    store.apply()
    store.materialize(T0, NOW, progress=False)
    response = store.get_online_features("ranker", [{"driver_id": d} for d in (1, 2, 3, 9)], now=NOW)
    assert response.request_id is not None
    assert response.values["trips_x2"] == [26, 46, 66, None]
    report = store.skew("ranker")
    assert report.rows == 4
    assert {f.ref: f.mismatches for f in report.features} == {
        "stats:conv_rate": 0, "stats:trips": 0, "doubled:trips_x2": 0}


def test_skew_finds_values_that_changed_after_serving(project: Project) -> None:
    store = project.feature_store
    store.apply()
    store.materialize(T0, NOW, progress=False)
    for d in (1, 2, 3, 4):
        store.get_online_features("ranker", [{"driver_id": d}], now=NOW)
    # a late row for driver 2, timed before the requests, that never reached the online store
    _write(project.root, "late.parquet", [(2, T0 + timedelta(days=3, hours=1), 99.0, 99)])
    report = store.skew("ranker")
    by_ref = {f.ref: f for f in report.features}
    assert by_ref["stats:conv_rate"].mismatches == 1 and by_ref["stats:conv_rate"].rate == 0.25
    assert by_ref["doubled:trips_x2"].mismatches == 1
    example = by_ref["stats:trips"].examples[0]
    assert (example["driver_id"], example["served"], example["offline"]) == (2, 23, 99)


def _invoke(command: Any, args: list[str], root: Path) -> Any:
    result = CliRunner().invoke(command, args, obj={"project_path": str(root)}, catch_exceptions=False)
    return result


def test_cli_apply_list_materialize_skew(project: Project) -> None:
    root = project.root
    dry = _invoke(apply, ["--dry-run"], root)
    assert dry.exit_code == 0 and "+ feature view stats (features.py" in dry.output
    assert "4 to add" in dry.output
    assert project.feature_store.plan().added  # dry run changed nothing
    assert _invoke(apply, [], root).exit_code == 0
    assert "no changes" in _invoke(apply, [], root).output
    listed = json.loads(_invoke(features, ["list", "--json"], root).output)
    assert {(r["kind"], r["name"]) for r in listed} >= {("feature_view", "stats"), ("feature_service", "ranker")}
    service = next(r for r in listed if r["kind"] == "feature_service")  # its fields were listed empty
    assert "stats:conv_rate" in service["fields"] and all(":" in ref for ref in service["fields"])
    done = _invoke(features, ["materialize", "--start", T0.isoformat(), "--end", NOW.isoformat()], root)
    assert done.exit_code == 0 and "stats: 5 entities" in done.output
    project.feature_store.get_online_features("ranker", [{"driver_id": 1}], now=NOW)
    project.feature_store.feature_log.flush()
    report = json.loads(_invoke(features, ["skew", "ranker", "--json"], root).output)
    assert report["rows"] == 1 and all(f["mismatches"] == 0 for f in report["features"])
    _write(root, "late.parquet", [(1, T0 + timedelta(days=3, hours=1), 5.0, 5)])
    failed = CliRunner().invoke(features, ["skew", "ranker", "--fail-above", "0.1"], obj={"project_path": str(root)})
    assert failed.exit_code == 1 and "exceeds --fail-above" in failed.output
    # a gate over a window without served rows checked nothing: it fails instead of passing
    empty = CliRunner().invoke(features, ["skew", "ranker", "--since", "2030-01-01", "--fail-above", "0.1"],
                               obj={"project_path": str(root)})
    assert empty.exit_code == 1 and "no served rows of ranker between 2030-01-01" in empty.output, empty.output
    project.feature_store.get_online_features("ranker", [{"driver_id": 2}], now=NOW)
    project.feature_store.feature_log.flush()
    compacted = _invoke(features, ["compact", "ranker", "--older-than", "0"], root)
    assert compacted.exit_code == 0 and "ranker: merged 2 segments" in compacted.output
    assert project.feature_store.feature_log.read("ranker").num_rows == 2


def test_requests_with_other_entity_columns_or_key_types_are_all_logged(tmp_path: Path) -> None:
    """A segment of requests that sent different columns (an extra request value) or a key once as 1 and
    once as "1" was refused whole, with a warning: every row of it was lost."""
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    meta = {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}
    log.log("svc", "r0", 0, {"id": [1]}, {"x": [1.0]}, meta)
    log.log("svc", "r1", 0, {"id": ["2"], "note": ["n"]}, {"x": [2.0]}, meta)
    log.flush()
    log.log("svc", "r2", 0, {"id": [3, 4]}, {"x": [3.0, None]}, meta)
    log.flush()
    logged = log.read("svc")
    assert logged.column("request_id").to_pylist() == ["r0", "r1", "r2", "r2"]
    assert logged.column("id").to_pylist() == ["1", "2", "3", "4"]
    assert logged.column("note").to_pylist() == [None, "n", None, None]
    assert log.compact("svc", older_than_s=0) == 2
    assert log.read("svc").column("id").to_pylist() == ["1", "2", "3", "4"]
    log.close()


def test_skew_of_requests_that_sent_a_key_as_text_and_an_extra_value(project: Project) -> None:
    store = project.feature_store
    store.apply()
    store.materialize(T0, NOW, progress=False)
    store.get_online_features("ranker", [{"driver_id": 1}], now=NOW)
    store.get_online_features("ranker", [{"driver_id": "2", "channel": "web"}], now=NOW)
    report = store.skew("ranker")
    assert report.rows == 2
    assert all(f.mismatches == 0 for f in report.features)


@pytest.mark.timeout(20)
def test_a_segment_that_cannot_be_written_under_warnings_as_errors_leaves_the_writer_running(
        tmp_path: Path, monkeypatch: Any, caplog: Any) -> None:
    """The failure was a warning; with warnings as errors (this suite's setting) it ended the writer thread,
    and this flush then waited forever."""
    log = FeatureLogger(tmp_path / "logs", flush_interval_s=60)
    meta = {"features": ["v:x"], "columns": ["x"], "join_keys": ["id"]}
    real_write = FeatureLogger._write
    with monkeypatch.context() as patched:
        patched.setattr(FeatureLogger, "_write", lambda self, name, items: (_ for _ in ()).throw(OSError("disk full")))
        log.log("svc", "r0", 0, {"id": [1]}, {"x": [1.0]}, meta)
        log.flush()
    assert "disk full" in caplog.text
    monkeypatch.setattr(FeatureLogger, "_write", real_write)
    log.log("svc", "r1", 0, {"id": [2]}, {"x": [2.0]}, meta)
    log.flush()
    assert log.read("svc").column("request_id").to_pylist() == ["r1"]
    log.close()


def test_equal_infinities_and_nans_are_no_skew() -> None:
    """An infinity served and recomputed is a match; |inf - inf| is NaN, which no tolerance covers."""
    from loopstack.features.skew import _mismatch

    inf, nan = float("inf"), float("nan")
    served = pa.array([inf, -inf, nan, 1.0, inf, None], pa.float64())
    offline = pa.array([inf, -inf, nan, 1.0, -inf, 1.0], pa.float64())
    assert _mismatch(served, offline, rtol=1e-9, atol=1e-12).to_pylist() == [False, False, False, False, True, True]
