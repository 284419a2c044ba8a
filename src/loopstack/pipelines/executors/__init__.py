"""Executors: where steps run. Pick one by name with `get_executor` or pass an instance."""

from __future__ import annotations

from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.pipelines.executors.base import Executor
from loopstack.pipelines.executors.local import LocalExecutor, ProcessExecutor

NAMES = ("local", "process", "ray")


def get_executor(spec: str | Executor | None = None, **options: Any) -> Executor:
    """An executor from a name (``local``, ``process``, ``ray``) or an instance, which is returned as is.

    Examples
    --------
    >>> get_executor("local").name
    'local'
    """
    if spec is None or spec == "local":
        return LocalExecutor()
    if isinstance(spec, str):
        if spec == "process":
            return ProcessExecutor(**options)
        if spec == "ray":
            from loopstack.pipelines.executors.ray import RayExecutor

            return RayExecutor(**options)
        raise ConfigError(f"unknown executor {spec!r}; use one of {', '.join(NAMES)} or pass an Executor instance")
    if not isinstance(spec, Executor):
        raise ConfigError(f"{spec!r} is not an executor: it needs name, inline, submit(task) and close()")
    return spec


__all__ = ["NAMES", "Executor", "LocalExecutor", "ProcessExecutor", "get_executor"]
