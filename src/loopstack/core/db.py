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
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopstack.core.direct import DirectStatement, UnsupportedStatement
from loopstack.core.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, MetaData, Table

VERSION_TABLE = "loopstack_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATION_LOCK = 7_402_011_301
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str, root: Path) -> str:
    """Make a SQLite path absolute against the project root and pick the psycopg driver."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path in ("", ":memory:"):
            raise ConfigError(f"metadata URL {url!r} has no file; use sqlite:///.loopstack/meta.db")
        absolute = Path(path) if os.path.isabs(path) else root / path
        absolute.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{absolute}"
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
        The tables this database must hold.
    head
        The Alembic revision that `metadata` corresponds to.
    """

    def __init__(self, url: str, metadata: MetaData, head: str) -> None:
        self.url = url
        self.metadata = metadata
        self.head = head
        self.engine = _create_engine(url)
        self.dialect = self.engine.dialect.name
        # built and compiled once per shape (table, keys, columns): constructing an upsert
        # costs more than executing it, and the tracking writer issues four per flush
        self._upserts: dict[tuple[Any, ...], Any] = {}

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction (a snapshot on SQLite WAL)."""
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed on success."""
        with self.engine.connect() as connection:
            connection = connection.execution_options(loopstack_write=True)
            with connection.begin():
                yield connection

    def table(self, name: str) -> Table:
        return self.metadata.tables[name]

    def ensure_schema(self) -> None:
        """Create or upgrade the schema to `head`, once, under a lock."""
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

    def current_revision(self) -> str | None:
        try:
            with self.read() as connection:
                return _read_revision(connection)
        except Exception as exc:  # the driver's own error types differ per backend
            if _is_connection_error(exc):
                raise BackendUnavailableError(
                    f"cannot reach the metadata database {_redact(self.url)}: {exc.__class__.__name__}; "
                    "check that the server runs and the URL in loopstack.yaml is right"
                ) from None
            raise

    def upsert(
        self,
        connection: Connection,
        table: Table,
        rows: Sequence[dict[str, Any]],
        keys: Sequence[str],
        update: Sequence[str],
        only_if: Any = None,
    ) -> None:
        """Insert rows, updating `update` columns of rows whose `keys` exist.

        `only_if` is a function of (table, excluded) returning a SQL condition
        that must hold for the update to happen.
        """
        if not rows:
            return
        shape = (table, tuple(keys), tuple(update), only_if, tuple(rows[0]))
        statement = self._upserts.get(shape)
        if statement is None:
            statement = self._upserts[shape] = self._prepare(
                self._upsert_statement(table, keys, update, only_if), columns=shape[-1]
            )
        if isinstance(statement, DirectStatement):
            statement.execute_many(connection, rows)
        else:
            connection.execute(statement, list(rows))

    def direct(self, statement: Any, columns: Sequence[str] | None = None) -> DirectStatement:
        """`statement` compiled once for this database, to run on the DBAPI cursor (see core.direct)."""
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
        self.engine.dispose()


def _create_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

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


def _stamp(connection: Connection, revision: str) -> None:
    from sqlalchemy import text

    connection.execute(text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
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


def _is_connection_error(exc: Exception) -> bool:
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, OperationalError) and "sqlite" not in type(exc.orig).__module__


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
