"""Run steps as Ray tasks: the same pipeline on a laptop's cores or a cluster.

Needs the ``ray`` extra (``pip install 'loopstack[ray]'``). Workers read and
write the artifact store directly, so on a cluster the project's
``artifacts:`` must be a location every node can reach (``s3://...``).
A step's ``resources`` (``num_cpus``, ``num_gpus``, ``memory``...) become
the Ray task's options.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.pipelines.task import Task, TaskResult, execute_pickled, pickle_task


class RayExecutor:
    """Submit each task to Ray, starting a local Ray instance when none is connected.

    Parameters
    ----------
    address
        A Ray cluster address (``"auto"``, ``"ray://host:10001"``); None starts
        a local instance unless Ray is already initialized in this process.
    init_options
        More keyword arguments for ``ray.init`` (e.g. ``num_cpus=2``).
    """

    name = "ray"
    inline = False

    def __init__(self, address: str | None = None, **init_options: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "the Ray executor needs Ray; install it with `pip install 'loopstack[ray]'` "
                "or use executor='process'"
            ) from None
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, **init_options}
            ray.init(address=address, **options)
            self._started_here = True
        self._remote = ray.remote(execute_pickled)

    def submit(self, task: Task) -> Future[TaskResult]:
        resources = dict(getattr(task.step, "resources", {}) or {})
        remote = self._remote.options(**resources) if resources else self._remote
        ref = remote.remote(pickle_task(task))
        future: Future[TaskResult] = ref.future()
        return future

    def close(self) -> None:
        """Shut Ray down if this executor started it; a connection made by the caller stays."""
        if self._started_here:
            self._ray.shutdown()
            self._started_here = False


__all__ = ["RayExecutor"]
