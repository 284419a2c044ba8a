"""The public names of loopstack.pipelines are the ones we mean to export, and all resolve."""

from __future__ import annotations

import loopstack.pipelines as pipelines

EXPECTED = {
    "step", "Step", "pipeline", "Pipeline", "REGISTRY", "Graph", "Node", "Output", "current_step", "StepContext",
    "code_digest", "PipelineRun", "PipelineFailedError", "Executor", "LocalExecutor", "ProcessExecutor",
    "get_executor", "Task", "TaskResult", "RunRecord", "StepRecord", "get_run", "list_runs", "lineage", "Loop",
    "Policy", "RunPipeline", "Hook", "Action", "ActionContext", "StopLoop", "trigger", "Schedule", "OnEvent",
    "Cron", "drift_detected", "performance_below", "quality_failed", "new_data", "manual",
}


def test_exported_names() -> None:
    assert set(pipelines.__all__) == EXPECTED
    for name in pipelines.__all__:
        assert getattr(pipelines, name) is not None


def test_errors_belong_to_the_one_hierarchy() -> None:
    from loopstack.core.errors import LoopstackError

    assert issubclass(pipelines.PipelineFailedError, LoopstackError)
    assert issubclass(pipelines.StopLoop, LoopstackError)
