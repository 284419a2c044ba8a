"""The model registry: named models, numbered versions and movable aliases.

Every change is one transaction together with the event that describes it,
so the event log and the registry never disagree:

- registering takes the next version number inside the write transaction.
  On SQLite the transaction holds the database write lock from its first
  statement (``BEGIN IMMEDIATE``), so two processes queue; on PostgreSQL the
  model's row is locked ``FOR UPDATE``; should two writers still pick one
  number (two first registrations of a new name), the loser's primary-key
  violation rolls its transaction back and it is retried;
- moving an alias reads the old target and writes the new one in the same
  transaction and records both in a ``model.alias_moved`` event, so a reader
  sees the old version or the new one, never neither.
"""

from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConflictError, NotFoundError
from loopstack.registry import queries
from loopstack.registry.entities import ModelVersion, RegisteredModel
from loopstack.registry.names import ModelRef, parse_ref, validate_alias, validate_model_name, validate_version
from loopstack.registry.packaging import load_package, model_digest, read_manifest

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from loopstack.core.project import Project
    from loopstack.registry.model import LoadedModel

MAX_ATTEMPTS = 20
GIT_TAGS = {
    "loopstack.git.commit": "git_commit",
    "loopstack.git.branch": "git_branch",
    "loopstack.git.dirty": "git_dirty",
}


