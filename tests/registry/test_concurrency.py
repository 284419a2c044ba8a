"""Registration and alias moves under concurrency, on both metadata backends."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading

import numpy as np
import pytest

import loopstack as ls

REGISTER = """
import sys
import loopstack as ls

project = ls.Project.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # start together
versions = [project.registry.register_model(sys.argv[2], name="race").version for _ in range(int(sys.argv[3]))]
print(",".join(map(str, versions)), flush=True)
project.close()
"""


def double(x):
    return np.asarray(x) * 2


def test_two_processes_registering_get_distinct_versions(project, log_in_run):
    run_id, _ = log_in_run(project, double, np.ones((2, 3)))
    per_process = 6
    command = [sys.executable, "-c", REGISTER, str(project.root), run_id, str(per_process)]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            child.kill() if child.poll() is None else None
    assert [child.returncode for child in children] == [0, 0], [err for _, err in outputs]
    got = [[int(v) for v in out.strip().split(",")] for out, _ in outputs]
    assert all(versions == sorted(versions) for versions in got)  # each process sees its numbers rise
    assert sorted(got[0] + got[1]) == list(range(1, 2 * per_process + 1))
    registered = project.events.list(kind="model.registered", subject="race", limit=100)
    assert sorted(e.payload["version"] for e in registered) == list(range(1, 2 * per_process + 1))


def test_concurrent_alias_moves_form_one_history(project, log_in_run):
    """Two threads move one alias while a reader resolves it: the reader never misses, and the
    alias_moved events chain (each move's `from` is the previous move's `to`), which they would
    not if reading the old target and writing the new one were two transactions."""
    run_id, _ = log_in_run(project, double, np.ones((2, 3)))
    reg = project.registry
    for _ in range(3):
        reg.register_model(run_id, name="fraud", alias="champion")
    errors: list[BaseException] = []
    resolved: set[int] = set()
    stop = threading.Event()

    def mover(targets: list[int]) -> None:
        try:
            for _ in range(12):
                for version in targets:
                    reg.set_alias("fraud", "champion", version)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                resolved.add(reg.get_model_version("fraud@champion").version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=([1, 2],)), threading.Thread(target=mover, args=([3, 1],))]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert resolved <= {1, 2, 3} and resolved
    moves = project.events.list(kind="model.alias_moved", subject="fraud", newest_first=False, limit=1000)
    assert all(move.payload["alias"] == "champion" for move in moves)
    for before, after in itertools.pairwise(moves):
        assert after.payload["from"] == before.payload["to"], (before.payload, after.payload)
    assert ls.load_model("fraud@champion", project=project).version == moves[-1].payload["to"]


def test_a_clashing_version_number_is_retried_and_leaves_no_trace(project, log_in_run, monkeypatch):
    """What a PostgreSQL writer sees when another took the number between its read and insert."""
    from loopstack.registry import queries

    run_id, _ = log_in_run(project, double, np.ones((2, 3)))
    project.registry.register_model(run_id, name="race")
    real, reads = queries.next_version, []

    def first_read_is_stale(*args):
        reads.append(1)
        return 1 if len(reads) == 1 else real(*args)  # misses version 1, as a concurrent writer would

    monkeypatch.setattr(queries, "next_version", first_read_is_stale)
    assert project.registry.register_model(run_id, name="race", alias="champion").version == 2
    events = project.events.list(kind="model.", subject="race", newest_first=False)
    assert [(e.kind, e.payload.get("version", e.payload.get("to"))) for e in events] == [
        ("model.registered", 1),
        ("model.registered", 2),
        ("model.alias_moved", 2),
    ]
    assert len(reads) == 2  # one clash, one retry


def test_a_version_deleted_while_it_is_resolved_is_read_from_the_snapshot(project, log_in_run, monkeypatch):
    """The number and the row come from one snapshot: at PostgreSQL's READ COMMITTED, a delete between
    the two raised `LookupError: model version race/2 vanished inside one transaction`."""
    run_id, _ = log_in_run(project, double, np.ones((2, 3)))
    reg = project.registry
    for _ in range(2):
        reg.register_model(run_id, name="race")
    resolve = reg._resolve

    def resolve_then_delete(connection, ref):
        number = resolve(connection, ref)
        reg.delete_model_version("race", number)  # another transaction, committed before the row is read
        return number

    monkeypatch.setattr(reg, "_resolve", resolve_then_delete)
    assert reg.get_model_version("race").version == 2
    monkeypatch.undo()
    assert reg.get_model_version("race").version == 1


def test_a_version_row_that_is_gone_is_not_found(project):
    from loopstack.core.errors import NotFoundError
    from loopstack.registry import queries

    with project.db.read() as connection, pytest.raises(NotFoundError, match=r"race/7 was deleted.*models show race"):
        queries.version_row(connection, project.db.table("model_versions"), "race", 7)
