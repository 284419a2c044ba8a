"""The thin core every capability speaks: config, project, metadata DB, artifacts, events, errors."""

from loopstack.core.config import ProjectConfig, TrackingConfig, load_config, parse_config
from loopstack.core.errors import (
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    FilterError,
    IntegrityError,
    LoopstackError,
    NotFoundError,
    SignatureError,
    ValidationError,
)
from loopstack.core.project import Project, find_root

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "ConflictError",
    "FilterError",
    "IntegrityError",
    "LoopstackError",
    "NotFoundError",
    "Project",
    "ProjectConfig",
    "SignatureError",
    "TrackingConfig",
    "ValidationError",
    "find_root",
    "load_config",
    "parse_config",
]
