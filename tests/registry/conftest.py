"""Fixtures for the registry tests: small data and a helper that logs a model in a run.

The `project` fixture (SQLite and PostgreSQL) and `sqlite_project` come from
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import loopstack as ls
from loopstack.registry import LoggedModel


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
