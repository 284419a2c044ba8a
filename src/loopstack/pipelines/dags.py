"""`@pipeline`: a function whose step calls, run lazily, are the DAG.

Calling a pipeline (or ``.run``) builds the graph by running the function
with step calls recorded instead of executed, then hands the graph to the
runner. Inside another pipeline, calling a pipeline inlines its steps.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.pipelines import graph

if TYPE_CHECKING:
    from loopstack.core.project import Project
    from loopstack.pipelines.executors import Executor
    from loopstack.pipelines.runner import PipelineRun

REGISTRY: dict[str, Pipeline] = {}
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_BUILTINS: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str}


class Pipeline:
    """A DAG of steps, defined by a function.

    Parameters
    ----------
    function
        Calls steps, passing outputs of earlier steps and its own parameters;
        returns an output, or a tuple or dict of outputs (the run's results).
    name
        The pipeline's name (default: the function's name).

    Examples
    --------
    >>> import tempfile, loopstack as ls
    >>> from loopstack.pipelines import pipeline, step
    >>> @step
    ... def numbers(n: int) -> list:
    ...     return list(range(n))
    >>> @step
    ... def total(values: list) -> int:
    ...     return sum(values)
    >>> @pipeline
    ... def summed(n: int = 4):
    ...     return total(numbers(n))
    >>> [node.id for node in summed.build().nodes]
    ['numbers', 'total']
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="doc")
    >>> run = summed.run(project, params={"n": 5})
    >>> run.output(), run.status
    (10, 'finished')
    >>> summed.run(project, params={"n": 5}).cached  # nothing changed: both steps are skipped
    ['numbers', 'total']
    >>> project.close()
    """

    def __init__(self, function: Callable[..., Any], name: str | None = None) -> None:
        self.function = function
        self.name = name or function.__name__
        self.signature = inspect.signature(function)
        self.__doc__ = function.__doc__
        self.__wrapped__ = function
        REGISTRY[self.name] = self

    def defaults(self) -> dict[str, Any]:
        """The pipeline's parameters and their defaults (``inspect.Parameter.empty`` when required)."""
        return {name: p.default for name, p in self.signature.parameters.items()}

    def check_names(self, params: dict[str, Any]) -> None:
        """Refuse parameters the function does not take, and required ones left out, naming the accepted ones.

        A policy's ``params: {dayz: 30}`` used to pass the config check and fail only when the policy fired.
        """
        declared = self.signature.parameters
        if any(p.kind is p.VAR_KEYWORD for p in declared.values()):
            unknown: list[str] = []
        else:
            unknown = [key for key in params if key not in declared or declared[key].kind is _VAR_POSITIONAL]
        accepted = ", ".join(self._shown(name) for name, p in declared.items() if p.kind not in _VARIADIC) or "none"
        if unknown:
            noun = "parameter" if len(unknown) == 1 else "parameters"
            raise ConfigError(
                f"pipeline {self.name!r} has no {noun} {', '.join(repr(k) for k in unknown)}; it takes: {accepted}"
            )
        missing = [name for name, p in declared.items()
                   if p.kind not in _VARIADIC and p.default is p.empty and name not in params]
        if missing:
            raise ConfigError(
                f"pipeline {self.name!r} needs {', '.join(repr(k) for k in missing)} (no default); it takes: {accepted}"
            )

    def annotations(self) -> dict[str, Any]:
        """Each parameter's annotation as a type where it can be resolved (``int``), else as written."""
        import typing

        try:
            hints = typing.get_type_hints(self.function)
        except Exception:  # a name only a type checker sees; fall back to the plain builtins
            hints = {}
        found: dict[str, Any] = {}
        for name, p in self.signature.parameters.items():
            if p.kind in _VARIADIC or p.annotation is p.empty:
                continue
            found[name] = hints.get(name, _BUILTINS.get(p.annotation, p.annotation)
                                    if isinstance(p.annotation, str) else p.annotation)
        return found

    def _shown(self, name: str) -> str:
        p = self.signature.parameters[name]
        annotation = p.annotation
        text = name
        if annotation is not p.empty:
            text += f": {annotation if isinstance(annotation, str) else getattr(annotation, '__name__', annotation)}"
        return text if p.default is p.empty else f"{text} = {p.default!r}"

    def build(self, **params: Any) -> graph.Graph:
        """Run the function with step calls recorded, returning the graph."""
        try:
            bound = self.signature.bind(**params)
        except TypeError as exc:
            raise ConfigError(
                f"pipeline {self.name!r} got parameters {sorted(params)}: {exc}; "
                f"its parameters are {list(self.signature.parameters)}"
            ) from None
        bound.apply_defaults()
        built = graph.Graph(self.name, dict(bound.arguments))
        with graph.building(built):
            built.result = self.function(**bound.arguments)
        if not built.nodes:
            raise ValidationError(f"pipeline {self.name!r} called no steps; call @step functions in its body")
        return built

    def run(
        self,
        project: Project | None = None,
        executor: str | Executor | None = None,
        params: dict[str, Any] | None = None,
        cause: int | None = None,
        echo: bool = False,
    ) -> PipelineRun:
        """Build and run the pipeline as a tracked run; see `loopstack.pipelines.runner.run`."""
        from loopstack.pipelines.runner import run

        return run(self, project=project, executor=executor, params=params, cause=cause, echo=echo)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if graph.current() is not None:  # a pipeline inside a pipeline: inline its steps
            return self.function(*args, **kwargs)
        if args:
            raise ConfigError(f"pass pipeline {self.name!r} parameters by keyword, e.g. {self.name}(n=3)")
        return self.run(params=kwargs)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r})"


@overload
def pipeline(function: Callable[..., Any], /) -> Pipeline: ...
@overload
def pipeline(function: None = None, /, *, name: str | None = None) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    function: Callable[..., Any] | None = None, /, *, name: str | None = None
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Make a function a pipeline; use as ``@pipeline`` or ``@pipeline(name="train")``."""
    if function is not None:
        return Pipeline(function, name=name)
    return lambda f: Pipeline(f, name=name)


__all__ = ["REGISTRY", "Pipeline", "pipeline"]
