"""The registry's SQL, one small function per query, all on a caller's connection.

Kept apart from `store` so that the transaction logic there reads as a
sequence of steps; every function here runs inside the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import NotFoundError
from loopstack.registry.entities import ModelVersion, RegisteredModel
from loopstack.registry.signature import Signature

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

    from loopstack.core.db import MetadataDB


def model_exists(connection: Connection, models: Table, name: str) -> bool:
    from sqlalchemy import select

    return connection.execute(select(models.c.name).where(models.c.name == name)).first() is not None


def lock_model(connection: Connection, models: Table, name: str) -> bool:
    """Lock the model's row until commit (PostgreSQL; SQLite already holds the write lock)."""
    from sqlalchemy import select

    query = select(models.c.name).where(models.c.name == name).with_for_update()
    return connection.execute(query).first() is not None


def model_names(connection: Connection, models: Table) -> list[str]:
    from sqlalchemy import select

    return list(connection.execute(select(models.c.name).order_by(models.c.name)).scalars())


def max_version(connection: Connection, versions: Table, name: str) -> int:
    from sqlalchemy import func, select

    found = connection.execute(select(func.max(versions.c.version)).where(versions.c.name == name)).scalar()
    return int(found or 0)


def next_version(connection: Connection, models: Table, versions: Table, name: str) -> int:
    """One past the highest number `name` ever had: a deleted version's number is not given again."""
    from sqlalchemy import select

    last = connection.execute(select(models.c.last_version).where(models.c.name == name)).scalar()
    return max(max_version(connection, versions, name), int(last or 0)) + 1


def set_last_version(connection: Connection, models: Table, name: str, version: int) -> None:
    from sqlalchemy import update

    connection.execute(update(models).where(models.c.name == name).values(last_version=version))


def served_by(connection: Connection, deployments: Table, refs: set[str]) -> list[tuple[str, str, str]]:
    """(endpoint, variant, ref) for each deployment variant that serves one of `refs` (``fraud/2``).

    Read from the rollout's table: deleting what an endpoint serves, or would roll back to, breaks it.
    """
    from sqlalchemy import select

    found = []
    for endpoint, config in connection.execute(select(deployments.c.endpoint, deployments.c.config)):
        for variant, ref in sorted(dict(config or {}).get("variants", {}).items()):
            if ref in refs:
                found.append((endpoint, variant, ref))
    return found


def version_numbers(connection: Connection, versions: Table, name: str) -> list[int]:
    from sqlalchemy import select

    query = select(versions.c.version).where(versions.c.name == name).order_by(versions.c.version)
    return list(connection.execute(query).scalars())


def version_row(connection: Connection, versions: Table, name: str, version: int) -> dict[str, Any]:
    from sqlalchemy import select

    row = connection.execute(select(versions).where(versions.c.name == name, versions.c.version == version)).first()
    if row is None:  # resolved in this transaction, then deleted by a write one does not see (SQLite, a write)
        raise NotFoundError(f"model version {name}/{version} was deleted while it was read; "
                            f"retry, or list the versions with `loopstack models show {name}`")
    return row._asdict()


def alias_version(connection: Connection, aliases: Table, name: str, alias: str) -> int | None:
    from sqlalchemy import select

    query = select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == alias)
    found = connection.execute(query).scalar()
    return None if found is None else int(found)


def aliases_of(connection: Connection, aliases: Table, name: str) -> dict[str, int]:
    from sqlalchemy import select

    query = select(aliases.c.alias, aliases.c.version).where(aliases.c.name == name).order_by(aliases.c.alias)
    return {alias: int(version) for alias, version in connection.execute(query)}


def last_event_of(connection: Connection, events: Table, subject: str | None) -> int | None:
    """The newest event about `subject` (a run id): the cause of a registration."""
    from sqlalchemy import func, select

    if subject is None:
        return None
    return connection.execute(select(func.max(events.c.id)).where(events.c.subject == subject)).scalar()


def list_models(connection: Connection, db: MetadataDB) -> list[RegisteredModel]:
    from sqlalchemy import func, select

    models, versions, aliases = (db.table(n) for n in ("registered_models", "model_versions", "model_aliases"))
    latest = select(versions.c.name, func.max(versions.c.version).label("latest")).group_by(versions.c.name).subquery()
    query = select(models, latest.c.latest).outerjoin(latest, latest.c.name == models.c.name).order_by(models.c.name)
    by_model: dict[str, dict[str, int]] = defaultdict(dict)
    for name, alias, version in connection.execute(select(aliases.c.name, aliases.c.alias, aliases.c.version)):
        by_model[name][alias] = int(version)
    return [
        RegisteredModel(row.name, row.created_at, row.description, row.latest, dict(sorted(by_model[row.name].items())))
        for row in connection.execute(query)
    ]


def search_versions(connection: Connection, db: MetadataDB, name: str | None, run_id: str | None) -> list[ModelVersion]:
    from sqlalchemy import select

    versions, aliases = db.table("model_versions"), db.table("model_aliases")
    query = select(versions).order_by(versions.c.name, versions.c.version.desc())
    alias_query = select(aliases.c.name, aliases.c.alias, aliases.c.version)
    if name is not None:
        query = query.where(versions.c.name == name)
        alias_query = alias_query.where(aliases.c.name == name)
    if run_id is not None:
        query = query.where(versions.c.run_id == run_id)
    by_model: dict[str, dict[str, int]] = defaultdict(dict)
    for model, alias, version in connection.execute(alias_query):
        by_model[model][alias] = int(version)
    return [to_version(row._asdict(), by_model[row.name]) for row in connection.execute(query)]


def to_version(row: dict[str, Any], aliases: dict[str, int]) -> ModelVersion:
    """A ModelVersion from its row and the model's alias -> version map."""
    return ModelVersion(
        name=row["name"],
        version=int(row["version"]),
        run_id=row["run_id"],
        artifact_path=row["artifact_path"],
        digest=row["digest"],
        flavor=row["flavor"],
        signature=Signature.from_dict(row["signature"]),
        metrics=dict(row["metrics"]),
        lineage=dict(row["lineage"]),
        created_at=row["created_at"],
        aliases=tuple(sorted(alias for alias, version in aliases.items() if version == row["version"])),
    )
