"""The thin core every capability speaks: config, project, metadata DB, artifacts, events, errors.

Names load on first use, so importing a subpackage does not pay for pydantic
or SQLAlchemy until it needs them.
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

_ERRORS = [
    "BackendUnavailableError",
    "ConfigError",
    "ConflictError",
    "FilterError",
    "IntegrityError",
    "LoopstackError",
    "NotFoundError",
    "SignatureError",
    "ValidationError",
]
_EXPORTS = {
    "ProjectConfig": "loopstack.core.config",
    "TrackingConfig": "loopstack.core.config",
    "load_config": "loopstack.core.config",
    "parse_config": "loopstack.core.config",
    "Project": "loopstack.core.project",
    "find_root": "loopstack.core.project",
    **dict.fromkeys(_ERRORS, "loopstack.core.errors"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
