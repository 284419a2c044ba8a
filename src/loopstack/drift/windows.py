"""Windows over logged rows: tumbling by count, tumbling by time, and sliding.

A window object cuts a table into consecutive (or overlapping) pieces and
yields each with its bounds, so that drift and performance can be computed
per window. Time windows read a timestamp column (Arrow timestamps or epoch
seconds), sort by it, and align to multiples of the window length since the
epoch so that two runs over the same log produce the same windows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.drift.data import as_table


@dataclass(frozen=True)
class WindowSlice:
    """One window: its bounds (row positions or epoch seconds) and its rows."""

    start: float
    end: float
    rows: Any  # an Arrow table

    @property
    def size(self) -> int:
        """Rows in the window."""
        return int(self.rows.num_rows)


@dataclass(frozen=True)
class CountWindow:
    """Consecutive windows of `size` rows; a short last window is kept.

    Examples
    --------
    >>> [w.size for w in CountWindow(4).split({"x": list(range(10))})]
    [4, 4, 2]
    """

    size: int

    def __post_init__(self) -> None:
        SlidingWindow(self.size, self.size, partial=True)  # checks the size now, not at the first split

    def split(self, data: Any) -> Iterator[WindowSlice]:
        """Yield the windows of `data` in order."""
        yield from SlidingWindow(self.size, self.size, partial=True).split(data)


@dataclass(frozen=True)
class SlidingWindow:
    """Windows of `size` that advance by `step` (rows, or seconds when `column` is set).

    Time windows start at multiples of `step` from the epoch, shifted by `offset` seconds: daily
    windows end at UTC midnight unless ``offset=-3600`` (CET's midnight, say) moves them.

    Examples
    --------
    >>> [(w.start, w.end) for w in SlidingWindow(4, 2).split({"x": list(range(8))})]
    [(0, 4), (2, 6), (4, 8)]
    """

    size: float
    step: float
    column: str | None = None
    partial: bool = False
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not (self.size > 0 and self.step > 0 and math.isfinite(self.size) and math.isfinite(self.step)):
            raise ConfigError(f"window size={self.size} and step={self.step} must be positive and finite")
        if self.column is None and not (_whole(self.size) and _whole(self.step)):
            # a step of 0.5 rows advanced by int(0.5) == 0 and yielded the same window forever
            raise ConfigError(f"row windows count whole rows: size={self.size} and step={self.step} must be "
                              "integers >= 1 (or pass column= for windows in seconds)")
        if self.offset and self.column is None:
            raise ConfigError(f"offset={self.offset} shifts time windows; row windows (no column) have none")

    def split(self, data: Any) -> Iterator[WindowSlice]:
        """Yield the windows of `data` in order."""
        table = as_table(data)
        if self.column is None:
            n = table.num_rows
            start = 0
            while start < n and (self.partial or start + self.size <= n):
                end = int(min(start + self.size, n))
                yield WindowSlice(start, end, table.slice(start, end - start))
                start += int(self.step)
            return
        table, times = _by_time(table, self.column)
        if not times.size:
            return
        start = np.floor((times[0] - self.offset) / self.step) * self.step + self.offset
        if start + self.step == start or start + self.size == start:
            # too short to move a float this far from the epoch: the walk would never advance
            raise ConfigError(f"window size={self.size} and step={self.step} s are below the resolution of times "
                              f"near {times[0]:.0f} s since the epoch; use windows of a microsecond or more")
        while start <= times[-1]:
            lo, hi = np.searchsorted(times, [start, start + self.size], side="left")
            if hi > lo:
                yield WindowSlice(float(start), float(start + self.size), table.slice(lo, hi - lo))
            start = max(start + self.step, self._first_start_holding(times[lo]) if lo < times.size else start)

    def _first_start_holding(self, time: float) -> float:
        """The earliest aligned window start whose window holds `time`: empty windows are jumped, not walked
        (one stray row at epoch 0 made 10-minute windows over today's log walk 2.8 million of them)."""
        return float((np.floor((time - self.size - self.offset) / self.step) + 1) * self.step + self.offset)


@dataclass(frozen=True)
class TimeWindow:
    """Consecutive windows of `every` seconds (or a timedelta) on the `column` timestamps.

    They start at multiples of `every` from the epoch (UTC midnight for days), shifted by `offset`
    (seconds or a timedelta): the offset is where a window starts past UTC's midnight, so
    ``TimeWindow(timedelta(days=1), "ts", offset=timedelta(hours=5))`` cuts days at midnight in New
    York (EST, UTC-5, is 05:00 UTC; a fixed shift, so summer time is not followed).

    Examples
    --------
    >>> rows = {"ts": [0.0, 30.0, 61.0, 200.0], "x": [1, 2, 3, 4]}
    >>> [(w.start, w.size) for w in TimeWindow(60, "ts").split(rows)]
    [(0.0, 2), (60.0, 1), (180.0, 1)]
    >>> [(w.start, w.size) for w in TimeWindow(60, "ts", offset=15).split(rows)]
    [(-45.0, 1), (15.0, 2), (195.0, 1)]
    """

    every: float | dt.timedelta
    column: str = "timestamp"
    offset: float | dt.timedelta = 0.0

    def split(self, data: Any) -> Iterator[WindowSlice]:
        """Yield the non-empty windows of `data` in time order."""
        seconds = self.every.total_seconds() if isinstance(self.every, dt.timedelta) else float(self.every)
        offset = self.offset.total_seconds() if isinstance(self.offset, dt.timedelta) else float(self.offset)
        yield from SlidingWindow(seconds, seconds, column=self.column, offset=offset).split(data)


def _by_time(table: Any, column: str) -> tuple[Any, np.ndarray]:
    """The table sorted by `column`, and that column as epoch seconds."""
    import pyarrow as pa

    if column not in table.column_names:
        raise ValidationError(f"time column {column!r} is not in the data; columns: {table.column_names}")
    values = table.column(column)
    if pa.types.is_timestamp(values.type):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[values.type.unit]
        seconds = values.cast(pa.int64()).to_numpy().astype(np.float64) / per_second
    elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        seconds = values.to_numpy().astype(np.float64)
    else:
        raise ValidationError(f"time column {column!r} has type {values.type}; use timestamps or epoch seconds")
    missing = int((~np.isfinite(seconds)).sum())
    if missing:  # NaN sorts last and ended the window walk at once; an infinite time made it walk forever
        raise ValidationError(
            f"time column {column!r} has {missing} missing value(s) (NaN, null or infinite); drop or fill those rows"
        )
    order = np.argsort(seconds, kind="stable")
    if np.any(order != np.arange(order.size)):
        table, seconds = table.take(order), seconds[order]
    return table, seconds


def _whole(value: float) -> bool:
    return float(value).is_integer() and value >= 1
