"""Inputs of a check: any table a user holds, seen by DuckDB as one view.

Checks compile to SQL, so every input becomes a DuckDB view named ``data`` on
a private connection. Frames and Arrow tables are registered without copying;
Parquet files and folders are scanned by ``read_parquet`` so that a suite over
data larger than memory streams it instead of loading it; a `Query` runs on
the user's own DuckDB connection.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopstack.core.errors import ValidationError

VIEW = "data"
_QUERY_STARTS = ("select", "with", "from", "values", "table")
_local = threading.local()
_SETTINGS: dict[str, str] = {}
# Group keys whose range spans at most 2**20 values (an integer id over a million rows, known from
# Parquet statistics) get DuckDB's perfect hash aggregate: a `unique` check then costs less than half
# as much, and its table (2**20 slots per thread at most) is smaller than the usual hash table would
# be. Wider ranges keep the usual hash table, which can spill under a memory limit.
_PERFECT_HASH_BITS = 20


@dataclass(frozen=True)
class Query:
    """A DuckDB query to check instead of a table.

    Parameters
    ----------
    sql : str
        Any DuckDB ``SELECT``; it may read files, e.g. ``read_csv('x.csv')``.
    connection : duckdb.DuckDBPyConnection, optional
        The connection whose tables the query names; a private in-memory one
        when omitted.

    Examples
    --------
    >>> from loopstack.quality import NotNull, Suite
    >>> Suite("q", [NotNull("x")]).run(Query("SELECT 1 AS x")).passed
    True
    """

    sql: str
    connection: Any = None


def quote(name: str) -> str:
    """A SQL identifier, double-quoted so any column name is safe."""
    return '"' + str(name).replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A SQL literal for a Python value; strings are single-quoted and escaped."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):  # int()/float(): a NumPy float64 is a float but repr()s as np.float64(..)
        return repr(int(value)) if isinstance(value, int) else f"'{float(value)!r}'::DOUBLE"  # quoted: inf, nan
    if hasattr(value, "isoformat"):
        return f"'{value.isoformat()}'"
    if hasattr(value, "item"):  # a NumPy scalar
        return literal(value.item())
    return "'" + str(value).replace("'", "''") + "'"


class Source:
    """One input opened as the DuckDB view ``data``, with its schema.

    Use `open_source`; the connection is a private cursor unless a `Query` brought its own.
    """

    def __init__(
        self, connection: Any, description: str, owned: bool, in_memory: bool = False, rescannable: Any = None
    ) -> None:
        self.connection = connection
        self.description = description
        self.in_memory = in_memory
        self.sample_columns: list[str] | str | None = None
        self._owned = owned
        self._rescannable = rescannable
        self._schema: dict[str, str] | None = None
        self._extra = 0

    @property
    def schema(self) -> dict[str, str]:
        """Column name to DuckDB type name, in column order."""
        if self._schema is None:
            self._schema = self.columns_of(VIEW)
        return self._schema

    @property
    def workers(self) -> int:
        """How many queries may run on this input at once: DuckDB's threads, or 1 when it cannot be re-read.

        A Parquet file is read by one thread per row group, so a file of
        one row group is scanned by one core; independent checks on their
        own cursors then keep the other cores busy. Only inputs whose
        rescan is cheap and repeatable (Parquet paths) qualify: a CSV
        would be parsed once per query, a `Query` run once per query.
        """
        if self._rescannable is None:
            return 1
        return max(1, int(self.one("SELECT current_setting('threads')")[0]))

    def reopen(self) -> Source:
        """Another cursor on the same database with the same input as ``data``, for a second thread."""
        if self._rescannable is None:
            raise ValidationError(f"input {self.description!r} cannot be opened again; run its checks in turn")
        connection = self.connection.cursor()
        try:
            _prepare(connection, self._rescannable, parquet=True)
            _register(connection, VIEW, self._rescannable)
        except BaseException:
            connection.close()
            raise
        copy = Source(connection, self.description, True, self.in_memory, self._rescannable)
        copy.sample_columns = self.sample_columns
        copy._schema = self._schema
        return copy

    def sql(self, query: str) -> Any:
        """Execute a query on this source's connection and return the cursor (fetch it fully)."""
        return self.connection.execute(query)

    def one(self, query: str) -> tuple[Any, ...]:
        """The single row of an aggregate query."""
        return self.connection.execute(query).fetchall()[0]

    def sample_select(self, columns: list[str]) -> str:
        """The SELECT list for sample rows of a check over `columns`.

        Whole rows for in-memory data (cheap to read); for files and queries
        the checked columns plus ``sample_columns`` (``"*"`` for whole rows),
        because a whole row means decoding every column of a Parquet row group.
        """
        extra = self.sample_columns
        if extra == "*" or (extra is None and self.in_memory):
            return "*"
        wanted = [*(extra or []), *(c for c in columns if c not in (extra or []))]
        return ", ".join(quote(c) for c in wanted) or "*"

    def arrow(self, query: str) -> Any:
        """A query's result as an Arrow table (the relation API avoids an extra copy)."""
        relation = self.connection.sql(query)
        return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()

    def columns_of(self, view: str) -> dict[str, str]:
        """Column name to type of another view on this connection (e.g. a reference)."""
        return {row[0]: row[1] for row in self.connection.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()}

    def attach(self, data: Any) -> str:
        """Register another input (a reference table) on this connection; return its view name."""
        self._extra += 1
        name = f"ref_{self._extra}"
        _register(self.connection, name, data)
        return name

    def close(self) -> None:
        """Close the connection if it is ours, else drop the views made on it."""
        if self._owned:
            self.connection.close()
            return
        for index in range(self._extra, -1, -1):
            name = f"ref_{index}" if index else VIEW
            for view in (name, f"{name}_raw"):
                self.connection.execute(f"DROP VIEW IF EXISTS {view}")

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(data: Any) -> Source:
    """Open Arrow, pandas, polars, a Parquet/CSV path or folder, or a `Query` as view ``data``.

    NaN in float columns reads as null, as pandas, Great Expectations and
    pandera see it, whatever the input: `NotNull` counts it and value checks
    skip it. A `Query` with its own connection runs there, through temporary
    views ``data`` and ``ref_<n>`` that are dropped afterwards.

    Examples
    --------
    >>> import pyarrow as pa
    >>> with open_source(pa.table({"x": [1, 2]})) as source:
    ...     source.schema
    {'x': 'BIGINT'}
    """
    if isinstance(data, Source):
        return data
    owned = not (isinstance(data, Query) and data.connection is not None)
    connection = shared_database().cursor() if owned else data.connection
    parquet = owned and _is_parquet(data)
    try:
        if owned:
            _prepare(connection, data, parquet)
        _register(connection, VIEW, data)
    except BaseException:
        if owned:
            connection.close()
        raise
    in_memory = not isinstance(data, str | os.PathLike | Query)
    return Source(connection, describe(data), owned=owned, in_memory=in_memory, rescannable=data if parquet else None)


