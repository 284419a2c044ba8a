"""`loopstack.yaml` parsed into a validated, immutable configuration.

Unknown keys and bad values are rejected with the key path, the offending
value and the fix, because a typo in a config file that silently falls back
to a default is the hardest kind of bug to find. Three environment variables
override the stores so the same project runs on services without an edit:
``LOOPSTACK_METADATA``, ``LOOPSTACK_ARTIFACTS`` and ``LOOPSTACK_ONLINE_STORE``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from loopstack.core.defaults import CONFIG_FILE, ENVIRONMENT_KEYS, NAME_PATTERN, dump_yaml, environment_override
from loopstack.core.errors import ConfigError

METADATA_SCHEMES = ("sqlite", "postgresql", "postgres")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackingConfig(_Section):
    """How the tracking writer buffers and flushes."""

    flush_interval_s: float = Field(1.0, gt=0, le=60)
    heartbeat_interval_s: float = Field(5.0, gt=0, le=3600)
    max_buffered_points: int = Field(1_000_000, ge=1_000)
    capture_environment: bool = True
    capture_git: bool = True
    sample_resources_s: float = Field(1.0, gt=0, le=600)


class ProjectConfig(_Section):
    """The whole of `loopstack.yaml`."""

    name: str
    metadata: str = "sqlite:///.loopstack/meta.db"
    artifacts: str = ".loopstack/artifacts"
    online_store: str = "sqlite:///.loopstack/online.db"
    offline_store: str = "duckdb"
    definitions: list[str] = Field(default_factory=list)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    # loop policies and scheduler settings; validated by loopstack.pipelines.config when the loop loads
    loop: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("use a letter first, then letters, digits, '_', '-' or '.', at most 128 characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_is_known(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in METADATA_SCHEMES:
            raise ValueError("use sqlite:///path/to/meta.db or postgresql://user@host:5432/db")
        if scheme == "sqlite" and not _sqlite_file(value):
            raise ValueError(
                "a SQLite URL needs three slashes and a file, e.g. sqlite:///.loopstack/meta.db "
                "(relative to the project folder) or sqlite:////absolute/path/meta.db"
            )
        return value

    @field_validator("offline_store")
    @classmethod
    def _offline_store_is_known(cls, value: str) -> str:
        # DuckDB is the only offline engine; another name would be accepted and never used.
        if value != "duckdb":
            raise ValueError("the offline store is duckdb (it reads Parquet, CSV, Arrow and SQL sources); "
                             "write offline_store: duckdb or remove the key")
        return value


def _sqlite_file(url: str) -> str:
    """The file of a ``sqlite:///file`` URL, or '' where it names none: SQLAlchemy refuses
    ``sqlite://meta.db`` with a traceback, and ``sqlite://`` is a database in memory, whose
    runs, models and events would vanish with the process."""
    rest = url.partition(":")[2]
    path = rest.removeprefix("///") if rest.startswith("///") else ""
    return "" if path == ":memory:" else path


def parse_config(data: Any, source: str = CONFIG_FILE, environment: bool = True) -> ProjectConfig:
    """Validate a mapping as a project config, raising ConfigError with key paths.

    With `environment`, LOOPSTACK_* variables override their keys: what a process uses, never what
    `Project.init` writes to the file (a variable set for one shell would outlive it there).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys such as 'name:' and 'metadata:', "
            f"got {type(data).__name__}; see `loopstack init` for an example"
        )
    data = _apply_environment(dict(data)) if environment else dict(data)
    try:
        return ProjectConfig.model_validate(data)
    except PydanticValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(root: Path) -> ProjectConfig:
    """Read and validate ``root/loopstack.yaml``."""
    import yaml

    path = root / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no {CONFIG_FILE} in {root}; create a project with `loopstack init {root}`") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when installed
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    return parse_config(data if data is not None else {}, source=str(path))


def dump_config(config: ProjectConfig) -> str:
    """The YAML text of a config, defaults written out so users see the knobs."""
    return dump_yaml(config.model_dump())


def _apply_environment(data: dict[str, Any]) -> dict[str, Any]:
    for key in ENVIRONMENT_KEYS:
        variable = environment_override(key)
        if variable:
            data[key] = os.environ[variable]
    return data


def _describe(exc: PydanticValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(top level)"
        variable = environment_override(path)
        origin = f" (from the environment variable {variable}, which overrides the file)" if variable else ""
        lines.append(f"  {path}{origin}: {_explain(error)}")
    return "\n".join(lines)


def _explain(error: Any) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "see the docs"
        return f"unknown key; remove it or fix the spelling (allowed keys: {allowed})"
    if kind == "missing":
        return "required; add it, for example `name: my-project`"
    message = error["msg"].removeprefix("Value error, ")
    return f"{message} (got {value!r})"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = ProjectConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
