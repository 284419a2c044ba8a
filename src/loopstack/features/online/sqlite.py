"""The embedded online store: one SQLite table, one row per (view, entity key).

Reads are the serving hot path, so they use the standard library's sqlite3
directly (no ORM), one connection per thread, prepared statements cached by
sqlite3, and a covering primary key (``WITHOUT ROWID``) so that a lookup is a
single B-tree probe.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.features.online.base import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS online_values (
    view TEXT NOT NULL, key TEXT NOT NULL, event_ts INTEGER NOT NULL, created_ts INTEGER NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (view, key)
) WITHOUT ROWID
"""
UPSERT = """
INSERT INTO online_values (view, key, event_ts, created_ts, value) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (view, key) DO UPDATE SET event_ts = excluded.event_ts, created_ts = excluded.created_ts,
    value = excluded.value
WHERE excluded.event_ts > online_values.event_ts
   OR (excluded.event_ts = online_values.event_ts AND excluded.created_ts >= online_values.created_ts)
"""
MAX_VARIABLES = 500


class SqliteOnlineStore:
    """Online store in a SQLite file.

    Examples
    --------
    >>> import tempfile, pathlib, pyarrow as pa
    >>> store = SqliteOnlineStore("sqlite:///o.db", root=pathlib.Path(tempfile.mkdtemp()))
    >>> store.write_batch("v", pa.table({"key": ["1"], "event_ts": [5], "created_ts": [5], "value": ['{"x":1}']}))
    1
    >>> store.read([("v", ["1", "2"])])
    [[(5, '{"x":1}'), None]]
    >>> store.close()
    """

    def __init__(self, url: str, root: Path, prefix: str = "") -> None:
        path = url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            raise ConfigError(f"online_store {url!r} has no file; use sqlite:///.loopstack/online.db")
        self.path = Path(path) if os.path.isabs(path) else root / path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection().execute(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def write_batch(self, view: str, rows: Any) -> int:
        columns = [rows.column(name).to_pylist() for name in ("key", "event_ts", "created_ts", "value")]
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(UPSERT, zip([view] * rows.num_rows, *columns, strict=True))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return rows.num_rows

    def read(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[Record | None]]:
        connection = self._connection()
        out: list[list[Record | None]] = []
        for view, keys in requests:
            if len(keys) == 1:
                row = connection.execute(
                    "SELECT event_ts, value FROM online_values WHERE view = ? AND key = ?", (view, keys[0])
                ).fetchone()
                out.append([row])
                continue
            found: dict[str, Record] = {}
            for start in range(0, len(keys), MAX_VARIABLES):
                chunk = list(keys[start:start + MAX_VARIABLES])
                marks = ",".join("?" * len(chunk))
                for key, ts, value in connection.execute(
                    f"SELECT key, event_ts, value FROM online_values WHERE view = ? AND key IN ({marks})",
                    (view, *chunk),
                ):
                    found[key] = (ts, value)
            out.append([found.get(key) for key in keys])
        return out

    def delete_view(self, view: str) -> None:
        self._connection().execute("DELETE FROM online_values WHERE view = ?", (view,))

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
        self._local = threading.local()
