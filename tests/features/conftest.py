"""Fixtures: a fresh project per test, and small generated feature tables."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from loopstack.core.project import Project

T0 = datetime(2024, 1, 1)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    opened = Project.init(tmp_path / "proj", name="feat")
    yield opened
    opened.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The local Redis with a prefix unique to the calling test, or a skip (a failure under CI=true).

    Every key under the prefix is deleted afterwards.
    """
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail("Redis on 127.0.0.1:6379 is unreachable and CI=true")
        pytest.skip("Redis on 127.0.0.1:6379 is unreachable")
    prefix = f"lstest:{uuid.uuid4().hex}:"
    yield f"redis://127.0.0.1:6379/0?prefix={prefix}"
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(match=f"lstest:{prefix.split(':')[1]}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def driver_rows() -> Callable[..., pa.Table]:
    return make_driver_rows


def make_driver_rows(n_drivers: int = 3, days: int = 5) -> pa.Table:
    """Daily rows per driver: conv_rate = driver + day/10, trips = driver*100 + day."""
    drivers, times, conv, trips = [], [], [], []
    for driver in range(1, n_drivers + 1):
        for day in range(days):
            drivers.append(driver)
            times.append(T0 + timedelta(days=day))
            conv.append(driver + day / 10)
            trips.append(driver * 100 + day)
    return pa.table({"driver_id": drivers, "event_timestamp": pa.array(times, pa.timestamp("us")),
                     "conv_rate": conv, "trips": pa.array(trips, pa.int64())})
