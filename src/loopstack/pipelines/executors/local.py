"""The embedded executors: in the calling thread, and a local process pool."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
    then starts a fresh pool and runs the tasks it lost again, up to
    `worker_retries` times each, as Ray does for a lost task. A step's own
    `retries` are for exceptions it raises; these are for its process dying.

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
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.max_workers, mp_context=self._context)

    def submit(self, task: Task) -> Future[TaskResult]:
        outcome: Future[TaskResult] = Future()
        self._start(outcome, pickle_task(task), task.node_id, deaths=0)
        return outcome

    def _start(self, outcome: Future[TaskResult], payload: bytes, node_id: str, deaths: int) -> None:
        pool = self._pool
        try:
            attempt = pool.submit(execute_pickled, payload)
        except BrokenProcessPool:  # broken by another task's worker before its callback replaced it
            pool = self._replace(pool)
            attempt = pool.submit(execute_pickled, payload)
        attempt.add_done_callback(lambda done: self._settle(done, outcome, payload, node_id, deaths, pool))

    def _settle(self, attempt: Future[TaskResult], outcome: Future[TaskResult], payload: bytes, node_id: str,
                deaths: int, pool: ProcessPoolExecutor) -> None:
        if attempt.cancelled():
            outcome.cancel()
            return
        error = attempt.exception()
        if isinstance(error, BrokenProcessPool) and deaths < self.worker_retries and not self._closed:
            logger.warning("step %s: its worker process died (%s); starting it again (%d of %d)", node_id, error,
                           deaths + 1, self.worker_retries)
            try:
                self._replace(pool)
                self._start(outcome, payload, node_id, deaths + 1)
                return
            except Exception as exc:  # closed meanwhile, or no process could start: report that
                error = exc
        if error is None:
            outcome.set_result(attempt.result())
        elif isinstance(error, BrokenProcessPool):
            outcome.set_exception(BrokenProcessPool(f"{error} (its worker died {deaths + 1} times)"))
        else:
            outcome.set_exception(error)

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

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["LocalExecutor", "ProcessExecutor"]
