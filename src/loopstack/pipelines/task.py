"""One step execution, as an executor runs it: load inputs, call with retries, store outputs.

A task touches the artifact store only, never the metadata database, so the
same code runs in the driver, in a pool worker or on a Ray node. Inputs are
read (hash-verified) and outputs written by the worker, so large data never
travels through the driver; the driver gets back digests, logs and errors,
records them and emits the events.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from loopstack.core.artifacts import ArtifactStore
from loopstack.core.errors import ValidationError
from loopstack.pipelines import materializers

_context = threading.local()
_pickle_lock = threading.Lock()


@dataclass(frozen=True)
class Ref:
    """A stored value: its digest and format."""

    digest: str
    format: str


@dataclass
class Task:
    """Everything a worker needs to run one step call."""

    step_run_id: str
    node_id: str
    step: Any  # a Step; Any so that workers need not import it to unpickle the type hint
    params: dict[str, Any]
    inputs: dict[str, Ref | list[Ref]]
    artifacts_root: str
    pipeline_run_id: str
    tracking_run_id: str | None = None
    echo: bool = False


@dataclass
class TaskResult:
    """What a worker reports back."""

    step_run_id: str
    ok: bool
    outputs: list[dict[str, Any]] = field(default_factory=list)
    logs_digest: str | None = None
    attempts: int = 0
    retried_errors: list[str] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0


class StepContext:
    """The running step, as seen from inside its function: see `current_step`."""

    def __init__(self, task: Task, attempt: int) -> None:
        self.step = task.node_id
        self.step_run_id = task.step_run_id
        self.pipeline_run_id = task.pipeline_run_id
        self.tracking_run_id = task.tracking_run_id
        self.attempt = attempt
        self.metrics: dict[str, float] = {}

    def log_metric(self, key: str, value: float) -> None:
        """Record a metric on the step's tracked run (works in every executor)."""
        self.metrics[key] = float(value)


def current_step() -> StepContext:
    """The context of the step running in this thread.

    Examples
    --------
    >>> try:
    ...     current_step()
    ... except Exception as error:
    ...     print(type(error).__name__)
    NotFoundError
    """
    context = getattr(_context, "value", None)
    if context is None:
        from loopstack.core.errors import NotFoundError

        raise NotFoundError("no step is running in this thread; call current_step() inside a @step function")
    return context


def execute(task: Task) -> TaskResult:
    """Run one task to completion; failures are reported in the result, never raised."""
    store = ArtifactStore(task.artifacts_root)
    result = TaskResult(task.step_run_id, ok=False, started_at=time.time())
    buffer = io.StringIO()
    with _captured(buffer, task.echo):
        try:
            value = _call_with_retries(task, store, result)
            result.outputs = _store_outputs(task, store, value)
            result.ok = True
        except BaseException as exc:  # reported, not raised: the driver decides what fails
            # a step's sys.exit() (argparse on a bad argument does it) is the step failing, as it is
            # in a pool worker; raised here it would end the driver, and a loop scheduler with it
            if isinstance(exc, KeyboardInterrupt):
                raise
            result.error = f"{type(exc).__name__}: {exc}"
            result.error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
            result.traceback = traceback.format_exc()
            print(result.traceback, file=sys.stderr)
    result.ended_at = time.time()
    result.logs_digest = store.put_bytes(buffer.getvalue().encode("utf-8", "replace"))
    return result


def execute_pickled(payload: bytes) -> TaskResult:
    """`execute` for a task sent as a cloudpickle (pool and Ray workers)."""
    import pickle

    return execute(pickle.loads(payload))


def pickle_task(task: Task) -> bytes:
    """Cloudpickle a task, carrying the step's module by value.

    By value, because a worker process cannot always import the module that
    defined a step: a script run as ``__main__``, a notebook, a test module.
    """
    import cloudpickle

    from loopstack.pipelines.fingerprint import is_user_module

    module = sys.modules.get(getattr(task.step.function, "__module__", "") or "")
    by_value = module is not None and module.__name__ != "__main__" and is_user_module(module)
    with _pickle_lock:
        if by_value:
            cloudpickle.register_pickle_by_value(module)
        try:
            return bytes(cloudpickle.dumps(task, protocol=5))
        finally:
            if by_value:
                cloudpickle.unregister_pickle_by_value(module)


def _call_with_retries(task: Task, store: ArtifactStore, result: TaskResult) -> Any:
    step = task.step
    attempt = 0
    while True:
        attempt += 1
        result.attempts = attempt
        context = StepContext(task, attempt)
        _context.value = context
        try:
            value = step.function(**_arguments(task, store))
            result.metrics = context.metrics
            return value
        except step.retry_on as exc:
            if attempt > step.retries:
                raise
            wait = step.backoff(attempt)
            result.retried_errors.append(f"{type(exc).__name__}: {exc}")
            print(f"[loopstack] step {task.node_id!r} attempt {attempt} failed ({exc!r}); retrying in {wait:.3g}s")
            wait_before_retry(wait)
        finally:
            _context.value = None


