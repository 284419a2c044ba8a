"""The DAG a pipeline function builds: nodes (step calls) and the outputs that wire them.

While a ``@pipeline`` function runs under `building`, calling a step does
not run it: it records a `Node` and returns `Output` placeholders, and
passing a placeholder to another step is an edge. The graph is complete when
the function returns, already in a valid run order (a step can only receive
outputs of steps called before it), so no cycle can be written.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ValidationError

if TYPE_CHECKING:
    from loopstack.pipelines.steps import Step

_current: ContextVar[Graph | None] = ContextVar("loopstack_pipeline_graph", default=None)


@dataclass(frozen=True, eq=False)
class Output:
    """A step's output that does not exist yet: pass it to another step to make an edge."""

    node: Node
    name: str
    annotation: Any = None

    def __repr__(self) -> str:
        return f"Output({self.node.id}.{self.name})"

    def __bool__(self) -> bool:
        raise ValidationError(
            f"{self!r} is a placeholder while the pipeline is being built, so it has no truth value; "
            "branch inside a step, or pass a parameter to the pipeline"
        )

    def __iter__(self) -> Iterator[Any]:
        raise ValidationError(
            f"{self!r} cannot be unpacked; declare the step with @step(outputs=('a', 'b')) to return several outputs"
        )


@dataclass(eq=False)
class Node:
    """One step call in a pipeline."""

    id: str
    step: Step
    params: dict[str, Any]
    inputs: dict[str, Output | list[Output]]
    outputs: tuple[Output, ...] = ()

    def upstream(self) -> list[Node]:
        nodes: list[Node] = []
        for value in self.inputs.values():
            for output in value if isinstance(value, list) else [value]:
                if output.node not in nodes:
                    nodes.append(output.node)
        return nodes


@dataclass
class Graph:
    """The nodes of one pipeline build, in call order, and what the pipeline returned."""

    pipeline: str
    params: dict[str, Any]
    nodes: list[Node] = field(default_factory=list)
    result: Any = None

    def add(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Output | tuple[Output, ...]:
        """Record a call of `step` and return its output placeholder(s)."""
        try:
            bound = inspect.signature(step.function).bind(*args, **kwargs)
        except TypeError as exc:
            raise ValidationError(f"step {step.name!r} called with the wrong arguments: {exc}") from None
        bound.apply_defaults()
        node = Node(self._unique(step.name), step, {}, {})
        hints = _hints(step.function)
        for name, value in bound.arguments.items():
            if _is_outputs(value):
                many = isinstance(value, list | tuple)
                for output in value if many else [value]:
                    if not any(output.node is known for known in self.nodes):
                        raise ValidationError(
                            f"step {node.id!r} parameter {name!r} got {output!r}, an output of another build of "
                            f"a pipeline (kept from an earlier call?); call its step in this pipeline and pass that"
                        )
                    _check_edge(output, node, name, hints.get(name), many)
                node.inputs[name] = list(value) if isinstance(value, list | tuple) else value
            else:
                node.params[name] = value
        returns = hints.get("return")
        if step.outputs:
            node.outputs = tuple(Output(node, name) for name in step.outputs)
        else:
            node.outputs = (Output(node, "output", returns),)
        self.nodes.append(node)
        return node.outputs if step.outputs else node.outputs[0]

    def _unique(self, name: str) -> str:
        taken = {node.id for node in self.nodes}
        if name not in taken:
            return name
        n = 2
        while f"{name}-{n}" in taken:
            n += 1
        return f"{name}-{n}"

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        steps = [n.id for n in self.nodes]
        raise ValidationError(f"pipeline {self.pipeline!r} has no step {node_id!r}; steps: {steps}")

    def result_outputs(self) -> dict[str, Output]:
        """The outputs the pipeline function returned, keyed by a readable name."""
        result = self.result
        if isinstance(result, Output):
            return {result.node.id: result}
        if isinstance(result, dict):
            return {str(k): v for k, v in result.items() if isinstance(v, Output)}
        if isinstance(result, list | tuple):
            return {f"{v.node.id}.{v.name}": v for v in result if isinstance(v, Output)}
        return {}


def current() -> Graph | None:
    """The graph being built in this context, if any."""
    return _current.get()


@contextmanager
def building(graph: Graph) -> Iterator[Graph]:
    """Make step calls in this block add nodes to `graph`."""
    token = _current.set(graph)
    try:
        yield graph
    finally:
        _current.reset(token)


def _is_outputs(value: Any) -> bool:
    if isinstance(value, Output):
        return True
    if isinstance(value, list | tuple) and value and all(isinstance(v, Output) for v in value):
        return True
    if _contains_output(value):
        raise ValidationError(
            "a step argument mixes step outputs with other values (or nests them in a dict); "
            "pass outputs directly or as a flat list of outputs"
        )
    return False


def _contains_output(value: Any, depth: int = 0) -> bool:
    """Whether an output hides in nested lists, tuples, sets or dicts (keys included)."""
    if isinstance(value, Output):
        return True
    if depth > 20 or not isinstance(value, list | tuple | set | frozenset | dict):
        return False
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    return any(_contains_output(v, depth + 1) for v in items)


def _hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # names only importable under TYPE_CHECKING, or local classes: no check then
        return {}


def _check_edge(output: Output, node: Node, parameter: str, expected: Any, many: bool) -> None:
    """Refuse an edge whose declared types cannot match, at build time rather than mid-run."""
    produced = output.annotation
    if many:  # a list of outputs into `list[T]`: check each against T
        args = typing.get_args(expected)
        expected = args[0] if typing.get_origin(expected) in (list, tuple, Sequence) and args else None
    if not (isinstance(produced, type) and isinstance(expected, type)):
        return
    if not issubclass(produced, expected):
        raise ValidationError(
            f"step {node.id!r} parameter {parameter!r} expects {expected.__name__}, but "
            f"{output.node.id!r} returns {produced.__name__}; convert the value in a step or fix the annotation"
        )


__all__ = ["Graph", "Node", "Output", "building", "current"]
