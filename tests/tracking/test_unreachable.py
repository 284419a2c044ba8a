"""The metadata database going away mid-run (PostgreSQL): a run's end raises one clear error and keeps its
rows and its end for the writer's retry; at exit, one logged line instead of a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.conftest import fresh_project

import loopstack as ls
from loopstack.core.db import _create_engine, normalize_url
from loopstack.core.errors import BackendUnavailableError
from loopstack.core.project import Project
from loopstack.tracking import fluent

pytestmark = pytest.mark.postgres


@contextmanager
def server_away(project: Project) -> Iterator[None]:
    """The project's engine points at a port nothing listens on until the block ends."""
    engine = project.db.engine
    away = _create_engine(normalize_url("postgresql://postgres@127.0.0.1:1/test", project.root))
    project.db.__dict__["engine"] = away
    try:
        yield
    finally:
        project.db.__dict__["engine"] = engine
        away.dispose()


def test_ending_a_run_while_the_server_is_away_keeps_its_rows_and_end_for_the_retry(
    postgres_url: str, tmp_path: Path
) -> None:
    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        run = ls.start_run(run_name="away")
        ls.log_metric("a", 1.0, step=0)
        project.tracking.flush()
        with server_away(project):
            ls.log_metric("a", 2.0, step=1)
            with pytest.raises(BackendUnavailableError, match=r"could not be marked FINISHED: cannot reach .*kept"):
                ls.end_run()
            assert ls.active_run() is None
        project.tracking.flush()  # the server is back: what the background writer does at its next tick
        client = ls.Client(project)
        assert client.get_run(run.id).status == "FINISHED"
        assert [m.value for m in client.get_metric_history(run.id, "a")] == [1.0, 2.0]
        assert [e.kind for e in project.events.list(subject=run.id, kind="run.finished")] == ["run.finished"]


def test_at_exit_a_server_that_is_away_is_one_logged_line(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        ls.start_run(run_name="exit")
        ls.log_metric("a", 1.0, step=0)
        with server_away(project), caplog.at_level(logging.ERROR, logger="loopstack.tracking"):
            fluent._end_all("FINISHED")  # what atexit calls: no exception may escape
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(lines) == 1 and "lost" in lines[0] and "1 run ends" in lines[0] and "cannot reach" in lines[0]


def test_every_run_end_kept_for_the_retry_is_counted_and_written(postgres_url: str, tmp_path: Path) -> None:
    """Two ends kept from failed writes were folded into one function and counted as one run end."""
    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        runs = [ls.start_run(run_name=name, nested=True) for name in ("first", "second")]
        with server_away(project):
            for _ in runs:
                with pytest.raises(BackendUnavailableError):
                    ls.end_run()
            with pytest.raises(BackendUnavailableError):
                project.tracking.flush()  # a background retry that fails again keeps both ends
            assert project.tracking.writer.unwritten()[1] == 2
        project.tracking.flush()
        client = ls.Client(project)
        assert [client.get_run(run.id).status for run in runs] == ["FINISHED", "FINISHED"]
