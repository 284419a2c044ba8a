"""The metadata database: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL.

SQLite runs in WAL mode with a busy timeout so that several processes can log
into one project at once; write transactions start with ``BEGIN IMMEDIATE``
so two writers queue on the lock instead of failing on a lock upgrade.

The schema is brought to the current head on open. A fresh database is
created from the table definitions and stamped at the head (Alembic's
"create_all, then stamp" recipe, which avoids importing Alembic on the first
call of a new project); a database at an older revision is upgraded by the
Alembic migrations in ``loopstack/migrations``. Both paths run under a lock
(the SQLite write lock, a PostgreSQL advisory lock) so that processes opening
a project at the same time migrate it once.

A forked child never uses its parent's pooled connections: two processes on
one socket mix their messages (see `_after_fork_in_child`).

On a SQLite file, the statements of a run's life (see `direct_write`) run on
plain driver connections (`loopstack.core.sqlite`) from SQL compiled in
advance, and a fresh database is made from a DDL script: a short tracked
script never imports SQLAlchemy. The engine, the tables and SQLAlchemy load
on the first use of anything else.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopstack.core import sqlite as sqlite_driver
from loopstack.core.direct import Compiled, DirectStatement, UnsupportedStatement
from loopstack.core.errors import BackendUnavailableError, ConfigError
from loopstack.core.sqlite import SQLITE_BUSY_TIMEOUT_MS, SQLiteConnections

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, MetaData, Table

VERSION_TABLE = "loopstack_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATION_LOCK = 7_402_011_301
# a read transaction on PostgreSQL: one snapshot (psycopg puts both in its BEGIN, no extra round trip)
_PG_SNAPSHOT = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}


def normalize_url(url: str, root: Path) -> str:
    """Make a SQLite path absolute against the project root and pick the psycopg driver.

    Any ``sqlite+<driver>:///`` URL is a file like ``sqlite:///`` (the driver is kept), and ``~`` is the
    home folder: otherwise the database would land under the cwd, or in a folder literally named ``~``.
    """
    scheme, separator, path = url.partition(":///")
    if separator and (scheme == "sqlite" or scheme.startswith("sqlite+")):
        if path in ("", ":memory:"):
            raise ConfigError(f"metadata URL {url!r} has no file; use sqlite:///.loopstack/meta.db")
        path = os.path.expanduser(path)
        absolute = Path(path) if os.path.isabs(path) else root / path
        absolute.parent.mkdir(parents=True, exist_ok=True)
        return f"{scheme}:///{absolute}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


class MetadataDB:
    """A connection pool plus read and write transactions on the metadata DB.

    Parameters
    ----------
    url
        A SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
    metadata
        The tables this database must hold, or a function returning them
        (called on first use, so that opening a project does not import them).
    head
        The Alembic revision that `metadata` corresponds to.
    sqlite_script
        The DDL that creates `metadata` on SQLite (``loopstack.schema_sqlite``):
        a fresh SQLite database is made with it instead of create_all.
    source
        Where `url` came from, for error messages (``loopstack.yaml`` or the
        environment variable ``LOOPSTACK_METADATA``).

    A PostgreSQL server that cannot be reached, in any read or write, raises
    BackendUnavailableError naming the URL (without its password), the
    server's reason and `source`.
    """

    def __init__(
        self,
        url: str,
        metadata: MetaData | Callable[[], MetaData],
        head: str,
        sqlite_script: Sequence[str] = (),
        source: str = "loopstack.yaml",
    ) -> None:
        self.url = url
        self.source = source
        self._metadata = metadata
        self.head = head
        self.sqlite_script = tuple(sqlite_script)
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        self.dialect = "postgresql" if scheme in ("postgresql", "postgres") else scheme
        # a plain SQLite file: the run-life statements go straight to the driver (see core.sqlite)
        plain_file = url.startswith("sqlite:///") and "?" not in url and url != "sqlite:///:memory:"
        self.raw: SQLiteConnections | None = SQLiteConnections(url.removeprefix("sqlite:///")) if plain_file else None
        # SQL written out in advance that `direct` handed out, with the statement it stands for (for tests)
        self.precompiled: dict[Compiled, tuple[Callable[[], Any], Sequence[str] | None]] = {}
        # built and compiled once per shape (table, keys, columns): constructing an upsert
        # costs more than executing it, and the tracking writer issues four per flush
        self._upserts: dict[tuple[Any, ...], Any] = {}
        _databases.add(self)

    @cached_property
    def metadata(self) -> MetaData:
        return self._metadata() if callable(self._metadata) else self._metadata

    @cached_property
    def engine(self) -> Engine:
        return _create_engine(self.url)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction that sees one snapshot.

        SQLite WAL gives one by itself. PostgreSQL's default READ COMMITTED takes a new snapshot per
        statement, so a search's hits and their values, or a version number and its row, could come
        from different commits; REPEATABLE READ READ ONLY holds one snapshot for the transaction.
        """
        with self._unavailable_as_error(), self.engine.connect() as connection:
            if self.dialect == "postgresql":
                connection = connection.execution_options(**_PG_SNAPSHOT)
            with connection.begin():
                yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed on success."""
        with self._unavailable_as_error(), self.engine.connect() as connection:
            connection = connection.execution_options(loopstack_write=True)
            with connection.begin():
                yield connection

    @contextmanager
    def _unavailable_as_error(self) -> Iterator[None]:
        """A server that cannot be reached (refused, gone mid-transaction, no such database, login refused)
        raises BackendUnavailableError naming the database, instead of the driver's error; a constraint or
        data error, and anything from SQLite (locked, busy), is raised as it is."""
        try:
            yield
        except Exception as exc:
            if _is_connection_error(exc):
                raise self.unavailable(exc) from exc
            raise

    def unavailable(self, exc: BaseException) -> BackendUnavailableError:
        """The error for a server that cannot be reached: its URL (no password), the server's reason
        (first line), and where the URL came from."""
        cause = getattr(exc, "orig", None) or exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return BackendUnavailableError(
            f"cannot reach the metadata database {_redact(self.url)}: {reason}; check that the server runs "
            f"and that the URL (from {self.source}) is right"
        )

    def direct_write(self) -> AbstractContextManager[Any]:
        """A write transaction for `DirectStatement`s: on a SQLite file a driver connection
        (`RawConnection`), elsewhere the same SQLAlchemy connection as `write`."""
        return self.raw.transaction(write=True) if self.raw is not None else self.write()

    def table(self, name: str) -> Table:
        return self.metadata.tables[name]

    def ensure_schema(self) -> None:
        """Create or upgrade the schema to `head`, once, under a lock."""
        if self.raw is not None and self.sqlite_script and self._ensure_sqlite_schema():
            return
        if self.current_revision() == self.head:
            return
        with self.write() as connection:
            if self.dialect == "postgresql":
                from sqlalchemy import text

                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            revision = _read_revision(connection)
            if revision == self.head:
                return
            if revision is None and not _has_tables(connection, self.metadata):
                self.metadata.create_all(connection, checkfirst=False)  # none exist: skip a PRAGMA per table
                _stamp(connection, self.head)
                return
            _upgrade(connection, revision)

    def _ensure_sqlite_schema(self) -> bool:
        """At head, or made fresh from the script, on the driver alone; False if it needs migrating."""
        assert self.raw is not None
        with self.raw.transaction() as connection:
            if sqlite_driver.read_revision(connection, VERSION_TABLE) == self.head:
                return True
        tables = [statement.split()[2] for statement in self.sqlite_script if statement.startswith("CREATE TABLE ")]
        with self.raw.transaction(write=True) as connection:
            revision = sqlite_driver.read_revision(connection, VERSION_TABLE)
            if revision == self.head:
                return True
            if revision is not None or sqlite_driver.has_any_table(connection, tables):
                return False  # an older schema: Alembic upgrades it (ensure_schema goes on)
            for statement in self.sqlite_script:
                connection.connection.execute(statement)
            connection.connection.execute(_CREATE_VERSION_TABLE)
            connection.connection.execute(_STAMP, (self.head,))
        return True

    def current_revision(self) -> str | None:
        try:
            with self.read() as connection:
                return _read_revision(connection)
        except BackendUnavailableError as exc:
            raise exc.with_traceback(None) from None  # the driver's traceback says nothing more

    def upsert(
        self,
        connection: Any,
        table: Table | str,
        rows: Sequence[dict[str, Any]],
        keys: Sequence[str],
        update: Sequence[str],
        only_if: Any = None,
        sqlite: Compiled | None = None,
    ) -> None:
        """Insert rows, updating `update` columns of rows whose `keys` exist.

        `table` is a table or its name. `only_if` is a function of (table,
        excluded) returning a SQL condition that must hold for the update to
        happen. `sqlite` is the statement as compiled for SQLite, for rows with
        these columns (see `direct`).
        """
        if not rows:
            return
        shape = (table, tuple(keys), tuple(update), only_if, tuple(rows[0]))
        statement = self._upserts.get(shape)
        if statement is None:

            def build() -> Any:
                target = self.table(table) if isinstance(table, str) else table
                return self._upsert_statement(target, keys, update, only_if)

            if sqlite is not None and self.raw is not None:
                statement = self.direct(build, shape[-1], sqlite=sqlite)
            else:
                statement = self._prepare(build(), columns=shape[-1])
            self._upserts[shape] = statement
        if isinstance(statement, DirectStatement):
            statement.execute_many(connection, rows)
        else:
            connection.execute(statement, list(rows))

    def direct(
        self, statement: Any, columns: Sequence[str] | None = None, sqlite: Compiled | None = None
    ) -> DirectStatement:
        """`statement` compiled once for this database, to run on the DBAPI cursor (see core.direct).

        `statement` may be a function that builds it. On a SQLite file, `sqlite`
        (the same statement as compiled for SQLite, written out) is used instead,
        without building or compiling anything; run it in `direct_write`.
        """
        if sqlite is not None and self.raw is not None:
            build = statement if callable(statement) else (lambda: statement)
            self.precompiled[sqlite] = (build, columns)
            return DirectStatement.precompiled(sqlite, sqlite3.Error)
        if callable(statement):
            statement = statement()
        return DirectStatement(statement, self.engine.dialect, columns)

    def _prepare(self, statement: Any, columns: Sequence[str]) -> Any:
        """A DirectStatement where the statement qualifies, else the statement for connection.execute."""
        try:
            return self.direct(statement, columns)
        except UnsupportedStatement:
            return statement

    def _upsert_statement(self, table: Table, keys: Sequence[str], update: Sequence[str], only_if: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(table)
        excluded = statement.excluded
        where = only_if(table, excluded) if only_if is not None else None
        if update:
            return statement.on_conflict_do_update(
                index_elements=list(keys),
                set_={column: excluded[column] for column in update},
                where=where,
            )
        return statement.on_conflict_do_nothing(index_elements=list(keys))

    def dispose(self) -> None:
        if self.raw is not None:
            self.raw.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


_databases: weakref.WeakSet[MetadataDB] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Give each engine of a forked child a fresh pool (SQLAlchemy's recipe for fork). The parent's
    connections are dropped without closing them: closing one would end the parent's session on the
    server, and psycopg does not close a connection that another process opened when it is collected.
    The driver-only SQLite connections are guarded on checkout (see core.sqlite)."""
    for db in list(_databases):
        engine = db.__dict__.get("engine")  # an engine never built has no pool to drop
        if engine is not None:
            engine.dispose(close=False)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _create_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            sqlite_driver.configure(dbapi_connection)  # as the driver-only connections are

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            write = connection.get_execution_options().get("loopstack_write", False)
            # straight to the driver: the statement needs no compiling, and a short run
            # opens two transactions, so SQLAlchemy's execute path would be a tenth of it
            connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"metadata URL {_redact(url)} needs the driver {exc.name!r}; "
            "install it with `pip install 'loopstack[postgres]'`"
        ) from None


