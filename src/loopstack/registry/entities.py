"""Plain value objects returned by the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopstack.registry.signature import Signature


@dataclass(frozen=True)
class LoggedModel:
    """A model saved under a run: the manifest `digest` pins every byte of it."""

    run_id: str
    artifact_path: str
    digest: str
    flavor: str
    model_class: str
    signature: Signature | None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The reference `load_model` accepts for this logged model."""
        return f"runs:/{self.run_id}/{self.artifact_path}"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model.

    `metrics` is a snapshot of the run's latest metrics when the version was
    registered; `lineage` holds the run id, the data set versions the run
    read and the git commit it ran at.
    """

    name: str
    version: int
    run_id: str | None
    artifact_path: str
    digest: str
    flavor: str
    signature: Signature | None
    metrics: dict[str, float | None]
    lineage: dict[str, Any]
    created_at: float
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class RegisteredModel:
    """A model name with its newest version and its aliases (alias -> version)."""

    name: str
    created_at: float
    description: str
    latest_version: int | None
    aliases: dict[str, int] = field(default_factory=dict)
