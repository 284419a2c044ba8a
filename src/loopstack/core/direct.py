"""Write statements compiled once and run straight on the DBAPI cursor.

SQLAlchemy builds the statement and owns the connection and its transaction;
only its per-call machinery (cache key, execution context, result set-up) is
skipped. That machinery costs 30-50 µs a statement, more than SQLite takes to
run one of ours, and a short tracked run issues nine of them: the tracking
writer and the event log are the hot writers that go through here.

Only statements whose values need nothing from SQLAlchemy at execution time
qualify: no Python-side column defaults, no expanding ``IN`` parameters, no
escaped parameter names. Values still pass through the types' bind
processors (JSON serialisation, float coercion), exactly as SQLAlchemy would
apply them; any other statement raises `UnsupportedStatement`.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.engine import Dialect
    from sqlalchemy.sql.compiler import Compiled

Row = Mapping[str, Any]


class UnsupportedStatement(ValueError):
    """The statement needs SQLAlchemy's execution machinery; run it with ``connection.execute``."""


@dataclass(frozen=True)
class Compiled:
    """A statement as SQLAlchemy compiles it for SQLite, written out so that it runs without SQLAlchemy.

    `names` are the parameters in SQL order; `floats` and `json` the ones that
    the column type's bind processor converts (``float`` for Float, ``json.dumps``
    for JSON, as SQLAlchemy's SQLite types do); `returns` whether the SQL has a
    RETURNING clause. A test compares every Compiled that `MetadataDB.direct`
    hands out with what SQLAlchemy compiles from the statement beside it.
    """

    sql: str
    names: tuple[str, ...]
    floats: tuple[str, ...] = ()
    json: tuple[str, ...] = ()
    returns: bool = False


class DirectStatement:
    """One DML statement, compiled for one dialect, executed on the DBAPI cursor.

    Parameters
    ----------
    statement
        An insert, update or upsert built with SQLAlchemy Core.
    dialect
        The dialect of the engine it will run on.
    columns
        For an insert, the columns the rows carry (others are left out of the
        SQL, as SQLAlchemy does when rows omit them).

    Examples
    --------
    >>> from sqlalchemy import Column, Integer, MetaData, Table, create_engine
    >>> engine = create_engine("sqlite://")
    >>> numbers = Table("numbers", MetaData(), Column("n", Integer))
    >>> numbers.metadata.create_all(engine)
    >>> insert = DirectStatement(numbers.insert(), engine.dialect, columns=["n"])
    >>> with engine.begin() as connection:
    ...     insert.execute_many(connection, [{"n": 1}, {"n": 2}])
    ...     connection.exec_driver_sql("SELECT sum(n) FROM numbers").scalar()
    3
    """

    def __init__(self, statement: Any, dialect: Dialect, columns: Sequence[str] | None = None) -> None:
        compiled = _compile(statement, dialect, columns)
        problem = _unsupported(compiled)
        if problem:
            raise UnsupportedStatement(f"{compiled.string!r} cannot run directly: {problem}")
        self.sql = compiled.string
        self.returns = bool(compiled.effective_returning)  # type: ignore[attr-defined]
        names = list(compiled.positiontup if compiled.positional else compiled.binds)  # type: ignore[attr-defined]
        processors = {name: _processor(compiled, name, dialect) for name in names}
        self._convert = _converter(names, {n: p for n, p in processors.items() if p is not None}, compiled.positional)
        self._dbapi_error = dialect.loaded_dbapi.Error

    @classmethod
    def precompiled(cls, compiled: Compiled, dbapi_error: type[Exception]) -> DirectStatement:
        """The statement from SQL written out in advance (qmark style), for a driver raising `dbapi_error`."""
        self = cls.__new__(cls)
        self.sql = compiled.sql
        self.returns = compiled.returns
        processors: dict[str, Callable[[Any], Any]] = dict.fromkeys(compiled.floats, _to_float)
        processors.update(dict.fromkeys(compiled.json, json.dumps))
        self._convert = _converter(list(compiled.names), processors, positional=True)
        self._dbapi_error = dbapi_error
        return self

    def execute_many(self, connection: Connection, rows: Sequence[Row]) -> None:
        """Run the statement once per row, in the connection's transaction."""
        if not rows:
            return
        params = [self._convert(row) for row in rows]
        cursor = connection.connection.cursor()
        try:
            cursor.executemany(self.sql, params)
        except self._dbapi_error as exc:
            raise self._wrapped(exc, params) from exc
        finally:
            cursor.close()

    def execute(self, connection: Connection, row: Row) -> Any:
        """Run the statement for one row; returns the first RETURNING value, else the cursor's
        lastrowid where the driver has one (SQLite), else None."""
        return self._run(connection, row, self._inserted)

    def execute_count(self, connection: Connection, row: Row) -> int:
        """Run an UPDATE or DELETE for one row; returns how many rows it changed."""
        return int(self._run(connection, row, lambda cursor: cursor.rowcount))

    def _inserted(self, cursor: Any) -> Any:
        return cursor.fetchone()[0] if self.returns else getattr(cursor, "lastrowid", None)

    def _run(self, connection: Connection, row: Row, result: Callable[[Any], Any]) -> Any:
        """Run the statement for one row on a cursor of its own; `result` reads the answer off the cursor."""
        params = self._convert(row)
        cursor = connection.connection.cursor()
        try:
            cursor.execute(self.sql, params)
            return result(cursor)
        except self._dbapi_error as exc:
            raise self._wrapped(exc, params) from exc
        finally:
            cursor.close()

    def _wrapped(self, error: Exception, params: Any) -> Exception:
        """The exception SQLAlchemy's execute would raise for this driver error (IntegrityError, ...)."""
        from sqlalchemy.exc import DBAPIError

        return DBAPIError.instance(self.sql, params, error, self._dbapi_error)


def _compile(statement: Any, dialect: Dialect, columns: Sequence[str] | None) -> Compiled:
    if columns is None:
        return statement.compile(dialect=dialect)  # type: ignore[no-any-return]
    return statement.compile(dialect=dialect, column_keys=list(columns))  # type: ignore[no-any-return]


def _unsupported(compiled: Any) -> str:
    if compiled.insert_prefetch or compiled.update_prefetch:
        return "a column has a Python-side default, which SQLAlchemy computes per execution"
    if compiled.literal_execute_params or compiled.post_compile_params:
        return "it has expanding or literal-execute parameters"
    if compiled.escaped_bind_names:
        return "a parameter name needs escaping"
    return ""


def _processor(compiled: Any, name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    bind_type = compiled.binds[name].type
    return bind_type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]


def _converter(names: list[str], processors: dict[str, Callable[[Any], Any]], positional: bool) -> Callable[[Row], Any]:
    """Row -> the DBAPI parameters: a sequence in SQL order (qmark) or a dict (pyformat)."""
    if not positional:
        if not processors:
            return lambda row: row
        return lambda row: {**row, **{n: p(row[n]) for n, p in processors.items()}}
    pick = _picker(names)
    processed = [(index, processors[name]) for index, name in enumerate(names) if name in processors]
    if not processed:
        return pick

    def convert(row: Row) -> list[Any]:
        values = list(pick(row))
        for index, process in processed:
            values[index] = process(values[index])
        return values

    return convert


def _to_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _picker(names: list[str]) -> Callable[[Row], tuple[Any, ...]]:
    """Row -> its values in `names` order, as a tuple (itemgetter: one C call per row)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    return lambda row: tuple(row[name] for name in names)