class Registry:
    """Models, versions and aliases of one project.

    Examples
    --------
    >>> import loopstack as ls, numpy as np, tempfile
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="doc", tracking={"capture_environment": False})
    >>> with ls.start_run(project=project) as run:
    ...     run.log_metric("auc", 0.91)
    ...     _ = run.log_model(lambda x: x[:, 0] > 0, "model", example=np.zeros((2, 2)))
    >>> registry = project.registry
    >>> registry.register_model(run.id, "model", name="fraud").version
    1
    >>> registry.register_model(run.id, "model", name="fraud", alias="champion").ref
    'fraud/2'
    >>> registry.get_model_version("fraud@champion").metrics["auc"]
    0.91
    >>> registry.set_alias("fraud", "champion", 1).aliases
    ('champion',)
    >>> project.close()
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.db = project.db

    # -- registering ------------------------------------------------------------
    def register_model(
        self, run_id: str, artifact_path: str = "model", *, name: str, alias: str | None = None, description: str = ""
    ) -> ModelVersion:
        """Register the model logged at `artifact_path` of run `run_id` as the next version of `name`."""
        validate_model_name(name)
        if alias is not None:
            validate_alias(alias)
        tracking = self.project.tracking
        run = tracking.get_run(run_id)
        digest = model_digest(tracking, run.id, artifact_path)
        manifest = read_manifest(self.project.artifacts, digest)
        row = {
            "name": name,
            "run_id": run.id,
            "artifact_path": artifact_path,
            "digest": digest,
            "flavor": manifest["flavor"],
            "signature": manifest.get("signature") or {},
            "metrics": {key: _finite(value) for key, value in run.metrics.items()},
            "lineage": _lineage(run),
        }
        version = self._insert_with_retry(row, alias, description)
        return self.get_model_version(name, version)

    def _insert_with_retry(self, row: dict[str, Any], alias: str | None, description: str) -> int:
        """Insert the next version; a clash on the number (another writer took it) is retried."""
        from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

        for attempt in range(MAX_ATTEMPTS):
            try:
                with self.db.write() as connection:
                    return self._insert(connection, row, alias, description)
            except DatabaseIntegrityError as exc:
                error = exc
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise ConflictError(
            f"could not register a version of model {row['name']!r} after {MAX_ATTEMPTS} attempts; "
            f"the database kept refusing it ({error.orig}); retry, or check the metadata database"
        ) from error

    def _insert(self, connection: Connection, row: dict[str, Any], alias: str | None, description: str) -> int:
        name = row["name"]
        now = time.time()
        models, versions = self.db.table("registered_models"), self.db.table("model_versions")
        self.db.upsert(
            connection,
            models,
            [{"name": name, "created_at": now, "description": description}],
            keys=("name",),
            update=(),
        )
        queries.lock_model(connection, models, name)
        version = queries.next_version(connection, models, versions, name)
        connection.execute(versions.insert().values(**row, version=version, created_at=now))
        queries.set_last_version(connection, models, name, version)
        payload = {"version": version, "run_id": row["run_id"], "digest": row["digest"], "flavor": row["flavor"]}
        cause = queries.last_event_of(connection, self.db.table("events"), row["run_id"])
        event = self.project.events.emit("model.registered", name, payload, cause=cause, connection=connection)
        if alias is not None:
            self._move_alias(connection, name, alias, version, cause=event)
        return version

    # -- aliases ------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        """Point `alias` of model `name` at `version`, atomically; returns that version."""
        validate_model_name(name)
        validate_alias(alias)
        version = validate_version(version)
        with self.db.write() as connection:
            self._require_model(connection, name, lock=True)
            self._require_version(connection, name, version)
            self._move_alias(connection, name, alias, version)
        return self.get_model_version(name, version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove `alias` from model `name`; the version it pointed at is kept."""
        validate_model_name(name)
        validate_alias(alias)
        table = self.db.table("model_aliases")
        with self.db.write() as connection:
            self._require_model(connection, name, lock=True)
            old = self._require_alias(connection, name, alias)
            connection.execute(table.delete().where(table.c.name == name, table.c.alias == alias))
            self.project.events.emit("model.alias_deleted", name, {"alias": alias, "from": old}, connection=connection)

    def _move_alias(
        self, connection: Connection, name: str, alias: str, version: int, cause: int | None = None
    ) -> None:
        table = self.db.table("model_aliases")
        old = queries.alias_version(connection, table, name, alias)
        if old == version:
            return
        row = {"name": name, "alias": alias, "version": version, "updated_at": time.time()}
        self.db.upsert(connection, table, [row], keys=("name", "alias"), update=("version", "updated_at"))
        payload = {"alias": alias, "from": old, "to": version}
        self.project.events.emit("model.alias_moved", name, payload, cause=cause, connection=connection)

    # -- deleting ------------------------------------------------------------------------
    def delete_model_version(self, name: str, version: int) -> None:
        """Remove version `version` of `name` from the registry; its number is never given again.

        Refused while an alias points at it or a deployment serves it (or would roll back to
        it): move or delete the alias, change the deployment, then delete. The run that logged
        the model keeps its artifact; only the registry entry goes.
        """
        validate_model_name(name)
        version = validate_version(version)
        models, versions = self.db.table("registered_models"), self.db.table("model_versions")
        with self.db.write() as connection:
            self._require_model(connection, name, lock=True)
            self._require_version(connection, name, version)
            self._refuse_if_in_use(connection, name, [version])
            row = queries.version_row(connection, versions, name, version)
            last = queries.next_version(connection, models, versions, name) - 1
            queries.set_last_version(connection, models, name, last)
            connection.execute(versions.delete().where(versions.c.name == name, versions.c.version == version))
            payload = {"version": version, "run_id": row["run_id"], "digest": row["digest"]}
            self.project.events.emit("model.version_deleted", name, payload, connection=connection)

    def delete_model(self, name: str) -> None:
        """Remove model `name`, its aliases and every version; refused while a deployment serves one.

        A model registered again under the name later starts at version 1.
        """
        validate_model_name(name)
        models, versions, aliases = (self.db.table(t) for t in ("registered_models", "model_versions",
                                                                 "model_aliases"))
        with self.db.write() as connection:
            self._require_model(connection, name, lock=True)
            numbers = queries.version_numbers(connection, versions, name)
            self._refuse_if_in_use(connection, name, numbers, aliases_too=False)
            dropped = queries.aliases_of(connection, aliases, name)
            connection.execute(aliases.delete().where(aliases.c.name == name))
            connection.execute(versions.delete().where(versions.c.name == name))
            connection.execute(models.delete().where(models.c.name == name))
            payload = {"versions": numbers, "aliases": dropped}
            self.project.events.emit("model.deleted", name, payload, connection=connection)

    def _refuse_if_in_use(self, connection: Connection, name: str, numbers: list[int],
                          aliases_too: bool = True) -> None:
        what = f"version {', '.join(map(str, numbers))} of {name!r}" if aliases_too else f"model {name!r}"
        if aliases_too:
            aliases = queries.aliases_of(connection, self.db.table("model_aliases"), name)
            pointing = sorted(alias for alias, version in aliases.items() if version in numbers)
            if pointing:
                raise ConflictError(f"{what} is the target of alias {', '.join(pointing)}; move it "
                                    f"(`loopstack models alias {name} {pointing[0]} VERSION`) or delete it "
                                    f"(registry.delete_alias({name!r}, {pointing[0]!r})) first")
        served = queries.served_by(connection, self.db.table("deployments"), {f"{name}/{n}" for n in numbers})
        if served:
            where = ", ".join(f"{endpoint!r} (variant {variant!r} = {ref})" for endpoint, variant, ref in served)
            raise ConflictError(f"{what} is in deployment {where}; promote or roll back to another "
                                f"version (`loopstack deploy ...`) or delete the deployment "
                                f"(`loopstack deploy delete {served[0][0]}`) first")

    # -- reading -----------------------------------------------------------------------
    def get_model_version(self, ref: str, version: int | str | None = None) -> ModelVersion:
        """The version named by ``"fraud@champion"``, ``"fraud/3"``, ``"fraud"`` (newest) or `ref` and `version`."""
        parsed = parse_ref(ref, version)
        with self.db.read() as connection:
            number = self._resolve(connection, parsed)
            row = queries.version_row(connection, self.db.table("model_versions"), parsed.name, number)
            aliases = queries.aliases_of(connection, self.db.table("model_aliases"), parsed.name)
        return queries.to_version(row, aliases)

    def list_models(self) -> list[RegisteredModel]:
        """Every registered model with its newest version and aliases, by name."""
        with self.db.read() as connection:
            return queries.list_models(connection, self.db)

    def search_model_versions(self, name: str | None = None, run_id: str | None = None) -> list[ModelVersion]:
        """Versions of model `name` (all models when None), optionally from one run; newest first per model."""
        if name is not None:
            validate_model_name(name)
        with self.db.read() as connection:
            if name is not None:
                self._require_model(connection, name)
            return queries.search_versions(connection, self.db, name, run_id)

    def load_model(self, ref: str, version: int | str | None = None, compiled: bool = False) -> LoadedModel:
        """Load a registered version, or ``runs:/<run_id>/<path>``, verifying every byte first."""
        from loopstack.registry.model import LoadedModel

        if isinstance(ref, str) and ref.startswith("runs:/"):  # anything else goes to parse_ref, which says why
            run_id, _, path = ref.removeprefix("runs:/").partition("/")
            digest = model_digest(self.project.tracking, run_id, path or "model")
            manifest, predictor = load_package(self.project.artifacts, digest, compiled)
            return LoadedModel(predictor, manifest, digest)
        found = self.get_model_version(ref, version)
        manifest, predictor = load_package(self.project.artifacts, found.digest, compiled)
        return LoadedModel(predictor, manifest, found.digest, found.name, found.version)

    # -- existence, with errors that list what does exist ----------------------------
    def _resolve(self, connection: Connection, ref: ModelRef) -> int:
        self._require_model(connection, ref.name)
        if ref.alias is not None:
            return self._require_alias(connection, ref.name, ref.alias)
        if ref.version is not None:
            self._require_version(connection, ref.name, ref.version)
            return ref.version
        return self._require_newest(connection, ref.name)

    def _require_newest(self, connection: Connection, name: str) -> int:
        """The newest version; a model whose versions were all deleted has none, which is not found, not 0."""
        newest = queries.max_version(connection, self.db.table("model_versions"), name)
        if newest == 0:
            raise NotFoundError(
                f"model {name!r} has no versions (all deleted); register one with "
                f"register_model(run_id, name={name!r}) or delete the model with delete_model({name!r})"
            )
        return newest

    def _require_model(self, connection: Connection, name: str, lock: bool = False) -> None:
        table = self.db.table("registered_models")
        found = queries.lock_model(connection, table, name) if lock else queries.model_exists(connection, table, name)
        if not found:
            names = queries.model_names(connection, table)
            raise NotFoundError(f"no model named {name!r}; registered models: {_listing(names)}")

    def _require_version(self, connection: Connection, name: str, version: int) -> None:
        versions = queries.version_numbers(connection, self.db.table("model_versions"), name)
        if version not in versions:
            raise NotFoundError(f"model {name!r} has no version {version}; its versions: {_listing(versions)}")

    def _require_alias(self, connection: Connection, name: str, alias: str) -> int:
        table = self.db.table("model_aliases")
        version = queries.alias_version(connection, table, name, alias)
        if version is None:
            existing = [f"{key}->{value}" for key, value in queries.aliases_of(connection, table, name).items()]
            raise NotFoundError(f"model {name!r} has no alias {alias!r}; its aliases: {_listing(existing)}")
        return version


def _lineage(run: Any) -> dict[str, Any]:
    lineage: dict[str, Any] = {"run_id": run.id, "run_name": run.info.name, "experiment_id": run.info.experiment_id}
    lineage["datasets"] = [dict(item) for item in run.inputs]
    for tag, key in GIT_TAGS.items():
        lineage[key] = run.tags.get(tag)
    return lineage


def _finite(value: float) -> float | None:
    """NaN and infinities are not JSON (PostgreSQL refuses them), so they are stored as null."""
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _listing(items: list[Any], limit: int = 20) -> str:
    if not items:
        return "none"
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
