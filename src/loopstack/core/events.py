"""The event log: one row per thing that happened, with the event that caused it.

Runs, registrations, alias moves, data checks, drift results and rollout
decisions all land here. The loop engine reads signals from it, `loopstack
events` prints it, and lineage queries walk the ``cause`` chain.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loopstack.core.direct import Compiled
from loopstack.core.errors import NotFoundError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

    from loopstack.core.db import MetadataDB

_COLUMNS = ("time", "kind", "subject", "payload", "cause")
# the insert as SQLAlchemy compiles it for SQLite (RETURNING from SQLite 3.35 on, as its dialect decides)
_INSERT = Compiled(
    "INSERT INTO events (time, kind, subject, payload, cause) VALUES (?, ?, ?, ?, ?)", _COLUMNS, ("time",), ("payload",)
)
_INSERT_RETURNING = Compiled(_INSERT.sql + " RETURNING id", _COLUMNS, ("time",), ("payload",), returns=True)


@dataclass(frozen=True)
class Event:
    """One recorded event."""

    id: int
    time: float
    kind: str
    subject: str
    payload: dict[str, Any]
    cause: int | None


class EventLog:
    """Append and read events in the metadata DB."""

    def __init__(self, db: MetadataDB) -> None:
        self.db = db
        # compiled once, run on the DBAPI cursor: each run start and end writes an event
        sqlite = _INSERT_RETURNING if sqlite3.sqlite_version_info >= (3, 35) else _INSERT
        self._insert_statement = db.direct(self._build_insert, columns=_COLUMNS, sqlite=sqlite)

    @property
    def table(self) -> Table:
        return self.db.table("events")

    def _build_insert(self) -> Any:
        insert = self.table.insert()
        if self.db.engine.dialect.insert_returning:
            insert = insert.returning(self.table.c.id)  # else the cursor's lastrowid is the id
        return insert

    def emit(
        self,
        kind: str,
        subject: str,
        payload: dict[str, Any] | None = None,
        cause: int | None = None,
        connection: Connection | None = None,
    ) -> int:
        """Record an event and return its id.

        Pass `connection` to record the event in the same transaction as the
        change it describes, so that one is never stored without the other.
        A `cause` that is no event id raises NotFoundError and stores nothing.
        The payload is stored as its JSON round trip: numpy values become plain
        ones, keys become strings, tuples lists, and a NaN or infinite float
        becomes None (JSON null) on every backend.
        """
        row = {
            "time": time.time(),
            "kind": kind,
            "subject": subject,
            "payload": _jsonable(payload or {}),
            "cause": cause,
        }
        try:
            if connection is not None:
                return self._insert(connection, row)
            with self.db.direct_write() as own:
                return self._insert(own, row)
        except Exception as exc:
            if cause is not None and "foreign key" in str(exc).lower():  # the database's words for a missing cause
                raise NotFoundError(
                    f"cause {cause!r} of the {kind!r} event is no event of this project; pass the id that "
                    "emit() returned for the event that led to it (list event ids with `loopstack events`)"
                ) from None
            raise

    def list(
        self,
        kind: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        after_id: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[Event]:
        """Events filtered by kind (a prefix ending in '.' matches a family, '_' and '%' as themselves),
        subject and time."""
        from sqlalchemy import select

        t = self.table
        query = select(t)
        if kind:
            query = query.where(t.c.kind.startswith(kind, autoescape=True) if kind.endswith(".") else t.c.kind == kind)
        if subject:
            query = query.where(t.c.subject == subject)
        if since is not None:
            query = query.where(t.c.time >= since)
        if after_id is not None:
            query = query.where(t.c.id > after_id)
        query = query.order_by(t.c.id.desc() if newest_first else t.c.id).limit(limit)
        with self.db.read() as connection:
            return [Event(**row._asdict()) for row in connection.execute(query)]

    def chain(self, event_id: int) -> list[Event]:
        """The event and its causes, oldest cause first.

        Each event appears once: a chain whose causes loop back (an edited or
        copied row) ends where it would repeat, instead of repeating to the cap.
        """
        from sqlalchemy import select

        chain: list[Event] = []
        seen: set[int] = set()
        next_id: int | None = event_id
        with self.db.read() as connection:
            while next_id is not None and next_id not in seen and len(chain) < 1000:
                seen.add(next_id)
                row = connection.execute(select(self.table).where(self.table.c.id == next_id)).first()
                if row is None:
                    break
                chain.append(Event(**row._asdict()))
                next_id = row.cause
        return chain[::-1]

    def _insert(self, connection: Connection, row: dict[str, Any]) -> int:
        if self.db.dialect == "postgresql":
            _commit_in_id_order(connection)
        return int(self._insert_statement.execute(connection, row))


# Any constant shared by every process of a database: the ASCII of "lsevents".
_EVENT_ORDER_LOCK = 0x6C736576656E7473


def _commit_in_id_order(connection: Connection) -> None:
    """Hold PostgreSQL's event lock until this transaction ends, so events commit in id order.

    A sequence hands out an id at insert, but the row appears at commit: a
    transaction that emitted id 7 and commits after another's id 8 leaves a
    window where readers see 8 without 7. The loop's triggers read "after the
    last id seen", so they would skip 7 for good (a drift signal that never
    fires). With the lock, the second emitter waits until the first commits.
    Emits come last in their transactions, so the wait is short. SQLite has
    one writer at a time and needs nothing.
    """
    from sqlalchemy import text

    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _EVENT_ORDER_LOCK})


def _jsonable(payload: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so numpy scalars and paths become plain values.

    A float that is NaN or infinite (a drift score over an empty bin, say) becomes None (JSON null), at any
    depth of dicts and lists: standard JSON has no such values and PostgreSQL's json type refuses them,
    so every backend stores null. A flat payload of plain finite values (the run events) is already what
    the round trip would return, so it is copied instead.
    """
    if all(type(key) is str and type(value) in _PLAIN and (type(value) is not float or math.isfinite(value))
           for key, value in payload.items()):
        return dict(payload)
    # json writes NaN, Infinity and -Infinity for non-finite floats (numpy's included, via tolist);
    # parse_constant turns each back into None
    return json.loads(json.dumps(payload, default=_default), parse_constant=_null)


_PLAIN = (str, int, float, bool, type(None))  # exact types: a numpy float64 subclasses float


def _null(_constant: str) -> None:
    return None


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars alike
        return value.tolist()
    return str(value)
