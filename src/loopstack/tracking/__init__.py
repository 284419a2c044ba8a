"""Experiment tracking with an MLflow-shaped API: runs, params, metrics, artifacts, data versions.

Log calls are buffered and written in batches by a background thread, so a
training loop does not notice them; see `loopstack.tracking.writer`.

Names load on first use, so a first ``start_run`` does not import the
client and the schema's import of the tables module costs nothing here.
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

_EXPORTS = {
    "ActiveRun": "loopstack.tracking.run",
    **dict.fromkeys([
        "FAILED", "FINISHED", "KILLED", "RUNNING", "Experiment", "Metric", "Run", "RunInfo",
    ], "loopstack.tracking.entities"),
    **dict.fromkeys(["Client", "RunComparison", "RunPage"], "loopstack.tracking.client"),
    **dict.fromkeys([
        "active_run", "end_run", "get_project", "log_artifact", "log_artifacts", "log_dict", "log_input",
        "log_metric", "log_metrics", "log_model", "log_param", "log_params", "read_dataset", "seed_everything",
        "set_experiment", "set_project", "set_tag", "set_tags", "start_run",
    ], "loopstack.tracking.fluent"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
