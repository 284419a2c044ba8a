"""``apply``: compare definitions with what the metadata DB holds, show the plan, store it.

Each definition is versioned by the sha256 of its spec. The plan lists what is
added, changed and removed, so a typo that would drop a view in production is
seen before it happens; applying writes the new versions (old ones are kept)
and moves the pointers, in one transaction, and emits one ``features.apply``
event with the plan as payload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopstack.features.catalog import KINDS, Catalog

if TYPE_CHECKING:
    from loopstack.core.db import MetadataDB
    from loopstack.core.events import EventLog

SYMBOLS = {"add": "+", "change": "~", "remove": "-"}


@dataclass
class Change:
    """One line of a plan."""

    action: str
    kind: str
    name: str
    origin: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        version = (self.new or self.old or "")[:12]
        return f"{SYMBOLS[self.action]} {self.kind.replace('_', ' ')} {self.name} ({self.origin}, {version})"


@dataclass
class Plan:
    """What ``apply`` will do (or did).

    Examples
    --------
    >>> Plan().render()
    'no changes: the metadata DB matches the definitions'
    """

    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0

    def of(self, action: str) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    @property
    def added(self) -> list[Change]:
        return self.of("add")

    @property
    def changed(self) -> list[Change]:
        return self.of("change")

    @property
    def removed(self) -> list[Change]:
        return self.of("remove")

    def render(self) -> str:
        if not self.changes:
            return "no changes: the metadata DB matches the definitions"
        lines = [str(change) for change in self.changes]
        lines.append(
            f"{len(self.added)} to add, {len(self.changed)} to change, {len(self.removed)} to remove, "
            f"{self.unchanged} unchanged"
        )
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {a: [f"{c.kind}:{c.name}" for c in self.of(a)] for a in SYMBOLS}


def applied(db: MetadataDB) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the stored pointer row of every applied definition."""
    from sqlalchemy import select

    table = db.table("feature_objects")
    with db.read() as connection:
        rows = connection.execute(select(table)).mappings().all()
    return {(row["kind"], row["name"]): dict(row) for row in rows}


def make_plan(db: MetadataDB, catalog: Catalog) -> Plan:
    """The changes that would make the metadata DB match `catalog`."""
    stored = applied(db)
    plan = Plan()
    current = set()
    for kind in KINDS:
        for name, obj in sorted(catalog.by_kind(kind).items()):
            current.add((kind, name))
            digest = obj.digest()
            old = stored.get((kind, name))
            if old is None:
                plan.changes.append(Change("add", kind, name, catalog.origin(obj), None, digest))
            elif old["digest"] != digest:
                plan.changes.append(Change("change", kind, name, catalog.origin(obj), old["digest"], digest))
            else:
                plan.unchanged += 1
    for (kind, name), row in sorted(stored.items()):
        if (kind, name) not in current:
            plan.changes.append(Change("remove", kind, name, row["origin"], row["digest"], None))
    return plan


def apply_plan(db: MetadataDB, events: EventLog, catalog: Catalog, plan: Plan,
               on_remove: Callable[[Any, Change], None] | None = None) -> None:
    """Write new versions, move pointers and delete removed ones, in one transaction.

    `on_remove(connection, change)` runs for each removal inside that transaction.
    """
    from sqlalchemy import and_, delete

    objects, versions = db.table("feature_objects"), db.table("feature_object_versions")
    now = time.time()
    with db.write() as connection:
        for change in plan.changes:
            if change.action == "remove":
                connection.execute(delete(objects).where(and_(objects.c.kind == change.kind,
                                                              objects.c.name == change.name)))
                if on_remove is not None:
                    on_remove(connection, change)
                continue
            obj = catalog.by_kind(change.kind)[change.name]
            db.upsert(connection, versions, [{"kind": change.kind, "name": change.name, "digest": change.new,
                                              "spec": obj.spec(), "created_at": now}],
                      keys=("kind", "name", "digest"), update=())
            db.upsert(connection, objects, [{"kind": change.kind, "name": change.name, "digest": change.new,
                                             "origin": change.origin, "applied_at": now}],
                      keys=("kind", "name"), update=("digest", "origin", "applied_at"))
        if plan.changes:
            events.emit("features.apply", "features", plan.summary(), connection=connection)


__all__ = ["Change", "Plan", "apply_plan", "make_plan"]
