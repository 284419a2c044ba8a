"""Experiment tracking with an MLflow-shaped API: runs, params, metrics, artifacts, data versions.

Log calls are buffered and written in batches by a background thread, so a
training loop does not notice them; see `loopstack.tracking.writer`.
"""

from loopstack.tracking.client import Client, RunComparison, RunPage
from loopstack.tracking.entities import (
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    Experiment,
    Metric,
    Run,
    RunInfo,
)
from loopstack.tracking.fluent import (
    active_run,
    end_run,
    get_project,
    log_artifact,
    log_artifacts,
    log_dict,
    log_input,
    log_metric,
    log_metrics,
    log_model,
    log_param,
    log_params,
    read_dataset,
    seed_everything,
    set_experiment,
    set_project,
    set_tag,
    set_tags,
    start_run,
)
from loopstack.tracking.run import ActiveRun

__all__ = [
    "FAILED",
    "FINISHED",
    "KILLED",
    "RUNNING",
    "ActiveRun",
    "Client",
    "Experiment",
    "Metric",
    "Run",
    "RunComparison",
    "RunInfo",
    "RunPage",
    "active_run",
    "end_run",
    "get_project",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "read_dataset",
    "seed_everything",
    "set_experiment",
    "set_project",
    "set_tag",
    "set_tags",
    "start_run",
]
