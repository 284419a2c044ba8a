"""A PostgreSQL server that cannot be reached is a BackendUnavailableError naming it, in reads and writes,
with the server's reason and where the URL came from; a statement's own error stays what it was."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, fresh_project, require_service

from loopstack.core.db import MetadataDB, normalize_url
from loopstack.core.errors import BackendUnavailableError
from loopstack.core.project import Project

NOWHERE = "postgresql://postgres:secret@127.0.0.1:1/test"  # nothing listens on port 1


def _nowhere(tmp_path: Path) -> MetadataDB:
    return MetadataDB(normalize_url(NOWHERE, tmp_path), lambda: None, "head")  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("transaction", ["read", "write"])
def test_reads_and_writes_on_an_unreachable_server_name_it_without_the_password(
    tmp_path: Path, transaction: str
) -> None:
    db = _nowhere(tmp_path)
    with pytest.raises(BackendUnavailableError) as raised, getattr(db, transaction)() as connection:
        connection.execute(text("SELECT 1"))
    message = str(raised.value)
    assert "cannot reach the metadata database postgresql+psycopg://postgres:***@127.0.0.1:1/test" in message
    assert "secret" not in message and "refused" in message.lower() and "from loopstack.yaml" in message
    db.dispose()


@pytest.mark.postgres
def test_a_database_that_does_not_exist_is_named_with_where_the_url_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    missing = f"nosuch_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{missing}"
    with pytest.raises(BackendUnavailableError, match=rf'database "{missing}" does not exist.*loopstack.yaml'):
        Project.init(tmp_path / "a", name="a", metadata=url)
    monkeypatch.setenv("LOOPSTACK_METADATA", url)
    with pytest.raises(BackendUnavailableError, match=rf'database "{missing}" does not exist.*LOOPSTACK_METADATA'):
        Project.init(tmp_path / "b", name="b")


@pytest.mark.postgres
def test_a_statement_error_on_a_reachable_server_is_not_called_unavailable(postgres_url: str, tmp_path: Path) -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    with fresh_project(tmp_path / "proj", metadata=postgres_url) as project:
        with pytest.raises(OperationalError, match="statement timeout"), project.db.write() as connection:
            connection.execute(text("SET LOCAL statement_timeout = 1; SELECT pg_sleep(1)"))
        with pytest.raises(IntegrityError), project.db.write() as connection:
            connection.execute(text("INSERT INTO experiments (name, created_at) VALUES (NULL, 0)"))
