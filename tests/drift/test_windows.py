"""Count, time and sliding windows."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.drift import CountWindow, SlidingWindow, TimeWindow


def test_count_and_sliding_windows_cover_rows() -> None:
    rows = {"x": list(range(10))}
    assert [w.rows.column("x").to_pylist() for w in CountWindow(4).split(rows)][-1] == [8, 9]
    sliding = list(SlidingWindow(4, 3).split(rows))
    assert [(w.start, w.end) for w in sliding] == [(0, 4), (3, 7), (6, 10)]
    with pytest.raises(ConfigError):
        SlidingWindow(0, 1)


def test_time_windows_sort_align_and_read_timestamps() -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    times = [start + dt.timedelta(minutes=m) for m in (61, 5, 0, 130)]
    table = pa.table({"ts": pa.array(times, pa.timestamp("us", tz="UTC")), "x": [3, 2, 1, 4]})
    windows = list(TimeWindow(dt.timedelta(hours=1), "ts").split(table))
    assert [w.rows.column("x").to_pylist() for w in windows] == [[1, 2], [3], [4]]
    assert windows[0].start == start.timestamp()
    sliding = list(SlidingWindow(7200, 3600, column="ts").split(table))
    assert [w.size for w in sliding] == [3, 2, 1]
    with pytest.raises(ValidationError, match="time column"):
        list(TimeWindow(60, "missing").split(table))
