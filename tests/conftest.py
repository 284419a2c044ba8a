"""Shared fixtures: a project on each metadata backend, and service reachability.

Tests that need a service skip with a reason when it is unreachable on a
developer's machine, and fail when CI=true, where the services must be up.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from loopstack.core.project import Project

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
POSTGRES_ADMIN_URL = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"


def cli_fails(command: Any, *args: Any, code: int = 1, obj: dict[str, Any] | None = None) -> str:
    """Run a click command expected to fail with exit `code`: for 1, the LoopstackError's one-line message
    (the `loopstack` entry point prints it, never a traceback); otherwise click's output."""
    from click.testing import CliRunner

    from loopstack.core.errors import LoopstackError

    result = CliRunner().invoke(command, [str(a) for a in args], obj=obj)
    assert result.exit_code == code, result.output
    if code == 1:
        assert isinstance(result.exception, LoopstackError), repr(result.exception)
        return str(result.exception)
    return result.output


def service_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or fail on CI) when a service is unreachable."""
    if service_up(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must provide it (see .ci/run)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A metadata URL pointing at a fresh schema in the local PostgreSQL `test` database."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    from sqlalchemy import create_engine, text

    schema = f"ls_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A fresh project on SQLite and on PostgreSQL: the metadata contract suite runs on both."""
    settings = {}
    if request.param == "postgres":
        settings["metadata"] = request.getfixturevalue("postgres_url")
    yield from _fresh_project(tmp_path, settings)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Iterator[Project]:
    """A fresh project on the embedded default only."""
    yield from _fresh_project(tmp_path, {})


def _fresh_project(tmp_path: Path, settings: dict[str, str]) -> Iterator[Project]:
    with fresh_project(tmp_path / "proj", **settings) as opened:
        yield opened


@contextmanager
def fresh_project(root: Path, **settings: str) -> Iterator[Project]:
    """Open a project at `root`; afterwards end any run a test left active and close it."""
    from loopstack.tracking import fluent

    opened = Project.init(root, name="test-project", **settings)
    try:
        yield opened
    finally:
        while fluent.active_run() is not None:
            fluent.end_run()
        opened.close()
