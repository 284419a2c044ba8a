"""A fresh SQLite database made from `schema_sqlite.SCRIPT` is the one create_all and the migrations make."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError, OperationalError

from loopstack import schema_sqlite
from loopstack.core.db import VERSION_TABLE, MetadataDB
from loopstack.core.sqlite import SQLiteConnections
from loopstack.schema import HEAD, METADATA


def test_script_is_what_the_table_definitions_render() -> None:
    assert list(schema_sqlite.SCRIPT) == schema_sqlite.render_script(), (
        "the tables changed: regenerate with `python -m loopstack.schema_sqlite`"
    )
    assert list(schema_sqlite.TABLES) == schema_sqlite.render_tables()
    assert schema_sqlite.HEAD == HEAD


def _master(path: Path) -> set[tuple[str, str, str, str]]:
    with sqlite3.connect(path) as connection:
        return set(connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def test_fresh_database_from_the_script_equals_create_all_and_stamp(tmp_path: Path) -> None:
    scripted = MetadataDB(f"sqlite:///{tmp_path / 'scripted.db'}", lambda: METADATA, HEAD, schema_sqlite.SCRIPT)
    scripted.ensure_schema()
    assert "engine" not in scripted.__dict__ and "metadata" not in scripted.__dict__  # the driver alone
    created = MetadataDB(f"sqlite:///{tmp_path / 'created.db'}", METADATA, HEAD)
    created.raw = None  # the SQLAlchemy way: create_all, then stamp
    created.ensure_schema()
    scripted.dispose()
    created.dispose()
    assert _master(tmp_path / "scripted.db") == _master(tmp_path / "created.db")
    with sqlite3.connect(tmp_path / "scripted.db") as connection:
        assert connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(HEAD,)]
    engine = create_engine(f"sqlite:///{tmp_path / 'scripted.db'}")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, METADATA) if getattr(d[1], "name", "") != VERSION_TABLE]
    engine.dispose()
    assert differences == []


def test_an_existing_database_is_left_to_the_migrations(tmp_path: Path) -> None:
    """A database at an older revision is upgraded by Alembic, not overwritten by the script."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute(f"INSERT INTO {VERSION_TABLE} VALUES ('0001_initial')")
    before = _master(path)
    db = MetadataDB(f"sqlite:///{path}", METADATA, HEAD, schema_sqlite.SCRIPT)
    assert db._ensure_sqlite_schema() is False
    assert _master(path) == before  # untouched: ensure_schema goes on to Alembic
    db.dispose()


def test_an_older_database_opened_with_the_script_is_upgraded_by_alembic(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from loopstack.core.db import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    engine.dispose()
    db = MetadataDB(url, METADATA, HEAD, schema_sqlite.SCRIPT)
    db.ensure_schema()
    assert db.current_revision() == HEAD
    db.dispose()


def test_a_forked_child_does_not_reuse_its_parents_connections(tmp_path: Path) -> None:
    pool = SQLiteConnections(str(tmp_path / "f.db"))
    with pool.transaction(write=True) as connection:
        connection.connection.execute("CREATE TABLE t (n INTEGER)")
    parents = list(pool._idle)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        with pool.transaction(write=True) as connection:
            connection.connection.execute("INSERT INTO t VALUES (1)")
            fresh = connection.connection not in parents
        os.write(write, repr(fresh).encode())
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 16) == b"True"
    with pool.transaction() as connection:
        assert connection.scalar("SELECT count(*) FROM t") == 1
    pool.close()


def test_reopening_at_head_needs_no_sqlalchemy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    MetadataDB(url, METADATA, HEAD, schema_sqlite.SCRIPT).ensure_schema()
    again = MetadataDB(url, lambda: pytest.fail("tables loaded"), HEAD, schema_sqlite.SCRIPT)
    again.ensure_schema()
    assert "engine" not in again.__dict__
    again.dispose()


def test_driver_errors_leave_as_sqlalchemy_errors(tmp_path: Path) -> None:
    pool = SQLiteConnections(str(tmp_path / "e.db"))
    with pool.transaction(write=True) as connection:
        connection.connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        connection.connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(IntegrityError), pool.transaction(write=True) as connection:
        connection.connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(OperationalError, match="no such table"), pool.transaction() as connection:
        connection.scalar("SELECT * FROM missing")
    with pool.transaction() as connection:  # rolled back, and the connection is fine for the next one
        assert connection.scalar("SELECT count(*) FROM t") == 1
    pool.close()
    unreachable = SQLiteConnections(str(tmp_path / "no" / "such" / "dir" / "x.db"))
    with pytest.raises(OperationalError, match="unable to open"), unreachable.transaction():
        pass


def test_first_call_on_a_fresh_project_imports_neither_sqlalchemy_nor_pydantic(tmp_path: Path) -> None:
    code = (
        "import sys, loopstack as ls\n"
        f"project = ls.Project.init({str(tmp_path / 'p')!r}, name='fresh')\n"
        "run = ls.start_run(project=project)\n"
        "ls.log_metric('loss', 0.5, step=0)\n"
        "ls.end_run()\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported sqlalchemy'\n"
        "assert 'pydantic' not in sys.modules, 'imported pydantic'\n"
        "print(project.config.name, ls.Client(project).get_run(run.id).metrics['loss'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["fresh", "0.5"]
