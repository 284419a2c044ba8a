"""On a SQLite file, a run's life goes through the driver with SQL written out in advance.

These tests hold that path to the SQLAlchemy one: every statement written out
is what SQLAlchemy compiles, and a run stored either way reads back the same.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from tests.conftest import fresh_project

import loopstack as ls
from loopstack.core import events
from loopstack.core.db import MetadataDB
from loopstack.core.direct import Compiled, DirectStatement
from loopstack.core.project import Project
from loopstack.tracking import fluent, store, writer


def _life_of_a_run(project: Project, tmp_path: Path) -> str:
    """Every statement a run's life issues: experiment, run, params, metrics, tags, artifact, heartbeat, end."""
    tracking = project.tracking
    tracking._last_beat = 0.0
    run = fluent.start_run(project=project, experiment="exp", run_name="life", params={"lr": 0.1})
    fluent.log_metric("loss", 0.5, step=0)
    fluent.log_metric("loss", 0.25, step=1)
    fluent.log_metric("acc", float("nan"), step=1)
    fluent.set_tag("team", "fraud")
    (tmp_path / "note.txt").write_text("hello")
    tracking.writer.artifacts.append((run.id, "note.txt", "0" * 64, 5, "file"))
    tracking.flush()
    fluent.end_run()
    spooled = fluent.start_run(project=project, experiment="exp", run_name="spooled")
    _spool_end(project, spooled.id)  # its end could not be written before its process exited
    assert tracking.replay_spool()
    fluent.end_run()
    return run.id


def _spool_end(project: Project, run_id: str) -> None:
    import os

    from loopstack.tracking import spool
    from loopstack.tracking.processes import own_start_time

    end = {"run_id": run_id, "status": "FINISHED", "end_time": 2.0, "host": store.HOST, "pid": os.getpid(),
           "pid_started": own_start_time()}
    spool.write(project.tracking.spool_folder, ([], [], [], []), [end])


def test_every_statement_written_out_is_what_sqlalchemy_compiles(tmp_path: Path) -> None:
    with fresh_project(tmp_path / "p") as project:
        _life_of_a_run(project, tmp_path)
        db = project.db
        used = dict(db.precompiled)
    dialect = create_engine("sqlite://").dialect
    for written, (build, columns) in used.items():
        compiled = DirectStatement(build(), dialect, columns)
        assert written.sql == compiled.sql
        assert written.returns == compiled.returns
        names = list(written.names)
        row = {name: ({"k": [1, 2.5]} if name in written.json else "1.5") for name in names}  # floats convert
        assert DirectStatement.precompiled(written, Exception)._convert(row) == compiled._convert(row)
    every = {v for module in (store, writer, events) for v in vars(module).values() if isinstance(v, Compiled)}
    unused = every - set(used)
    assert unused <= {events._INSERT, events._INSERT_RETURNING}, unused  # one of the two per SQLite version
    assert len(unused) == 1


def test_run_columns_are_the_table_columns() -> None:
    from loopstack.tracking.tables import runs

    assert tuple(column.name for column in runs.columns) == store.RUN_COLUMNS


def _stored(project: Project) -> dict[str, Any]:
    """What the database holds, ids and clocks left out."""
    out: dict[str, Any] = {}
    with project.db.read() as connection:
        sql = connection.exec_driver_sql
        out["experiments"] = sql("SELECT name FROM experiments ORDER BY id").all()
        out["runs"] = sql("SELECT name, status, parent_id, host, pid FROM runs").all()
        out["params"] = sql("SELECT key, value FROM params ORDER BY key").all()
        out["metrics"] = sql("SELECT key, value, step FROM metrics WHERE key NOT LIKE 'system.%' ORDER BY key").all()
        out["latest"] = sql("SELECT key, value, step FROM latest_metrics WHERE key NOT LIKE 'system.%'").all()
        out["system"] = sql("SELECT key FROM latest_metrics WHERE key LIKE 'system.%' ORDER BY key").all()
        out["tags"] = sql("SELECT key FROM tags ORDER BY key").all()
        out["artifacts"] = sql("SELECT path, digest, size, kind FROM artifacts ORDER BY path").all()
        out["events"] = [(k, s != "", p) for k, s, p in sql("SELECT kind, subject, payload FROM events ORDER BY id")]
        times = sql("SELECT start_time, end_time, heartbeat FROM runs").all()
    out["clocks_set"] = all(t is not None and abs(t - time.time()) < 600 for row in times for t in row)
    return {
        k: [tuple(r) if not isinstance(r, tuple) else r for r in v] if isinstance(v, list) else v
        for k, v in out.items()
    }


