"""The embedded executors: in the calling thread, and a local process pool."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from loopstack.pipelines.task import Task, TaskResult, execute, execute_pickled, pickle_task


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

    Parameters
    ----------
    max_workers
        Pool size (default: the number of CPUs).
    start_method
        A `multiprocessing` start method, to override the default.
    """

    name = "process"
    inline = False

    def __init__(self, max_workers: int | None = None, start_method: str | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        method = start_method or ("forkserver" if sys.platform.startswith("linux") else "spawn")
        context = multiprocessing.get_context(method)
        if method == "forkserver":  # workers fork from a server that has the task runner imported already
            context.set_forkserver_preload(["loopstack.pipelines.task"])  # type: ignore[attr-defined]
        self._pool = ProcessPoolExecutor(self.max_workers, mp_context=context)

    def submit(self, task: Task) -> Future[TaskResult]:
        return self._pool.submit(execute_pickled, pickle_task(task))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["LocalExecutor", "ProcessExecutor"]
