"""The fluent registry functions, on the project the tracking API uses.

``loopstack.register_model``, ``loopstack.load_model`` and
``loopstack.set_alias`` come from here; each takes an optional `project`,
and otherwise uses `loopstack.get_project()` (the project set or opened last,
else the one found from LOOPSTACK_PROJECT or the working directory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loopstack.core.project import Project
    from loopstack.registry.entities import ModelVersion, RegisteredModel
    from loopstack.registry.model import LoadedModel
    from loopstack.registry.store import Registry


def _registry(project: Project | None) -> Registry:
    from loopstack.tracking.fluent import get_project

    return (project or get_project()).registry


def register_model(
    run_id: str,
    artifact_path: str = "model",
    *,
    name: str,
    alias: str | None = None,
    description: str = "",
    project: Project | None = None,
) -> ModelVersion:
    """Register the model a run logged at `artifact_path` as the next version of `name`.

    The version records the model's signature, a snapshot of the run's
    metrics and its lineage (run, data set versions read, git commit). With
    `alias`, the alias moves to the new version in the same transaction.
    """
    return _registry(project).register_model(run_id, artifact_path, name=name, alias=alias, description=description)


def load_model(ref: str, version: int | str | None = None, *, project: Project | None = None,
               compiled: bool = False) -> LoadedModel:
    """Load ``"name@alias"``, ``"name/3"``, ``"name"`` (newest) or ``"runs:/<run_id>/model"``.

    Every stored byte is checked against its sha256 before the model is
    deserialized; a tampered or truncated artifact raises `IntegrityError`.
    With `compiled`, a model saved with a compiled form (a histogram
    gradient-boosting ensemble) is loaded as that: the same answers, without
    importing its library (what `loopstack serve` does); ``raw`` is then the
    compiled object, not the estimator.
    """
    return _registry(project).load_model(ref, version, compiled)


def set_alias(name: str, alias: str, version: int, *, project: Project | None = None) -> ModelVersion:
    """Point `alias` (e.g. ``champion``) of model `name` at `version`, atomically."""
    return _registry(project).set_alias(name, alias, version)


def delete_alias(name: str, alias: str, *, project: Project | None = None) -> None:
    """Remove an alias; the version it pointed at stays registered."""
    _registry(project).delete_alias(name, alias)


def delete_model_version(name: str, version: int, *, project: Project | None = None) -> None:
    """Remove one version; refused while an alias or a deployment uses it. Its number is not reused."""
    _registry(project).delete_model_version(name, version)


def delete_model(name: str, *, project: Project | None = None) -> None:
    """Remove a model, its aliases and versions; refused while a deployment serves one of them."""
    _registry(project).delete_model(name)


def get_model_version(ref: str, version: int | str | None = None, *, project: Project | None = None) -> ModelVersion:
    """The registered version that `ref` names, without loading the model."""
    return _registry(project).get_model_version(ref, version)


def list_models(*, project: Project | None = None) -> list[RegisteredModel]:
    """Every registered model with its newest version and aliases."""
    return _registry(project).list_models()


def search_model_versions(
    name: str | None = None, run_id: str | None = None, *, project: Project | None = None
) -> list[ModelVersion]:
    """Registered versions, of one model or all, optionally from one run."""
    return _registry(project).search_model_versions(name, run_id)
