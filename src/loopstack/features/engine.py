"""The embedded offline engine: a DuckDB database in memory, one cursor per query.

DuckDB connections are not safe to share between threads, cursors are; each
retrieval takes its own cursor, registers the Arrow tables it needs on it,
and closes it. The session clock is UTC so that ``TIMESTAMP WITH TIME ZONE``
source columns convert to UTC, never to the machine's local time.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.core.frames import duckdb_to_arrow
from loopstack.features.sources import Source

_names = itertools.count()


class Session:
    """One cursor with its registered tables; sources turn into SQL against it."""

    def __init__(self, cursor: Any, root: Path) -> None:
        self.con = cursor
        self.root = root

    def fork(self) -> AbstractContextManager[Session]:
        """A session on a new cursor of the same database, for a query run on another thread.

        Registered tables are the cursor's own, so the fork starts without them.
        """
        return _session_on(self.con.cursor(), self.root)

    def register(self, data: Any) -> str:
        name = f"__ls_t{next(_names)}"
        self.con.register(name, data)
        return name

    def sql(self, source: Source) -> str:
        return source.sql(self)

    def columns(self, source: Source, label: str) -> dict[str, str]:
        """Column name -> DuckDB type of `source`, read without scanning it."""
        return self.describe(self.sql(source), label)

    def describe(self, relation: str, label: str) -> dict[str, str]:
        """Column name -> DuckDB type of `relation` (a source's SQL or a registered table); a source DuckDB
        cannot read (a damaged file) is a ValidationError naming `label`."""
        try:
            rows = self.con.execute(f"DESCRIBE SELECT * FROM {relation} LIMIT 0").fetchall()
        except ValidationError:
            raise
        except Exception as exc:  # duckdb raises its own error classes per failure
            raise ValidationError(f"{label}: cannot read its source ({exc.__class__.__name__}: {exc})") from None
        return {row[0]: row[1] for row in rows}

    def arrow(self, query: str) -> Any:
        return duckdb_to_arrow(self.con.sql(query))


class Engine:
    """A DuckDB database shared by the store's queries."""

    def __init__(self, root: Path, threads: int | None = None) -> None:
        import duckdb

        self.root = root
        config = {"threads": threads} if threads else {}
        self._con = duckdb.connect(":memory:", config=config)
        self._lock = threading.Lock()

    def session(self) -> AbstractContextManager[Session]:
        with self._lock:
            cursor = self._con.cursor()
        return _session_on(cursor, self.root)

    def close(self) -> None:
        self._con.close()


@contextmanager
def _session_on(cursor: Any, root: Path) -> Iterator[Session]:
    """A session on `cursor` (UTC clock, paths relative to the project), closing the cursor after."""
    try:
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.execute("SET file_search_path = '" + str(root).replace("'", "''") + "'")
        yield Session(cursor, root)
    finally:
        cursor.close()


def quote(identifier: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + identifier.replace('"', '""') + '"'


__all__ = ["Engine", "Session", "quote"]
