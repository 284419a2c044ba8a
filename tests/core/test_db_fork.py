"""A forked child opens its own connections to the metadata database and leaves its parent's alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopstack.core.db import MetadataDB, normalize_url
from loopstack.schema import HEAD, METADATA

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataDB]:
    url = "sqlite:///m.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened = MetadataDB(normalize_url(url, tmp_path), METADATA, HEAD)
    opened.ensure_schema()
    yield opened
    opened.dispose()


def _session(db: MetadataDB) -> tuple[object, object]:
    """The driver connection a read gets from the pool, and the server's id for its session."""
    with db.read() as connection:
        server_id = "SELECT pg_backend_pid()" if db.dialect == "postgresql" else "SELECT NULL"
        return connection.connection.driver_connection, connection.exec_driver_sql(server_id).scalar()


def test_a_forked_child_does_not_use_its_parents_pooled_connections(db: MetadataDB) -> None:
    """The child used to check out the parent's pooled connection: two processes on one socket."""
    parents, parent_session = _session(db)  # back in the pool, ready for reuse
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            own, session = _session(db)
            os.write(write, repr((own is not parents, session != parent_session or session is None)).encode())
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 64) == b"(True, True)"
    assert _session(db) == (parents, parent_session)  # the parent's session is still open and still its own
