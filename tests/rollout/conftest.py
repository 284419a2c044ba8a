"""Shared helpers for deployment tests: registered model versions and in-memory stand-ins for them."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import loopstack as ls
from loopstack.core.project import Project


def register(project: Project, name: str = "m", count: int = 3) -> list[str]:
    """Register `count` tiny versions of model `name`; returns their refs."""
    from sklearn.dummy import DummyRegressor

    refs = []
    for k in range(count):
        model = DummyRegressor(strategy="constant", constant=float(k + 1)).fit(np.zeros((2, 3)), [0.0, 1.0])
        with ls.start_run(project=project) as run:
            run.log_model(model, "model", example=np.zeros((2, 3)))
        version = ls.register_model(run.id, "model", name=name, project=project)
        refs.append(f"{name}/{version.version}")
    return refs


class Stub:
    """A served stand-in: answers ``offset + sum(row)``, fails a share of requests, may sleep."""

    n_features_in_ = 3

    def __init__(self, offset: float = 0.0, error_rate: float = 0.0, seed: int = 0, delay_s: float = 0.0,
                 version: int = 1) -> None:
        self.offset, self.error_rate, self.delay_s, self.version = offset, error_rate, delay_s, version
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.rows = 0  # rows predicted (the batcher may merge single-row requests into one call)

    def predict(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        with self._lock:
            self.rows += len(X)
            fail = self._rng.random() < self.error_rate
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        if fail:
            raise RuntimeError("stub failure")
        return X.sum(axis=1) + self.offset


@pytest.fixture
def refs(project: Project) -> list[str]:
    return register(project)