def _read_revision(connection: Connection) -> str | None:
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    row = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
    return row[0] if row else None


def _has_tables(connection: Connection, metadata: MetaData) -> bool:
    from sqlalchemy import inspect

    existing = set(inspect(connection).get_table_names())
    return bool(existing & set(metadata.tables))


_CREATE_VERSION_TABLE = f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
_STAMP = f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (?)"


def _stamp(connection: Connection, revision: str) -> None:
    from sqlalchemy import text

    connection.execute(text(_CREATE_VERSION_TABLE))
    connection.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": revision})


def _upgrade(connection: Connection, revision: str | None) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if revision is not None and revision not in known:
        raise ConfigError(
            f"the metadata database is at schema revision {revision!r}, which this "
            "version of loopstack does not know; upgrade loopstack (pip install -U loopstack)"
        )
    command.upgrade(config, "head")


# SQLSTATE classes and codes of a server that cannot be reached or will not let this client in:
# connection exceptions (08), shutdowns (57P01-57P03), no such database (3D000), login refused (28)
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03", "3D000", "28")


def _is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` is a server (not SQLite) that cannot be reached, rather than a statement's error."""
    if "sqlalchemy" not in type(exc).__module__:
        return False
    from sqlalchemy.exc import InterfaceError, OperationalError

    if not isinstance(exc, (OperationalError, InterfaceError)) or "sqlite" in type(exc.orig).__module__:
        return False
    state = getattr(exc.orig, "sqlstate", None)  # None: no answer from a server (refused, connection lost)
    return exc.connection_invalidated or state is None or state.startswith(_UNREACHABLE_STATES)


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
