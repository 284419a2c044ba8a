"""A read transaction sees one snapshot, on both metadata backends, and writes nothing on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from tests.conftest import fresh_project

from loopstack.core.project import Project


def _count(connection) -> int:
    return connection.execute(text("SELECT count(*) FROM experiments")).scalar_one()


def test_a_read_transaction_does_not_see_a_commit_made_during_it(project: Project) -> None:
    """At PostgreSQL's READ COMMITTED, each statement of a read took its own snapshot."""
    with project.db.read() as connection:
        before = _count(connection)
        with project.db.write() as writer:
            writer.execute(text("INSERT INTO experiments (name, created_at) VALUES ('during-the-read', 0)"))
        assert _count(connection) == before
    with project.db.read() as connection:
        assert _count(connection) == before + 1


@pytest.mark.postgres
def test_a_postgres_read_transaction_is_read_only(postgres_url: str, tmp_path: Path) -> None:
    from sqlalchemy.exc import DBAPIError

    with (
        fresh_project(tmp_path / "proj", metadata=postgres_url) as project,
        pytest.raises(DBAPIError, match="read-only transaction"),
        project.db.read() as connection,
    ):
        connection.execute(text("INSERT INTO experiments (name, created_at) VALUES ('in-a-read', 0)"))
