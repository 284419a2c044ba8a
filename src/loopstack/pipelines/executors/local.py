"""The embedded executors: in the calling thread, and a local process pool."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.pipelines.task import Task, TaskResult, execute, execute_pickled, pickle_task

logger = logging.getLogger("loopstack.pipelines")


class LocalExecutor:
    """Run each task in the calling thread, one after the other.

    The default: no pickling, no processes, and steps share the driver's
    imports and tracking state.

    Examples
    --------
    >>> LocalExecutor().inline
    True
    """

    name = "local"
    inline = True

    def submit(self, task: Task) -> Future[TaskResult]:
        future: Future[TaskResult] = Future()
        future.set_result(execute(task))
        return future

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Run tasks in a pool of local worker processes, several at a time.

    Tasks travel as cloudpickles with the step's module by value, so steps
    defined in a script or a notebook run too. Workers start through a fork
    server on Linux (a fork of a clean process, not of the driver with its
    threads and open connections) and by spawning elsewhere. As with any
    `multiprocessing` program, a script that runs a pipeline on this
    executor must do so under ``if __name__ == "__main__":``.

    A worker that dies (killed, out of memory, a crash in native code) breaks
    a `ProcessPoolExecutor` for good, failing every task in it. This executor
    then starts a fresh pool and runs the tasks it lost again. Each attempt
    notes the worker that runs it, so only the task whose own worker died
    counts a death; after `worker_retries` of those it fails, as Ray fails a
    lost task. The tasks that were merely in the pool with it start again
    without a charge. A step's own `retries` are for exceptions it raises;
    these are for its process dying.

    Parameters
    ----------
    max_workers
        Pool size (default: the number of CPUs).
    start_method
        A `multiprocessing` start method, to override the default.
    worker_retries
        Times a task is started again after its worker died (0: fail at once).
    """

    name = "process"
    inline = False

    def __init__(self, max_workers: int | None = None, start_method: str | None = None,
                 worker_retries: int = 3) -> None:
        if worker_retries < 0:
            raise ConfigError(f"worker_retries={worker_retries}; use 0 or more")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.worker_retries = worker_retries
        method = start_method or ("forkserver" if sys.platform.startswith("linux") else "spawn")
        self._context = multiprocessing.get_context(method)
        if method == "forkserver":  # workers fork from a server that has the task runner imported already
            self._context.set_forkserver_preload(["loopstack.pipelines.task"])  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._closed = False
        self._markers = tempfile.mkdtemp(prefix="loopstack-workers-")  # which worker runs which attempt
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.max_workers, mp_context=self._context)

    def submit(self, task: Task) -> Future[TaskResult]:
        outcome: Future[TaskResult] = Future()
        self._start(_Lost(outcome, pickle_task(task), task.node_id))
        return outcome

    def _start(self, lost: _Lost) -> None:
        pool = self._pool
        marker = os.path.join(self._markers, uuid.uuid4().hex)
        try:
            attempt = pool.submit(_run_noting_worker, marker, lost.payload)
        except BrokenProcessPool:  # broken by another task's worker before its callback replaced it
            pool = self._replace(pool)
            attempt = pool.submit(_run_noting_worker, marker, lost.payload)
        workers = getattr(pool, "_processes", None)  # pid -> Process, the same dict for the pool's life
        attempt.add_done_callback(lambda done: self._settle(done, lost, marker, workers, pool))

    def _settle(self, attempt: Future[TaskResult], lost: _Lost, marker: str, workers: dict[int, Any] | None,
                pool: ProcessPoolExecutor) -> None:
        if attempt.cancelled():
            lost.outcome.cancel()
            return
        error = attempt.exception()
        if isinstance(error, BrokenProcessPool):  # runs before the pool stops its other workers
            if _own_worker_died(marker, workers) or lost.bystander >= _BYSTANDER_RETRIES:
                lost.deaths += 1
            else:
                lost.bystander += 1
            _forget(marker)
            if lost.deaths <= self.worker_retries and not self._closed:
                logger.warning("step %s: %s; starting it again (%d of %d deaths)", lost.node_id,
                               "its worker process died" if lost.deaths else "another step's worker died in its pool",
                               lost.deaths, self.worker_retries)
                try:
                    self._replace(pool)
                    self._start(lost)
                    return
                except Exception as exc:  # closed meanwhile, or no process could start: report that
                    error = exc
        _forget(marker)
        if error is None:
            lost.outcome.set_result(attempt.result())
        elif isinstance(error, BrokenProcessPool):
            lost.outcome.set_exception(BrokenProcessPool(f"{error} (its worker died {lost.deaths} times)"))
        else:
            lost.outcome.set_exception(error)

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """The pool to use now: a new one in place of `broken`, made once however many tasks it lost."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the process executor was closed")
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)  # called from its own thread: never wait
                self._pool = self._new_pool()
            return self._pool

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool = self._pool
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._markers, ignore_errors=True)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_BYSTANDER_RETRIES = 10  # a lost task restarted this often without a death of its own counts the next one


@dataclass
class _Lost:
    """A task on its way through pools: where its answer goes, and the restarts it had."""

    outcome: Future[TaskResult]
    payload: bytes
    node_id: str
    deaths: int = 0  # its own worker died
    bystander: int = 0  # lost with a pool another task's worker broke


def _run_noting_worker(marker: str, payload: bytes) -> TaskResult:
    """In a worker: note this process's pid, then run the task (see `_own_worker_died`)."""
    with open(marker, "w") as file:
        file.write(str(os.getpid()))
    return execute_pickled(payload)


def _own_worker_died(marker: str, workers: dict[int, Any] | None) -> bool:
    """Whether the worker that ran this attempt is dead; False for one that never started (it was queued)."""
    try:
        with open(marker) as file:
            pid = int(file.read())
    except (OSError, ValueError):
        return False
    if workers is None:  # no view of the workers (another Python): count it, as before
        return True
    process = workers.get(pid)
    return process is None or process.exitcode is not None


def _forget(marker: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(marker)


__all__ = ["LocalExecutor", "ProcessExecutor"]
