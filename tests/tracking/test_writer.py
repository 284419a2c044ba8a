"""The background writer: a row the database refuses for good is dropped alone; a failure of the database
keeps every row for the next attempt."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import loopstack as ls
from loopstack.core.project import Project

NO_SUCH_RUN = "0" * 32


def _locked() -> OperationalError:
    """What the writer gets when the database is locked or away: a failure of the database, not of the rows."""
    return OperationalError("INSERT INTO metrics ...", None, sqlite3.OperationalError("database is locked"))


def _bad_row(kind: str, run_id: str) -> tuple[str, tuple[Any, ...], str]:
    """A row that reached the buffer without the checks of the log calls; its table, the row, its key."""
    if kind == "metric-of-a-missing-run":  # a foreign-key violation on every backend
        return "metrics", (NO_SUCH_RUN, "loss", 0.75, 7, time.time()), "loss"
    return "tags", (run_id, "source", "data/\udcff.csv"), "source"  # no driver encodes a lone surrogate


@pytest.mark.parametrize("kind", ["metric-of-a-missing-run", "tag-with-a-lone-surrogate"])
def test_a_row_the_database_refuses_is_dropped_alone_and_the_run_ends_with_the_others(
    project: Project, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One such row used to fail every later batch: no later point of any run was written and no run could end."""
    writer = project.tracking.writer
    with ls.start_run() as run:
        run.log_metric("loss", 0.5, step=1)
        table, row, key = _bad_row(kind, run.id)
        getattr(writer, table).append(row)
        run.log_metric("loss", 0.25, step=2)
        run.set_tag("kept", "yes")
    with ls.start_run() as later:
        later.log_metric("loss", 0.1, step=1)
    client = ls.Client(project)
    stored = client.get_run(run.id)
    assert stored.status == "FINISHED" and stored.tags["kept"] == "yes" and "source" not in stored.tags
    assert [(m.step, m.value) for m in client.get_metric_history(run.id, "loss")] == [(1, 0.5), (2, 0.25)]
    assert client.get_run(later.id).status == "FINISHED" and client.get_run(later.id).metrics["loss"] == 0.1
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "dropped" in r.getMessage()]
    assert len(dropped) == 1 and row[0] in dropped[0] and repr(key) in dropped[0] and repr(row[2]) in dropped[0]
    [event] = project.events.list(kind="run.value_dropped")
    assert event.subject == row[0] and event.payload["table"] == table and event.payload["key"] == repr(key)


def test_a_failure_of_the_database_keeps_every_row_for_the_next_attempt(project: Project) -> None:
    writer = project.tracking.writer
    database_down = True

    def fail_while_down(_connection: Any) -> None:
        if database_down:
            raise _locked()

    writer.before_write.append(fail_while_down)
    with ls.start_run() as run:
        for step in range(5):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.log_param("lr", 0.1)
        with pytest.raises(OperationalError, match="locked"):
            writer.flush()
        database_down = False
    stored = ls.Client(project).get_run(run.id)
    assert stored.status == "FINISHED" and stored.params == {"lr": "0.1"}
    assert [m.step for m in ls.Client(project).get_metric_history(run.id, "loss")] == [0, 1, 2, 3, 4]


def test_a_failure_of_the_database_while_isolating_a_bad_row_keeps_the_rows_not_yet_written(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written before the failure are not written twice; the others wait for the next attempt."""
    writer = project.tracking.writer
    write_once = writer._write_once
    database_down = True

    def fail_after_the_first_part(batch: Any, thens: Any = (), hooks: Any = None) -> None:
        if hooks is None and database_down and sum(map(len, batch)) < 3:  # the whole batch first, then parts
            raise _locked()
        write_once(batch, thens, hooks)

    monkeypatch.setattr(writer, "_write_once", fail_after_the_first_part)
    with ls.start_run() as run:
        for step in range(4):
            run.log_metric("loss", float(step), step=step)
        writer.metrics.append((NO_SUCH_RUN, "loss", 9.0, 9, time.time()))
        with pytest.raises(OperationalError, match="locked"):
            writer.flush()
        database_down = False
    history = ls.Client(project).get_metric_history(run.id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert ls.Client(project).get_run(run.id).status == "FINISHED"


def _stored_by_another_process(project: Project, run_id: str, params: dict[str, str]) -> None:
    table = project.db.table("params")
    with project.db.write() as connection:
        connection.execute(table.insert(), [{"run_id": run_id, "key": k, "value": v} for k, v in params.items()])


def test_a_param_another_process_stored_with_another_value_raises_at_the_end_of_the_run(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes logging one param of a run with different values both returned normally; one value was
    silently lost (the insert keeps the stored value)."""
    from loopstack.core.errors import ConflictError

    run = ls.start_run()
    _stored_by_another_process(project, run.id, {"threshold": "0.9", "same": "1"})
    run.log_param("threshold", "0.5")
    run.log_param("same", "1")  # the same value is no conflict
    run.log_metric("loss", 0.5)
    with pytest.raises(ConflictError, match=r"param 'threshold' of run \w+: '0.5' was dropped, '0.9' is stored"):
        run.__exit__(None, None, None)  # leaving a `with` block
    stored = ls.Client(project).get_run(run.id)
    assert stored.status == "FINISHED" and stored.metrics["loss"] == 0.5
    assert stored.params == {"threshold": "0.9", "same": "1"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "param" in r.getMessage()]
    assert len(warned) == 1 and run.id in warned[0] and "'0.5'" in warned[0] and "'0.9'" in warned[0]
    [event] = project.events.list(kind="run.value_dropped")
    assert event.subject == run.id
    assert {k: event.payload[k] for k in ("table", "key", "value", "kept")} == {
        "table": "params", "key": "'threshold'", "value": "'0.5'", "kept": "'0.9'"}


def test_a_param_conflict_raises_at_flush_once_and_does_not_hide_a_failure(project: Project) -> None:
    from loopstack.core.errors import ConflictError

    with ls.start_run() as run:
        _stored_by_another_process(project, run.id, {"a": "1"})
        run.log_param("a", "2")
        with pytest.raises(ConflictError, match=r"param 'a' of run \w+: '2' was dropped, '1' is stored"):
            project.tracking.flush()
    # raised once: leaving the block did not raise it again
    failed = ls.start_run()
    _stored_by_another_process(project, failed.id, {"b": "1"})
    failed.log_param("b", "2")
    failed.__exit__(RuntimeError, RuntimeError("training failed"), None)  # a `with` block left by an error: no raise
    assert ls.Client(project).get_run(failed.id).status == "FAILED"
    assert sorted(e.subject for e in project.events.list(kind="run.value_dropped")) == sorted([run.id, failed.id])
    project.tracking.flush()  # nothing left to raise
