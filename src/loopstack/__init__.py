"""loopstack: the closed-loop MLOps platform in one package.

The names a user needs first are re-exported here and imported lazily, so
``import loopstack`` stays fast; heavy libraries load when first used.

Examples
--------
>>> import loopstack as ls
>>> ls.__version__
'0.1.0'
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Project": "loopstack.core.project",
    "LoopstackError": "loopstack.core.errors",
    "ConfigError": "loopstack.core.errors",
    "NotFoundError": "loopstack.core.errors",
    "ValidationError": "loopstack.core.errors",
    "ConflictError": "loopstack.core.errors",
    "IntegrityError": "loopstack.core.errors",
    "SignatureError": "loopstack.core.errors",
    "FilterError": "loopstack.core.errors",
    "BackendUnavailableError": "loopstack.core.errors",
    "Client": "loopstack.tracking.client",
    "ActiveRun": "loopstack.tracking.run",
    "set_project": "loopstack.tracking.fluent",
    "get_project": "loopstack.tracking.fluent",
    "set_experiment": "loopstack.tracking.fluent",
    "start_run": "loopstack.tracking.fluent",
    "end_run": "loopstack.tracking.fluent",
    "active_run": "loopstack.tracking.fluent",
    "log_param": "loopstack.tracking.fluent",
    "log_params": "loopstack.tracking.fluent",
    "log_metric": "loopstack.tracking.fluent",
    "log_metrics": "loopstack.tracking.fluent",
    "set_tag": "loopstack.tracking.fluent",
    "set_tags": "loopstack.tracking.fluent",
    "log_artifact": "loopstack.tracking.fluent",
    "log_artifacts": "loopstack.tracking.fluent",
    "log_dict": "loopstack.tracking.fluent",
    "log_input": "loopstack.tracking.fluent",
    "log_model": "loopstack.tracking.fluent",
    "read_dataset": "loopstack.tracking.fluent",
    "seed_everything": "loopstack.tracking.fluent",
    "register_model": "loopstack.registry.api",
    "load_model": "loopstack.registry.api",
    "set_alias": "loopstack.registry.api",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
