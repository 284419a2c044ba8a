"""Pipelines and the closed loop: steps, DAGs, caching, executors, triggers and loop policies.

Write steps as plain functions, wire them by calling them in a ``@pipeline``
function, and run it: outputs are content-addressed artifacts with lineage,
unchanged steps are skipped from the cache, failures are retried with
backoff, and the run is a tracked run with a child run per step. A `Loop`
turns signals from the event log (drift, failed checks, a performance drop,
new data, a schedule) into actions, and records each one as an event that
names its cause.

Examples
--------
>>> import tempfile, loopstack as ls
>>> from loopstack.pipelines import pipeline, step
>>> @step
... def load(n: int) -> list:
...     return list(range(n))
>>> @step(retries=2, backoff_s=0.01)
... def mean(values: list) -> float:
...     return sum(values) / len(values)
>>> @pipeline
... def stats(n: int = 5):
...     return mean(load(n))
>>> project = ls.Project.init(tempfile.mkdtemp(), name="doc")
>>> stats.run(project).output()
2.0
>>> project.close()
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

# name -> module: imported on first use, so that `import loopstack.pipelines.tables`
# (done on every Project.open) does not pull in executors, multiprocessing and ast
_EXPORTS = {
    "step": "steps",
    "Step": "steps",
    "pipeline": "dags",
    "Pipeline": "dags",
    "REGISTRY": "dags",
    "Graph": "graph",
    "Node": "graph",
    "Output": "graph",
    "current_step": "task",
    "StepContext": "task",
    "Task": "task",
    "TaskResult": "task",
    "code_digest": "fingerprint",
    "PipelineRun": "runner",
    "PipelineFailedError": "runner",
    "Executor": "executors",
    "LocalExecutor": "executors",
    "ProcessExecutor": "executors",
    "get_executor": "executors",
    "RunRecord": "records",
    "StepRecord": "records",
    "get_run": "records",
    "list_runs": "records",
    "lineage": "records",
    "Cron": "cron",
    "Loop": "engine",
    "trigger": "engine",
    "Policy": "policy",
    "RunPipeline": "policy",
    "Hook": "policy",
    "Action": "policy",
    "ActionContext": "policy",
    "StopLoop": "policy",
    "Schedule": "triggers",
    "OnEvent": "triggers",
    "drift_detected": "triggers",
    "performance_below": "triggers",
    "quality_failed": "triggers",
    "new_data": "triggers",
    "manual": "triggers",
}

__all__ = [
    # defining
    "step",
    "Step",
    "pipeline",
    "Pipeline",
    "REGISTRY",
    "Graph",
    "Node",
    "Output",
    "current_step",
    "StepContext",
    "code_digest",
    # running
    "PipelineRun",
    "PipelineFailedError",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "get_executor",
    "Task",
    "TaskResult",
    # reading back
    "RunRecord",
    "StepRecord",
    "get_run",
    "list_runs",
    "lineage",
    # the loop
    "Loop",
    "Policy",
    "RunPipeline",
    "Hook",
    "Action",
    "ActionContext",
    "StopLoop",
    "trigger",
    # triggers
    "Schedule",
    "OnEvent",
    "Cron",
    "drift_detected",
    "performance_below",
    "quality_failed",
    "new_data",
    "manual",
]


__getattr__, __dir__ = lazy_exports(__name__, {k: f".{v}" for k, v in _EXPORTS.items()}, __all__)
