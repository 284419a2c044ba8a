"""The driver of a pipeline run: order, cache, submit, record, emit.

A run is a tracked run (``loopstack runs`` lists it) with one child run per
step. For each step whose inputs are ready the driver computes the cache key
(code digest, parameter digests, input artifact digests); on a hit it reuses
the stored outputs and says so with a ``step.cached`` event, otherwise it
submits the step to the executor. Independent steps run concurrently on
executors that allow it. Every outcome is a row plus an event whose cause is
the run's ``pipeline.started`` event, whose own cause is whatever triggered
the run, so ``loopstack events --chain`` reads as a story.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import LoopstackError, NotFoundError
from loopstack.pipelines import materializers, records
from loopstack.pipelines.executors import get_executor
from loopstack.pipelines.fingerprint import value_digest
from loopstack.pipelines.task import Ref, Task, TaskResult

if TYPE_CHECKING:
    from loopstack.core.project import Project
    from loopstack.pipelines.dags import Pipeline
    from loopstack.pipelines.executors import Executor
    from loopstack.pipelines.graph import Graph, Node

CACHE_VERSION = 1


class PipelineFailedError(LoopstackError):
    """A step failed (after its retries); ``run`` holds the failed `PipelineRun`."""

    def __init__(self, message: str, run: PipelineRun) -> None:
        super().__init__(message)
        self.run = run


@dataclass
class PipelineRun:
    """The outcome of one pipeline run: status, steps, results and the events it left."""

    id: str
    pipeline: str
    project: Project
    status: str = "running"
    tracking_run_id: str | None = None
    started_event: int | None = None
    event_id: int | None = None
    steps: dict[str, records.StepRecord] = field(default_factory=dict)
    results: dict[str, Ref] = field(default_factory=dict)

    @property
    def cached(self) -> list[str]:
        """Steps skipped because an identical call was stored."""
        return [name for name, s in self.steps.items() if s.status == "cached"]

    @property
    def executed(self) -> list[str]:
        """Steps that ran (successfully or not)."""
        return [name for name, s in self.steps.items() if s.status in ("finished", "failed")]

    def output(self, name: str | None = None) -> Any:
        """A result of the pipeline, loaded from the artifact store (the only one, when `name` is None)."""
        if name is None and len(self.results) == 1:
            name = next(iter(self.results))
        ref = self.results.get(name or "")
        if ref is None:
            raise NotFoundError(f"pipeline run {self.id} has no result {name!r}; results: {sorted(self.results)}")
        return materializers.load(ref.format, self.project.artifacts.get_bytes(ref.digest))

    def logs(self, step: str) -> str:
        """The captured print and logging output of a step."""
        record = self.steps.get(step)
        if record is None or record.logs_digest is None:
            raise NotFoundError(f"no logs for step {step!r} of run {self.id}; steps: {sorted(self.steps)}")
        return self.project.artifacts.get_bytes(record.logs_digest).decode("utf-8", "replace")


def run(
    pipeline: Pipeline,
    project: Project | None = None,
    executor: str | Executor | None = None,
    params: dict[str, Any] | None = None,
    cause: int | None = None,
    echo: bool = False,
) -> PipelineRun:
    """Build `pipeline` with `params` and run it on `executor` (default: in process).

    Raises `PipelineFailedError` when a step fails; the error's ``run`` says which.
    """
    from loopstack.tracking import get_project, set_project

    project = set_project(project) if project is not None else get_project()
    built = pipeline.build(**(params or {}))
    owned = executor is None or isinstance(executor, str)
    chosen = get_executor(executor)
    try:
        return _Driver(project, built, chosen, cause, echo).run()
    finally:
        if owned:
            chosen.close()


class _Driver:
    def __init__(self, project: Project, built: Graph, executor: Executor, cause: int | None, echo: bool) -> None:
        self.project = project
        self.graph = built
        self.executor = executor
        self.cause = cause
        self.echo = echo
        self.outputs: dict[str, list[dict[str, Any]]] = {}
        self.running: dict[Future[TaskResult], tuple[Node, str, Any, str | None]] = {}
        self.failed: list[str] = []
        self.result = PipelineRun(uuid.uuid4().hex, built.pipeline, project)

    def run(self) -> PipelineRun:
        import loopstack.tracking as tracking

        nested = tracking.active_run() is not None
        tags = {"loopstack.pipeline": self.graph.pipeline, "loopstack.pipeline_run": self.result.id}
        with tracking.start_run(run_name=self.graph.pipeline, nested=nested, tags=tags) as parent:
            self.parent = parent
            self.result.tracking_run_id = parent.id
            parent.log_params({k: _param_text(v) for k, v in self.graph.params.items()})
            self._start_run()
            try:
                self._loop()
            except BaseException as exc:  # Ctrl-C, a lost database: the run must not stay "running"
                self._abort(exc)
                raise
            self._end_run()
            if self.failed:
                self.parent.set_tag("loopstack.failed_step", self.failed[0])
        if self.failed:
            step = self.result.steps[self.failed[0]]
            raise PipelineFailedError(
                f"pipeline {self.graph.pipeline!r} failed at step {step.step!r} after {step.attempts} attempt(s): "
                f"{step.error}; see its logs with `loopstack pipelines logs {self.result.id[:12]} {step.step}`",
                self.result,
            )
        return self.result

    # -- the run ------------------------------------------------------------------
    def _start_run(self) -> None:
        payload = {"run_id": self.result.id, "tracking_run_id": self.parent.id, "executor": self.executor.name,
                   "params": _jsonable(self.graph.params), "steps": [n.id for n in self.graph.nodes]}
        with self.project.db.write() as connection:
            event = self.project.events.emit("pipeline.started", self.graph.pipeline, payload, self.cause, connection)
            records.insert_run(connection, self.project, {
                "id": self.result.id, "pipeline": self.graph.pipeline, "status": "running",
                "params": payload["params"], "executor": self.executor.name, "tracking_run_id": self.parent.id,
                "cause": self.cause, "event_id": event, "started_at": time.time(), "ended_at": None, "error": None,
            })
        self.result.started_event = event

    def _loop(self) -> None:
        pending = list(self.graph.nodes)
        while pending or self.running:
            ready = [] if self.failed else [n for n in pending if all(u.id in self.outputs for u in n.upstream())]
            for node in ready:
                pending.remove(node)
                self._start(node)  # inline executors and cache hits complete here
            if self.running:
                done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                for future in done:
                    self._finish(future)
            elif not ready:
                break  # nothing runs and nothing can start: done, or blocked by a failure

    def _end_run(self) -> None:
        status = "failed" if self.failed else "finished"
        results = {name: self._ref(output) for name, output in self.graph.result_outputs().items()
                   if output.node.id in self.outputs}
        self.result.results = results
        payload = {"run_id": self.result.id, "status": status, "executed": self.result.executed,
                   "cached": self.result.cached, "results": {k: v.digest for k, v in results.items()},
                   "skipped": [n.id for n in self.graph.nodes if n.id not in self.result.steps]}
        if self.failed:
            payload["failed_step"] = self.failed[0]
            payload["error"] = self.result.steps[self.failed[0]].error
        kind = f"pipeline.{status}"
        with self.project.db.write() as connection:
            event = self.project.events.emit(kind, self.graph.pipeline, payload, self.result.started_event, connection)
            records.update_run(connection, self.project, self.result.id, status=status, ended_at=time.time(),
                               error=payload.get("error"))
        self.result.status, self.result.event_id = status, event
        if self.failed:
            import loopstack.tracking as tracking

            tracking.end_run("FAILED")  # the parent, before its `with` ends it as finished

    def _abort(self, exc: BaseException) -> None:
        """Record the run, and steps still running, as failed by an error outside any step."""
        error = f"interrupted: {type(exc).__name__}: {exc}"
        unfinished = [s for s in self.result.steps.values() if s.status == "running"]
        payload = {"run_id": self.result.id, "status": "failed", "error": error, "executed": self.result.executed,
                   "cached": self.result.cached, "unfinished": [s.step for s in unfinished]}
        try:
            with self.project.db.write() as connection:
                for record in unfinished:
                    records.update_step(connection, self.project, record.id, status="failed", error=error,
                                        ended_at=time.time())
                    record.status, record.error = "failed", error
                event = self.project.events.emit("pipeline.failed", self.graph.pipeline, payload,
                                                 self.result.started_event, connection)
                records.update_run(connection, self.project, self.result.id, status="failed", ended_at=time.time(),
                                   error=error)
            self.result.status, self.result.event_id = "failed", event
        except Exception:  # the database itself may be what failed: the original error matters more
            pass

    # -- steps ----------------------------------------------------------------------
    def _start(self, node: Node) -> None:
        code = node.step.code_digest()
        inputs = {name: self._digests(value) for name, value in node.inputs.items()}
        key = _cache_key(code, node, inputs) if node.step.cache else None
        hit = records.cache_lookup(self.project, key) if key else None
        step_run_id = uuid.uuid4().hex
        row = {"id": step_run_id, "run_id": self.result.id, "step": node.id, "status": "running", "cache_key": key,
               "code_digest": code, "params": _jsonable(node.params), "inputs": inputs, "outputs": [],
               "attempts": 0, "logs_digest": None, "tracking_run_id": None, "started_at": time.time(),
               "ended_at": None, "error": None}
        if hit is not None:
            self._cached(node, row, hit)
            return
        child = self._child(node, active=self.executor.inline)
        row["tracking_run_id"] = child.id
        with self.project.db.write() as connection:
            records.insert_step(connection, self.project, row)
        self.result.steps[node.id] = records.StepRecord(**row)
        task = Task(step_run_id, node.id, node.step, dict(node.params), self._refs(node),
                    self.project.artifacts.root, self.result.id, child.id, self.echo)
        try:
            future = self.executor.submit(task)
        except Exception as exc:  # unpicklable parameters, a broken pool: the step fails, the run ends
            future = Future()
            future.set_result(TaskResult(step_run_id, ok=False, error=f"could not start: {type(exc).__name__}: {exc}",
                                         error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                                         started_at=row["started_at"], ended_at=time.time()))
        self.running[future] = (node, step_run_id, child, key)
        if self.executor.inline:
            self._finish(future)

    def _cached(self, node: Node, row: dict[str, Any], hit: dict[str, Any]) -> None:
        child = self._child(node, active=False)
        child.set_tags({"loopstack.cached": "true", "loopstack.cached_from": hit["step_run_id"]})
        row.update(status="cached", outputs=hit["outputs"], tracking_run_id=child.id, ended_at=time.time(),
                   logs_digest=hit["logs_digest"])
        payload = {"run_id": self.result.id, "step_run_id": row["id"], "cache_key": row["cache_key"],
                   "from_step_run": hit["step_run_id"], "outputs": [o["digest"] for o in hit["outputs"]],
                   "reason": "same code, parameters and inputs as an earlier run"}
        with self.project.db.write() as connection:
            records.insert_step(connection, self.project, row)
            self.project.events.emit("step.cached", node.id, payload, self.result.started_event, connection)
        child.end("FINISHED")
        self.outputs[node.id] = hit["outputs"]
        self.result.steps[node.id] = records.StepRecord(**row)

    def _finish(self, future: Future[TaskResult]) -> None:
        node, step_run_id, child, key = self.running.pop(future)
        try:
            outcome = future.result()
        except BaseException as exc:  # the worker died (killed, out of memory) rather than the step failing
            outcome = TaskResult(step_run_id, ok=False, error=f"worker lost: {type(exc).__name__}: {exc}",
                                 started_at=self.result.steps[node.id].started_at, ended_at=time.time())
        status = "finished" if outcome.ok else "failed"
        values = {"status": status, "outputs": outcome.outputs, "attempts": outcome.attempts,
                  "logs_digest": outcome.logs_digest, "ended_at": outcome.ended_at, "error": outcome.error}
        payload = {"run_id": self.result.id, "step_run_id": step_run_id, "attempts": outcome.attempts,
                   "duration_s": round(outcome.ended_at - outcome.started_at, 6), "retried": outcome.retried_errors,
                   "logs": outcome.logs_digest, "tracking_run_id": child.id}
        if outcome.ok:
            payload["outputs"] = [o["digest"] for o in outcome.outputs]
        else:
            payload.update(error=outcome.error, error_type=outcome.error_type)
        with self.project.db.write() as connection:
            records.update_step(connection, self.project, step_run_id, **values)
            if outcome.ok:
                records.record_artifacts(connection, self.project, step_run_id, outcome.outputs)
                if key is not None:
                    records.cache_store(connection, self.project, key, node.step.name, outcome.outputs, step_run_id)
            self.project.events.emit(f"step.{status}", node.id, payload, self.result.started_event, connection)
        self._end_child(child, outcome)
        record = self.result.steps[node.id]
        for name, value in values.items():
            setattr(record, name, value)
        if outcome.ok:
            self.outputs[node.id] = outcome.outputs
        else:
            self.failed.append(node.id)

    # -- tracked child runs -----------------------------------------------------------
    def _child(self, node: Node, active: bool) -> Any:
        """The step's tracked run; `active` pushes it on the fluent stack so the step's own log calls land there."""
        import loopstack.tracking as tracking

        tags = {"loopstack.step": node.id, "loopstack.pipeline_run": self.result.id}
        if active:
            return tracking.start_run(run_name=node.id, nested=True, tags=tags)
        store = self.project.tracking
        child = tracking.ActiveRun(store, store.create_run(self.parent.info.experiment_id, node.id, self.parent.id))
        child.set_tags(tags)
        return child

    def _end_child(self, child: Any, outcome: TaskResult) -> None:
        import loopstack.tracking as tracking

        if outcome.metrics:
            child.log_metrics(outcome.metrics)
        child.log_metric("loopstack.attempts", outcome.attempts)
        status = "FINISHED" if outcome.ok else "FAILED"
        if tracking.active_run() is child:
            tracking.end_run(status)
        else:
            child.end(status)

    # -- references ------------------------------------------------------------------------
    def _ref(self, output: Any) -> Ref:
        stored = next(o for o in self.outputs[output.node.id] if o["name"] == output.name)
        return Ref(stored["digest"], stored["format"])

    def _refs(self, node: Node) -> dict[str, Ref | list[Ref]]:
        return {name: [self._ref(o) for o in value] if isinstance(value, list) else self._ref(value)
                for name, value in node.inputs.items()}

    def _digests(self, value: Any) -> str | list[str]:
        return [self._ref(o).digest for o in value] if isinstance(value, list) else self._ref(value).digest


def _cache_key(code: str, node: Node, inputs: dict[str, Any]) -> str:
    material = {"v": CACHE_VERSION, "code": code, "outputs": node.step.outputs,
                "params": {name: value_digest(value) for name, value in sorted(node.params.items())},
                "inputs": inputs}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v if _is_json(v) else repr(v)[:500] for k, v in values.items()}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text[:5000]


__all__ = ["PipelineFailedError", "PipelineRun", "run"]
