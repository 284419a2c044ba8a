"""Fixtures for the registry tests: a project on each metadata backend, and small data.

`project` is parametrized over SQLite and PostgreSQL. PostgreSQL tests skip
when the local server cannot be reached, and fail instead when CI=true.
This local fixture stands in until tests/conftest.py provides a shared one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import loopstack as ls
from loopstack.registry import LoggedModel
from loopstack.tracking import fluent

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
QUIET = {"tracking": {"capture_environment": False, "capture_git": False}}


def _pg_connect():  # -> psycopg.Connection
    try:
        import psycopg

        return psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_SERVER} is unreachable under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {PG_SERVER} is unreachable: {exc}")


@contextmanager
def _open_project(backend: str, root: Path) -> Iterator[ls.Project]:
    settings: dict = dict(QUIET)
    schema = None
    if backend == "postgres":
        connection = _pg_connect()
        schema = f"registry_{uuid.uuid4().hex[:12]}"
        connection.execute(f'CREATE SCHEMA "{schema}"')
        connection.close()
        settings["metadata"] = f"{PG_SERVER}?options=-csearch_path%3D{schema}"
    project = ls.Project.init(root, name="registry-test", **settings)
    fluent.set_project(project)
    try:
        yield project
    finally:
        while fluent.active_run() is not None:
            fluent.end_run()
        project.close()
        if schema is not None:
            connection = _pg_connect()
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
            connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ls.Project]:
    """An empty project, its metadata in SQLite or in a fresh PostgreSQL schema."""
    with _open_project(request.param, tmp_path / "project") as opened:
        yield opened


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Iterator[ls.Project]:
    """An empty SQLite project, for tests whose subject does not touch the metadata backend."""
    with _open_project("sqlite", tmp_path / "project") as opened:
        yield opened


@pytest.fixture(scope="session")
def classification() -> tuple[pd.DataFrame, np.ndarray]:
    """200 rows, 4 float features and a binary label that depends on them."""
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=["age", "income", "balance", "score"])
    y = (X["age"] + 0.5 * X["income"] - X["score"] + rng.normal(scale=0.3, size=200) > 0).astype(int).to_numpy()
    return X, y


@pytest.fixture
def log_in_run() -> Callable[..., tuple[str, LoggedModel]]:
    """Log a model in a fresh finished run of a project; returns (run id, LoggedModel)."""

    def log(project: ls.Project, model: object, example: object = None, **kwargs: Any) -> tuple[str, LoggedModel]:
        with ls.start_run(project=project) as run:
            run.log_metric("auc", 0.91)
            logged = run.log_model(model, "model", example=example, **kwargs)
        return run.id, logged

    return log