def configure(memory_limit: str | None = None, threads: int | None = None) -> None:
    """Set DuckDB's memory limit and threads for the checks run from now on.

    With a memory limit, large ``unique`` and ``foreign_key`` checks spill
    to disk instead of holding their hash tables in memory.

    Examples
    --------
    >>> configure(memory_limit="1GB")
    >>> configure(memory_limit=None)  # back to DuckDB's default (80% of RAM)
    """
    for name, value in (("memory_limit", memory_limit), ("threads", threads)):
        if value is None:
            _SETTINGS.pop(name, None)
        else:
            _SETTINGS[name] = str(value)
    database = getattr(_local, "database", None)
    if database is not None:
        _apply(database, reset=True)


def _apply(database: Any, reset: bool = False) -> None:
    for name in ("memory_limit", "threads"):
        if name in _SETTINGS:
            database.execute(f"SET {name} = {literal(_SETTINGS[name])}")
        elif reset:
            database.execute(f"RESET {name}")


def _prepare(cursor: Any, data: Any, parquet: bool) -> None:
    """Session settings of a cursor of ours for `data` (never set on a user's own connection).

    A local Parquet file is read without prefetching whole column chunks:
    the ``LIMIT`` queries that fetch samples then read a page instead of a
    column chunk, and scans save the copies (6% of a suite's CPU time).
    Remote files, where a read costs a round trip, keep prefetching.
    """
    cursor.execute(f"SET perfect_ht_threshold = {_PERFECT_HASH_BITS}")
    if parquet and "://" not in os.fspath(data):
        cursor.execute("SET disable_parquet_prefetching = true")


