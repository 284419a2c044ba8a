"""The executor contract: run a task somewhere and hand back a future of its result.

The driver (`loopstack.pipelines.runner`) decides what runs when, checks the
cache and records everything; an executor only runs tasks. That keeps a new
backend to one small class, and a pipeline moves from one process to a pool
or a Ray cluster without a code change.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol, runtime_checkable

from loopstack.pipelines.task import Task, TaskResult


@runtime_checkable
class Executor(Protocol):
    """Runs tasks.

    Attributes
    ----------
    name
        A short name recorded with each pipeline run.
    inline
        True when tasks run in the caller's thread one at a time; the driver
        then makes the step's tracked run the active run, so
        ``loopstack.log_metric`` inside a step lands on it.
    """

    name: str
    inline: bool

    def submit(self, task: Task) -> Future[TaskResult]:
        """Start `task`; the future resolves to its result (a failed step is a result, not an exception)."""
        ...

    def close(self) -> None:
        """Release workers; the executor is not used afterwards."""
        ...


__all__ = ["Executor"]