def _arguments(task: Task, store: ArtifactStore) -> dict[str, Any]:
    """One attempt's arguments, built afresh: an attempt that mutates its inputs in place and then fails
    must not hand the mutated values to the retry (whose result would be cached as the step's)."""
    params = _copied(task.params) if task.step.retries else task.params
    return {**params, **_load_inputs(task, store)}


def _copied(params: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the parameters, one by one; a value that cannot be copied (a client, a lock) is
    passed as it is, as it was before retries copied anything."""
    copied = {}
    for name, value in params.items():
        try:
            copied[name] = copy.deepcopy(value)
        except Exception:  # uncopyable: best effort, the value itself
            copied[name] = value
    return copied


def wait_before_retry(seconds: float) -> None:
    """The pause between attempts; a seam of its own so a test can record the waits
    without replacing ``time.sleep`` for every thread in the process."""
    time.sleep(seconds)


def _load_inputs(task: Task, store: ArtifactStore) -> dict[str, Any]:
    loaded: dict[str, Any] = {}
    for name, ref in task.inputs.items():
        if isinstance(ref, list):
            loaded[name] = [materializers.load(r.format, store.get_bytes(r.digest)) for r in ref]
        else:
            loaded[name] = materializers.load(ref.format, store.get_bytes(ref.digest))
    return loaded


def _store_outputs(task: Task, store: ArtifactStore, value: Any) -> list[dict[str, Any]]:
    names = task.step.outputs
    if names is None:
        _check_type(task, "output", value)
        values = [("output", value)]
    else:
        if not isinstance(value, tuple | list) or len(value) != len(names):
            raise ValidationError(
                f"step {task.node_id!r} declares outputs {names} but returned {type(value).__name__} "
                f"of length {len(value) if hasattr(value, '__len__') else '?'}; return a tuple of {len(names)}"
            )
        values = list(zip(names, value, strict=True))
    stored = []
    for name, item in values:
        kind, data = materializers.dump(item)
        digest = store.put_bytes(data)
        stored.append(
            {"name": name, "digest": digest, "format": kind, "type": materializers.type_name(item), "size": len(data)}
        )
    return stored


def _check_type(task: Task, name: str, value: Any) -> None:
    import typing

    try:
        expected = typing.get_type_hints(task.step.function).get("return")
    except Exception:
        return
    if isinstance(expected, type) and expected is not type(None) and not isinstance(value, expected):
        raise ValidationError(
            f"step {task.node_id!r} is annotated to return {expected.__name__} but returned "
            f"{type(value).__name__}; fix the return value or the annotation"
        )


_routing_lock = threading.Lock()
_routing: dict[str, Any] = {"depth": 0, "stdout": None, "stderr": None, "level": logging.NOTSET}
_streams = threading.local()  # the capturing step's tees, per thread


class _Router(io.TextIOBase):
    """sys.stdout/sys.stderr while any step runs: a write goes to the tee of the step running in the
    writing thread, or to the original stream. One process-wide redirect per step (what
    `contextlib.redirect_stdout` does) mixes the output of steps running in two threads at once, and
    the second to finish restores the first one's tee as sys.stdout for good."""

    def __init__(self, which: str, original: Any) -> None:
        self.which = which
        self.original = original

    def _target(self) -> Any:
        tee = getattr(_streams, self.which, None)
        return self.original if tee is None else tee

    def write(self, text: str) -> int:
        return int(self._target().write(text) or 0)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty... of the original
        return getattr(self.original, name)


class _ThreadFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


@contextlib.contextmanager
def _captured(buffer: io.StringIO, echo: bool) -> Any:
    """Send print output and log records of the step to `buffer` (and on to the console if `echo`)."""
    root = logging.getLogger()
    with _routing_lock:
        if _routing["depth"] == 0:
            _routing.update(stdout=sys.stdout, stderr=sys.stderr, level=root.level)
            sys.stdout, sys.stderr = _Router("out", sys.stdout), _Router("err", sys.stderr)
            if root.level > logging.INFO or root.level == logging.NOTSET:
                root.setLevel(logging.INFO)
        _routing["depth"] += 1
        out = _Tee(buffer, _routing["stdout"] if echo else None)
        err = _Tee(buffer, _routing["stderr"] if echo else None)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(_ThreadFilter())
    root.addHandler(handler)
    _streams.out, _streams.err = out, err
    try:
        yield
    finally:
        _streams.out = _streams.err = None
        root.removeHandler(handler)
        with _routing_lock:
            _routing["depth"] -= 1
            if _routing["depth"] == 0:
                sys.stdout, sys.stderr = _routing["stdout"], _routing["stderr"]
                root.setLevel(_routing["level"])


class _Tee(io.TextIOBase):
    def __init__(self, buffer: io.StringIO, echo: Any) -> None:
        self.buffer_ = buffer
        self.echo = echo

    def write(self, text: str) -> int:
        self.buffer_.write(text)
        if self.echo is not None:
            self.echo.write(text)
        return len(text)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()


__all__ = ["Ref", "StepContext", "Task", "TaskResult", "current_step", "execute", "execute_pickled", "pickle_task"]
