"""The metadata database going away mid-run (PostgreSQL): a run's end raises one clear error and keeps its
rows and its end for the writer's retry; at exit, one logged line instead of a traceback."""

from __future__ import annotations

import logging
import os
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
from loopstack.tracking.run import ActiveRun

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


@contextmanager
def ended_while_away(project: Project, name: str) -> Iterator[ActiveRun]:
    """A run that logged a=1.0 (written) and a=2.0, then failed to end: the server is away for the block."""
    run = ls.start_run(run_name=name)
    ls.log_metric("a", 1.0, step=0)
    project.tracking.flush()
    with server_away(project):
        ls.log_metric("a", 2.0, step=1)
        with pytest.raises(BackendUnavailableError, match=r"could not be marked FINISHED: cannot reach .*kept"):
            ls.end_run()
        yield run


def test_ending_a_run_while_the_server_is_away_keeps_its_rows_and_end_for_the_retry(
    postgres_url: str, tmp_path: Path
) -> None:
    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        with ended_while_away(project, "away") as run:
            assert ls.active_run() is None
        project.tracking.flush()  # the server is back: what the background writer does at its next tick
        client = ls.Client(project)
        assert client.get_run(run.id).status == "FINISHED"
        assert [m.value for m in client.get_metric_history(run.id, "a")] == [1.0, 2.0]
        assert [e.kind for e in project.events.list(subject=run.id, kind="run.finished")] == ["run.finished"]


def test_at_exit_a_server_that_is_away_is_one_logged_line_naming_the_spool(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        ls.start_run(run_name="exit")
        ls.log_metric("a", 1.0, step=0)
        with server_away(project), caplog.at_level(logging.ERROR, logger="loopstack.tracking"):
            fluent._end_all("FINISHED")  # what atexit calls: no exception may escape
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(lines) == 1 and "1 run ends" in lines[0] and "cannot reach" in lines[0]
        assert "kept in" in lines[0] and "written when a process next opens the project" in lines[0]


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


CHILD = """
import sys
import loopstack as ls
from loopstack.core.db import _create_engine, normalize_url

project = ls.Project.open(sys.argv[1])
run = ls.start_run(run_name="spooled")
ls.log_param("lr", "0.1")
ls.log_metric("loss", 1.0, step=0)
project.tracking.flush()
ls.log_metric("loss", 0.5, step=1)
ls.set_tag("stage", "late")
print(run.id, flush=True)
project.db.__dict__["engine"] = _create_engine(normalize_url("postgresql://postgres@127.0.0.1:1/test", project.root))
# exits here: atexit ends the run with the server away
"""


def test_what_a_process_could_not_write_at_exit_is_written_at_the_next_open(postgres_url: str,
                                                                           tmp_path: Path) -> None:
    """The rows and the end of a run whose process exited with the server away were lost (one logged line),
    and the next open marked the run KILLED."""
    import subprocess
    import sys

    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        root = project.root
    child = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    run_id = child.stdout.split()[0]
    assert " are kept in " in child.stderr and "tracking rows and 1 run ends" in child.stderr, child.stderr
    folder = root / ".loopstack" / "spool" / "tracking"
    assert len(list(folder.glob("*.json"))) == 1
    project = Project.open(root)  # what the next process does
    try:
        client = ls.Client(project)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"  # not KILLED: the end was replayed before dead runs are reaped
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(0, 1.0), (1, 0.5)]
        assert run.params == {"lr": "0.1"} and run.tags["stage"] == "late" and run.metrics["loss"] == 0.5
        assert list(folder.iterdir()) == []
        assert [e.kind for e in project.events.list(subject=run_id, kind="run.")] == ["run.finished", "run.started"]
    finally:
        project.close()


def test_a_spool_file_is_written_once_even_if_left_behind_after_its_commit(postgres_url: str, tmp_path: Path) -> None:
    import fcntl

    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        with ended_while_away(project, "twice") as run:
            path, rows, ends = project.tracking.spool_unwritten()
        assert path is not None and rows >= 1 and ends == 1  # the metric, and what the system sampler logged
        saved = path.read_bytes()
        with open(path, "rb") as held:  # another process is writing it: skipped, not written twice
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            assert project.tracking.replay_spool() == []
        assert project.tracking.replay_spool() == [path]
        path.write_bytes(saved)  # a process killed after the commit, before it removed the file
        assert project.tracking.replay_spool() == [path]  # removed, not written again
        client = ls.Client(project)
        assert [m.value for m in client.get_metric_history(run.id, "a")] == [1.0, 2.0]
        assert list(path.parent.iterdir()) == []
        assert client.get_run(run.id).info.status == "FINISHED"
        assert len(project.events.list(kind="tracking.spool_replayed")) == 1


def _spooled(project: Project, run_id: str, *, pid: int | None = None, values: tuple[float, ...] = (1.0,)) -> Path:
    from loopstack.tracking import spool
    from loopstack.tracking.processes import own_start_time
    from loopstack.tracking.store import HOST

    metrics = [(run_id, "m", value, step, 1.0) for step, value in enumerate(values)]
    end = {"run_id": run_id, "status": "FINISHED", "end_time": 2.0, "host": HOST, "pid": pid or os.getpid(),
           "pid_started": own_start_time()}
    return spool.write(project.tracking.spool_folder, (metrics, [], [], []), [end])


