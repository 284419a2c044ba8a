"""The SQLite metadata database on the driver alone: connections, transactions, a fresh schema.

The first call of a process on a new project (``Project.init``, ``start_run``,
``log_metric``) and the tracking writer's batches only run statements that
are compiled in advance, so on SQLite they need nothing of SQLAlchemy but its
SQL text: importing SQLAlchemy costs more than everything else that call
does. Connections here are configured exactly as the engine's are (WAL, busy
timeout, ``BEGIN IMMEDIATE`` for writes), so both kinds of connection can
work on one database file at once; SQLite's locks order them.

Errors leave as SQLAlchemy's wrappers of the driver error (``IntegrityError``,
``OperationalError``, ...), as they would from the engine; SQLAlchemy is
imported for that only when an error happens.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

SQLITE_BUSY_TIMEOUT_MS = 30_000
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)

# SQLite's lower() folds ASCII only; a search's ilike folds with this, as PostgreSQL's lower() folds É to é
UNICODE_LOWER = "loopstack_lower"


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def configure(dbapi_connection: Any) -> None:
    """Set up a new driver connection (the engine's connect hook runs this too)."""
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    dbapi_connection.create_function(UNICODE_LOWER, 1, _unicode_lower, deterministic=True)
    cursor = dbapi_connection.cursor()
    for pragma in PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


class RawConnection:
    """A driver connection inside one transaction; `connection` is what DirectStatement runs on."""

    __slots__ = ("connection",)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.connection.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.connection.execute(sql, params).fetchone()
        return None if row is None else row[0]


class SQLiteConnections:
    """A small pool of driver connections to one database file.

    Parameters
    ----------
    path
        The database file.

    Examples
    --------
    >>> import os, tempfile
    >>> pool = SQLiteConnections(os.path.join(tempfile.mkdtemp(), "meta.db"))
    >>> with pool.transaction(write=True) as connection:
    ...     _ = connection.connection.execute("CREATE TABLE t (n INTEGER)")
    >>> with pool.transaction() as connection:
    ...     connection.scalar("SELECT count(*) FROM t")
    0
    >>> pool.close()
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[RawConnection]:
        """A connection in a read transaction, or a write transaction committed on success."""
        try:
            connection = self._checkout()
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise _wrapped(exc) from exc
        try:
            yield RawConnection(connection)
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _wrapped(exc) from exc
            raise
        finally:
            with self._lock:
                self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _checkout(self) -> sqlite3.Connection:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its parent's connections are not its to use or close
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        connection = sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        configure(connection)
        return connection


def read_revision(connection: RawConnection, version_table: str) -> str | None:
    """The schema revision stamped in `version_table`, or None where there is no such table."""
    if connection.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (version_table,)) == 0:
        return None
    return connection.scalar(f"SELECT version_num FROM {version_table}")  # type: ignore[no-any-return]


def has_any_table(connection: RawConnection, names: Sequence[str]) -> bool:
    rows = connection.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    return not {row[0] for row in rows}.isdisjoint(names)


def _wrapped(error: sqlite3.Error) -> Exception:
    """The SQLAlchemy exception the engine would raise for this driver error."""
    from sqlalchemy.exc import DBAPIError

    return DBAPIError.instance(None, None, error, sqlite3.Error)