def _is_parquet(data: Any) -> bool:
    """Whether `data` is a Parquet path, glob or folder (read again cheaply by another query)."""
    return isinstance(data, str | os.PathLike) and _scan(data).startswith("read_parquet(")


def shared_database() -> Any:
    """This thread's in-memory DuckDB database; each check opens a cursor on it.

    Opening a database costs a hundred milliseconds or more on a busy
    machine, a cursor well under one, and cursors do not share registered
    tables or temporary views, so checks stay isolated. Its clock is UTC
    (``SET GLOBAL``, which its cursors share), as the feature store's: a naive
    bound is a UTC time whatever the machine's zone.
    """
    database = getattr(_local, "database", None)
    if database is None:
        import duckdb

        database = _local.database = duckdb.connect()
        database.execute("SET GLOBAL TimeZone = 'UTC'")
        _apply(database)
    return database


def describe(data: Any) -> str:
    """A short human description of an input for results and events."""
    if isinstance(data, Query):
        return f"query: {' '.join(data.sql.split())[:200]}"
    if isinstance(data, str | os.PathLike):
        return str(data)
    if isinstance(data, dict):
        return f"dict of {len(data)} columns"
    return f"{type(data).__module__.split('.')[0]}.{type(data).__name__}"


def _register(connection: Any, name: str, data: Any) -> None:
    """Make `data` the view `name`, with NaN in float columns read as null."""
    raw = f"{name}_raw"
    if isinstance(data, Query | str | os.PathLike):
        import duckdb

        select = data.sql if isinstance(data, Query) else f"SELECT * FROM {_scan(data)}"
        try:
            connection.execute(f"CREATE OR REPLACE TEMP VIEW {raw} AS {select}")
        except duckdb.Error as error:  # a damaged or missing file, an empty folder, a query that does not run
            reason = str(error).splitlines()[0]
            raise ValidationError(
                f"cannot read {describe(data)!r}: {reason}; pass a Parquet/CSV file, a folder of Parquet files "
                "or a DuckDB SELECT that runs"
            ) from error
    else:
        connection.register(raw, _to_arrow(data))
    connection.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {nan_as_null(connection, raw)}")


def nan_as_null(connection: Any, view: str) -> str:
    """A SELECT over `view` that turns NaN into null in its float columns (a cheap projection)."""
    types = connection.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
    floats = [quote(row[0]) for row in types if row[1] in ("FLOAT", "DOUBLE")]
    if not floats:
        return f"SELECT * FROM {view}"
    replaced = ", ".join(f"CASE WHEN isnan({col}) THEN NULL ELSE {col} END AS {col}" for col in floats)
    return f"SELECT * REPLACE ({replaced}) FROM {view}"


def _scan(path: str | os.PathLike[str]) -> str:
    """The DuckDB table function that streams a file, a glob or a folder of Parquet files."""
    text = os.fspath(path)
    if isinstance(path, str) and text.lstrip().lower().startswith(_QUERY_STARTS) and not os.path.exists(text):
        return f"({text})"
    target = Path(text)
    if target.is_dir():
        pattern = target / "**" / "*.parquet"
        return f"read_parquet({literal(str(pattern))}, union_by_name = true)"
    if not any(ch in text for ch in "*?[") and not target.exists():
        raise ValidationError(f"data path {text!r} does not exist; pass an existing Parquet/CSV file or folder")
    suffix = target.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return f"read_csv({literal(text)})"
    if suffix in (".json", ".jsonl", ".ndjson"):
        return f"read_json_auto({literal(text)})"
    return f"read_parquet({literal(text)}, union_by_name = true)"


def _to_arrow(data: Any) -> Any:
    """Arrow for in-memory inputs.

    A record-batch reader is read into a table: a suite queries its input
    several times (schema, counts, samples, table checks) and a reader can
    be read only once. Stream data larger than memory from Parquet instead.
    """
    import pyarrow as pa

    from loopstack.core.frames import to_arrow

    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    try:
        return to_arrow(
            data, "check data of type", hint=", a Parquet/CSV path or folder, or loopstack.quality.Query('SELECT ...')"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # e.g. a pandas object column holding 1 and 'a'
        raise ValidationError(
            f"cannot check this {describe(data)}: {str(error).splitlines()[0]}; give each column one type, "
            "e.g. df[column].astype(str)"
        ) from error