def test_what_is_not_a_spool_file_breaks_no_open_and_a_bad_one_is_set_aside(tmp_path: Path) -> None:
    """A stray notes.json, or a claim-like name, made every later Project.open fail on int()."""
    with fresh_project(tmp_path / "proj") as project:
        run = ls.start_run(run_name="r")
        ls.end_run()
        folder = project.tracking.spool_folder
        folder.mkdir(parents=True)
        for name in ("notes.json", "x.json.tmp.claimed", "12-34.json.rejected"):
            (folder / name).write_text("{}")
        corrupt = folder / "5-6.json"
        corrupt.write_text('{"format": 1, "metrics": [')  # torn
        empty_row = folder / "7-8.json"  # an empty row failed with IndexError, taken for a passing error
        empty_row.write_text('{"format": 1, "metrics": [[]], "params": [], "tags": [], "artifacts": [], "ends": []}')
        good = _spooled(project, run.id)
        assert project.tracking.replay_spool() == [good]
        assert sorted(p.name for p in folder.iterdir()) == ["12-34.json.rejected", "5-6.json.rejected",
                                                          "7-8.json.rejected", "notes.json", "x.json.tmp.claimed"]
        assert [m.value for m in ls.Client(project).get_metric_history(run.id, "m")] == [1.0]


def test_a_replay_is_all_or_nothing_and_skips_runs_deleted_since(tmp_path: Path) -> None:
    """Rows of a deleted run made the writer write the file in pieces, outside the replay's transaction: a
    kill, or a refused run end, then wrote the good rows again at every open."""
    with fresh_project(tmp_path / "proj") as project:
        run = ls.start_run(run_name="kept")
        ls.end_run()
        path = _spooled(project, run.id, values=(1.0, 2.0))
        from loopstack.tracking import spool

        spool.write(project.tracking.spool_folder, ([("no-such-run", "m", 9.0, 0, 1.0)], [], [], []),
                    [{"run_id": "no-such-run", "status": "FINISHED", "end_time": 2.0, "host": "h", "pid": 1}])
        assert len(project.tracking.replay_spool()) == 2 and not path.exists()
        assert project.tracking.replay_spool() == []
        assert [m.value for m in ls.Client(project).get_metric_history(run.id, "m")] == [1.0, 2.0]
        (second, first) = project.events.list(kind="tracking.spool_replayed")
        assert (first.payload["left_out"], second.payload["left_out"]) == (0, 1)


def test_a_spooled_end_leaves_a_run_resumed_since_running(tmp_path: Path) -> None:
    """The end overwrote a run another process had resumed meanwhile (FINISHED with an old end time)."""
    with fresh_project(tmp_path / "proj") as project:
        run = ls.start_run(run_name="resumed")
        _spooled(project, run.id, pid=1)  # spooled by the process that ran it before: another pid than ours
        project.tracking.replay_spool()
        info = ls.Client(project).get_run(run.id).info
        assert info.status == "RUNNING" and [m.value for m in ls.Client(project).get_metric_history(run.id, "m")] == [
            1.0]
        ls.end_run()


def test_closing_a_project_with_the_server_away_spools_and_says_where(postgres_url: str, tmp_path: Path) -> None:
    """Under `with Project.open(...)` the rows were lost: close() dropped the project before the exit hook ran,
    while end_run had said they would be kept."""
    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        run = ls.start_run(run_name="closed")
        project.tracking.flush()
        with server_away(project):
            ls.log_metric("late", 3.0)
            with pytest.raises(BackendUnavailableError):
                ls.end_run()
            with pytest.raises(BackendUnavailableError, match=r"1 run ends of the project .* are kept in .*\.json"):
                project.tracking.close()
        assert project.tracking.replay_spool()
        assert ls.Client(project).get_run(run.id).info.status == "FINISHED"
        assert [m.value for m in ls.Client(project).get_metric_history(run.id, "late")] == [3.0]


def test_a_spooled_end_leaves_a_run_whose_process_started_anew_under_the_same_pid_running(tmp_path: Path) -> None:
    from loopstack.tracking import spool
    from loopstack.tracking.store import HOST

    with fresh_project(tmp_path / "proj") as project:
        run = ls.start_run(run_name="same-pid")
        end = {"run_id": run.id, "status": "FINISHED", "end_time": 2.0, "host": HOST, "pid": os.getpid(),
               "pid_started": 1.0}  # another process that had our pid: a pid alone is reused
        spool.write(project.tracking.spool_folder, ([], [], [], []), [end])
        assert project.tracking.replay_spool()
        assert ls.Client(project).get_run(run.id).info.status == "RUNNING"
        ls.end_run()


def test_a_database_error_that_passes_keeps_the_spool_file_for_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A locked SQLite file (or a deadlock) set the file aside as rejected for good."""
    import sqlite3

    with fresh_project(tmp_path / "proj") as project:
        run = ls.start_run(run_name="locked")
        ls.end_run()
        path = _spooled(project, run.id)

        def locked(*args: object, **kwargs: object) -> None:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(project.tracking.writer, "write_now", locked)
        assert project.tracking.replay_spool() == [] and path.exists()
        monkeypatch.undo()
        assert project.tracking.replay_spool() == [path]
        assert [m.value for m in ls.Client(project).get_metric_history(run.id, "m")] == [1.0]


def test_a_spool_that_cannot_be_written_gives_rows_and_ends_back_and_counts_them(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "lost" line counted after the rows were taken (0 of each), and the run's end was gone for good."""
    from loopstack.tracking import spool

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        with ended_while_away(project, "full") as run:
            monkeypatch.setattr(spool, "write", full_disk)
            with pytest.raises(BackendUnavailableError, match=r"tracking rows and 1 run ends .* are lost: .*space"):
                project.tracking.close()
            assert project.tracking.writer.unwritten()[1] == 1
        monkeypatch.undo()
        project.tracking.flush()  # the server is back: nothing was lost after all
        assert ls.Client(project).get_run(run.id).info.status == "FINISHED"
