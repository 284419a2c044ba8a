"""Shared helpers: a trained classifier, a slow model, and a real uvicorn server on a random port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest


@contextmanager
def running(app: Any, **config: Any) -> Iterator[str]:
    """Serve `app` with uvicorn, configured as `loopstack serve` does (and `config`), on 127.0.0.1 and a free
    port; always shut down. Yields "host:port"."""
    import uvicorn

    from loopstack.serving.server import uvicorn_config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, **{"log_level": "error", **config}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class SlowModel:
    """Sums each row, after sleeping: makes queues, batches and swaps observable."""

    n_features_in_ = 3

    def __init__(self, delay_s: float = 0.05, offset: float = 0.0, version: int = 1) -> None:
        self.delay_s, self.offset, self.version = delay_s, offset, version
        self.batches: list[int] = []

    def predict(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        self.batches.append(len(X))
        time.sleep(self.delay_s)
        if np.isnan(X).any():
            raise ValueError("NaN input")
        return X.sum(axis=1) + self.offset


@pytest.fixture(scope="session")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 20))
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(int)
    return X, y


@pytest.fixture(scope="session")
def clf(data: tuple[np.ndarray, np.ndarray]) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # a busy 2-core machine: OpenMP spinning would slow training 100x
        return HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(*data)
