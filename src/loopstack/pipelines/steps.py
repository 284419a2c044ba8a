"""`@step`: a plain function that a pipeline can call, cache, retry and run anywhere.

Outside a pipeline a step is its function: call it and get the value, which
keeps steps unit-testable. Inside a ``@pipeline`` function, calling it adds
a node to the graph and returns a placeholder (see `loopstack.pipelines.graph`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, overload

from loopstack.core.errors import ConfigError
from loopstack.pipelines import graph
from loopstack.pipelines.fingerprint import code_digest


class Step:
    """A function with the settings that govern how a pipeline runs it.

    Parameters
    ----------
    function
        The step's code. Arguments that receive other steps' outputs are inputs;
        the rest are parameters. Both, and the code, make the cache key.
    name
        The step's name in the graph (default: the function's name).
    retries
        How many times a failing call is retried.
    backoff_s, backoff_factor, max_backoff_s
        The wait before retry ``n`` is ``min(backoff_s * backoff_factor**(n-1), max_backoff_s)``.
    retry_on
        Exception types worth retrying; others fail the step at once.
    cache
        Reuse the stored outputs of an identical earlier call (same code,
        parameters and input artifacts).
    outputs
        Names of several outputs: the function returns a tuple of that length,
        and each element is stored (and can be passed on) separately.
    version
        Pin the code digest to this string, e.g. when a step's behaviour
        depends on code the digest cannot see; change it to invalidate the cache.
    resources
        Per-task resources for executors that schedule them (Ray:
        ``{"num_cpus": 2, "num_gpus": 1}``); ignored by the local executors.

    Examples
    --------
    >>> @step(retries=2, backoff_s=0.01)
    ... def add(x: int, y: int) -> int:
    ...     return x + y
    >>> add(1, 2)  # outside a pipeline: a plain call
    3
    >>> add.retries, add.name
    (2, 'add')
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        retries: int = 0,
        backoff_s: float = 1.0,
        backoff_factor: float = 2.0,
        max_backoff_s: float = 60.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        cache: bool = True,
        outputs: tuple[str, ...] | None = None,
        version: str | None = None,
        resources: dict[str, float] | None = None,
    ) -> None:
        if retries < 0 or backoff_s < 0 or backoff_factor < 1 or max_backoff_s < 0:
            raise ConfigError(
                f"step {name or function.__name__!r}: retries={retries}, backoff_s={backoff_s}, "
                f"backoff_factor={backoff_factor}, max_backoff_s={max_backoff_s}; use retries >= 0, "
                "backoff times >= 0 and a factor >= 1"
            )
        if outputs is not None and (len(outputs) < 2 or len(set(outputs)) != len(outputs)):
            raise ConfigError(f"step outputs {outputs!r} must name two or more distinct outputs")
        self.function = function
        self.name = name or function.__name__
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_factor = backoff_factor
        self.max_backoff_s = max_backoff_s
        self.retry_on = tuple(retry_on)
        self.cache = cache
        self.outputs = tuple(outputs) if outputs else None
        self.version = version
        self.resources = dict(resources or {})
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        building = graph.current()
        if building is None:
            return self.function(*args, **kwargs)
        return building.add(self, args, kwargs)

    def code_digest(self) -> str:
        """The digest of the step's code (or of `version`, when pinned).

        Computed afresh on each call (the runner calls it once per run), so a
        module constant changed in a long-lived process is seen.
        """
        if self.version is None:
            return code_digest(self.function)
        # the version stands for the code, not for the step: without the name, two steps pinned
        # to the same string with equal parameters and inputs would share one cache entry
        return f"version:{self.name}:{self.version}"

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return float(min(self.backoff_s * self.backoff_factor ** (retry - 1), self.max_backoff_s))

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


@overload
def step(function: Callable[..., Any], /) -> Step: ...
@overload
def step(function: None = None, /, **settings: Any) -> Callable[[Callable[..., Any]], Step]: ...


def step(function: Callable[..., Any] | None = None, /, **settings: Any) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step; use as ``@step`` or ``@step(retries=3, ...)``.

    The settings are those of `Step`.

    Examples
    --------
    >>> @step
    ... def clean(rows: list) -> list:
    ...     return [r for r in rows if r is not None]
    >>> clean([1, None, 2])
    [1, 2]
    """
    if function is not None:
        return Step(function, **settings)
    return lambda f: Step(f, **settings)


__all__ = ["Step", "step"]
