"""Experiment tracking with an MLflow-shaped API: runs, params, metrics, artifacts, data versions.

Log calls are buffered and written in batches by a background thread, so a
training loop does not notice them; see `loopstack.tracking.writer`.

Names load on first use, so a first ``start_run`` does not import the
client and the schema's import of the tables module costs nothing here.
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

_EXPORTS = {
    "FAILED": "loopstack.tracking.entities",
    "FINISHED": "loopstack.tracking.entities",
    "KILLED": "loopstack.tracking.entities",
    "RUNNING": "loopstack.tracking.entities",
    "ActiveRun": "loopstack.tracking.run",
    "Client": "loopstack.tracking.client",
    "Experiment": "loopstack.tracking.entities",
    "Metric": "loopstack.tracking.entities",
    "Run": "loopstack.tracking.entities",
    "RunComparison": "loopstack.tracking.client",
    "RunInfo": "loopstack.tracking.entities",
    "RunPage": "loopstack.tracking.client",
    "active_run": "loopstack.tracking.fluent",
    "end_run": "loopstack.tracking.fluent",
    "get_project": "loopstack.tracking.fluent",
    "log_artifact": "loopstack.tracking.fluent",
    "log_artifacts": "loopstack.tracking.fluent",
    "log_dict": "loopstack.tracking.fluent",
    "log_input": "loopstack.tracking.fluent",
    "log_metric": "loopstack.tracking.fluent",
    "log_metrics": "loopstack.tracking.fluent",
    "log_model": "loopstack.tracking.fluent",
    "log_param": "loopstack.tracking.fluent",
    "log_params": "loopstack.tracking.fluent",
    "read_dataset": "loopstack.tracking.fluent",
    "seed_everything": "loopstack.tracking.fluent",
    "set_experiment": "loopstack.tracking.fluent",
    "set_project": "loopstack.tracking.fluent",
    "set_tag": "loopstack.tracking.fluent",
    "set_tags": "loopstack.tracking.fluent",
    "start_run": "loopstack.tracking.fluent",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