def _events_without_ids(stored: dict[str, Any]) -> None:
    import json

    cleaned = []
    for kind, has_subject, payload in stored["events"]:
        body = json.loads(payload)
        body.pop("experiment_id", None)
        cleaned.append((kind, has_subject, body))
    stored["events"] = cleaned


def test_a_run_stored_through_the_driver_reads_back_as_one_stored_through_sqlalchemy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fresh_project(tmp_path / "driver") as project:
        assert project.db.raw is not None
        _life_of_a_run(project, tmp_path)
        driver = _stored(project)
        with project.db.read() as connection:
            master_driver = set(connection.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all())
    original = MetadataDB.__init__

    def without_driver(self: MetadataDB, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.raw = None

    monkeypatch.setattr(MetadataDB, "__init__", without_driver)
    with fresh_project(tmp_path / "engine") as project:
        assert project.db.raw is None
        _life_of_a_run(project, tmp_path)
        engine = _stored(project)
        with project.db.read() as connection:
            master_engine = set(connection.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all())
    _events_without_ids(driver)
    _events_without_ids(engine)
    assert driver == engine
    assert driver["clocks_set"] and driver["metrics"] and driver["artifacts"] and driver["tags"]
    assert master_driver == master_engine


def test_dead_runs_are_found_the_same_way_on_both_paths(sqlite_project: Project) -> None:
    tracking = sqlite_project.tracking
    run = fluent.start_run(project=sqlite_project)
    with sqlite_project.db.write() as connection:  # a run whose process is gone
        connection.exec_driver_sql("UPDATE runs SET pid = 999999999, pid_started = 1.0 WHERE id = ?", (run.id,))
    tracking._live_runs.discard(run.id)
    through_driver = [tuple(row) for row in tracking._running_runs()]
    raw, sqlite_project.db.raw = sqlite_project.db.raw, None
    try:
        through_engine = [tuple(row) for row in tracking._running_runs()]
    finally:
        sqlite_project.db.raw = raw
    assert through_driver == through_engine and len(through_driver) == 1
    assert tracking.reap_dead_runs() == [run.id]
    assert tracking.get_run_info(run.id).status == "KILLED"
    fluent._stacks.clear()  # the killed run is not this process's to end
    fluent._local.__dict__.clear()


def test_a_write_refused_by_a_lock_keeps_its_rows_for_the_next_flush(sqlite_project: Project) -> None:
    from sqlalchemy.exc import OperationalError

    tracking = sqlite_project.tracking
    run = fluent.start_run(project=sqlite_project)
    tracking.flush()
    for step in range(100):
        fluent.log_metric("loss", step / 100, step=step)
    assert sqlite_project.db.raw is not None
    for idle in sqlite_project.db.raw._idle:  # give up on the lock quickly instead of after 30 s
        idle.execute("PRAGMA busy_timeout=50")
    locker = sqlite3.connect(sqlite_project.root / ".loopstack" / "meta.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            tracking.writer.flush()
        assert tracking.writer._retry is not None  # kept, not dropped
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    fluent.end_run()
    steps = [m.step for m in ls.Client(sqlite_project).get_metric_history(run.id, "loss")]
    assert steps == list(range(100))  # every point once
