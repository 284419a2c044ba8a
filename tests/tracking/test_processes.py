"""Several processes, crashes and restarts: no committed data is lost, nothing is left running."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import loopstack as ls
from loopstack.core.project import Project
from loopstack.tracking.processes import own_start_time, process_start_time

WRITER = textwrap.dedent(
    """
    import sys, time
    import loopstack as ls
    project = ls.Project.open(sys.argv[1])
    mode, points = sys.argv[2], int(sys.argv[3])
    with ls.start_run(run_name=sys.argv[4]) as run:
        print(run.id, flush=True)
        for step in range(points):
            run.log_metric("value", float(step), step=step)
            if mode == "slow":
                time.sleep(0.001)
        if mode == "hang":
            print("logged", flush=True)
            time.sleep(600)
    """
)


def spawn(project: Project, mode: str, points: int, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(project.root), mode, str(points), name],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOOPSTACK_PROJECT": str(project.root)},
    )


def finish(worker: subprocess.Popen[str], timeout: float = 120) -> int:
    code = worker.wait(timeout=timeout)
    worker.stdout.close()  # type: ignore[union-attr]
    return code


def test_a_run_records_this_process_and_its_start_time(sqlite_project: Project) -> None:
    assert own_start_time() == process_start_time(os.getpid())
    with ls.start_run() as run, sqlite_project.db.read() as connection:
        row = connection.exec_driver_sql(f"SELECT pid, pid_started FROM runs WHERE id = '{run.id}'").one()
    assert tuple(row) == (os.getpid(), process_start_time(os.getpid()))


def test_a_forked_child_reads_its_own_start_time() -> None:
    parent = own_start_time()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, repr(own_start_time() == process_start_time(os.getpid())).encode())
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 16) == b"True"
    assert own_start_time() == parent


def test_two_processes_log_into_one_sqlite_project(sqlite_project: Project) -> None:
    workers = [spawn(sqlite_project, "slow", 2000, f"w{i}") for i in range(2)]
    run_ids = [w.stdout.readline().strip() for w in workers]  # type: ignore[union-attr]
    for worker in workers:
        assert finish(worker) == 0
    client = ls.Client(sqlite_project)
    for run_id in run_ids:
        history = client.get_metric_history(run_id, "value")
        assert [m.step for m in history] == list(range(2000))
        assert client.get_run(run_id).status == "FINISHED"


def test_kill_9_loses_at_most_the_last_flush_and_run_is_marked_killed(sqlite_project: Project) -> None:
    worker = spawn(sqlite_project, "hang", 5000, "victim")
    run_id = worker.stdout.readline().strip()  # type: ignore[union-attr]
    assert worker.stdout.readline().strip() == "logged"  # type: ignore[union-attr]
    time.sleep(sqlite_project.config.tracking.flush_interval_s * 2.5)  # past one flush interval
    os.kill(worker.pid, signal.SIGKILL)
    finish(worker, timeout=30)

    sqlite_project.close()
    reopened = Project.open(sqlite_project.root)  # reaps dead runs on open
    client = ls.Client(reopened)
    run = client.get_run(run_id)
    assert run.status == "KILLED"
    assert run.info.end_time is not None
    history = client.get_metric_history(run_id, "value")
    assert [m.step for m in history] == list(range(5000))  # flushed before the kill, so nothing lost
    killed = reopened.events.list(kind="run.killed", subject=run_id)
    assert killed and killed[0].payload["pid"] == worker.pid
    with reopened.db.read() as connection:
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    reopened.close()


def test_kill_9_mid_logging_never_leaves_a_partial_batch(sqlite_project: Project) -> None:
    worker = spawn(sqlite_project, "slow", 200_000, "busy")
    run_id = worker.stdout.readline().strip()  # type: ignore[union-attr]
    time.sleep(2.5)
    os.kill(worker.pid, signal.SIGKILL)
    finish(worker, timeout=30)
    sqlite_project.close()
    reopened = Project.open(sqlite_project.root)
    steps = [m.step for m in ls.Client(reopened).get_metric_history(run_id, "value")]
    assert steps == list(range(len(steps)))  # a prefix: batches are all or nothing, in order
    assert len(steps) > 0
    reopened.close()


@pytest.mark.postgres
def test_dead_run_on_postgres_is_reaped_by_the_next_open(tmp_path: Path, postgres_url: str) -> None:
    project = Project.init(tmp_path / "pg", name="pg", metadata=postgres_url)
    worker = spawn(project, "hang", 10, "victim")
    run_id = worker.stdout.readline().strip()  # type: ignore[union-attr]
    assert worker.stdout.readline().strip() == "logged"  # type: ignore[union-attr]
    os.kill(worker.pid, signal.SIGKILL)
    finish(worker, timeout=30)
    project.close()
    reopened = Project.open(tmp_path / "pg")
    assert ls.Client(reopened).get_run(run_id).status == "KILLED"
    reopened.close()


FORKER = textwrap.dedent(
    """
    import os, sys
    import loopstack as ls
    project = ls.Project.open(sys.argv[1])
    with ls.start_run(run_name="parent") as run:
        print(run.id, flush=True)
        run.log_metric("before_fork", 1.0)  # still buffered when the child is forked
        child = os.fork()
        if child == 0:
            ls.log_metric("from_child", 2.0)
            sys.exit(0)  # a normal exit, from inside the with block: __exit__ and atexit run in the child
        os.waitpid(child, 0)
        client = ls.Client(project)
        print(client.get_run(run.id).status, flush=True)
        run.log_metric("after_fork", 3.0)
    """
)


def test_a_forked_child_neither_ends_its_parents_run_nor_writes_its_points_twice(sqlite_project: Project) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", FORKER, str(sqlite_project.root)], stdout=subprocess.PIPE, text=True
    )
    run_id = worker.stdout.readline().strip()  # type: ignore[union-attr]
    status_seen_by_parent = worker.stdout.readline().strip()  # type: ignore[union-attr]
    assert finish(worker) == 0
    assert status_seen_by_parent == "RUNNING"
    client = ls.Client(sqlite_project)
    run = client.get_run(run_id)
    assert run.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "before_fork")] == [1.0]
    assert run.metrics["from_child"] == 2.0 and run.metrics["after_fork"] == 3.0
    ended = [e.kind for e in sqlite_project.events.list(subject=run_id) if e.kind != "run.started"]
    assert ended == ["run.finished"]
