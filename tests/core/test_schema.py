"""The schema made by create_all + stamp equals the one the migrations build."""

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from loopstack.core.db import MIGRATIONS_DIR, VERSION_TABLE, MetadataDB, _upgrade
from loopstack.schema import HEAD, METADATA


def test_head_constant_is_the_migration_head() -> None:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_migrations_from_empty_match_the_table_definitions(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.begin() as connection:
        _upgrade(connection, None)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, METADATA) if not _is_version_table(d)]
        assert differences == []
        assert connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar() == HEAD


def test_old_database_is_upgraded_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:  # a database at revision 0001
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    db = MetadataDB(url, METADATA, HEAD)
    db.ensure_schema()
    assert db.current_revision() == HEAD
    assert set(METADATA.tables) <= set(inspect(db.engine).get_table_names())


def test_unknown_newer_revision_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    from loopstack.core.errors import ConfigError

    url = f"sqlite:///{tmp_path / 'new.db'}"
    db = MetadataDB(url, METADATA, HEAD)
    db.ensure_schema()
    with db.write() as connection:
        connection.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(ConfigError, match="upgrade loopstack"):
        MetadataDB(url, METADATA, HEAD).ensure_schema()


def _is_version_table(difference: object) -> bool:
    return isinstance(difference, tuple) and getattr(difference[1], "name", "") == VERSION_TABLE
