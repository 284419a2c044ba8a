"""Count, time and sliding windows."""

from __future__ import annotations

import datetime as dt
import time

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


def test_time_windows_jump_over_long_gaps() -> None:
    # one stray row at epoch 0 made the walk visit every empty window up to today (minutes of Python)
    rows = {"ts": [0.0, 7.0, 1.7e9, 1.7e9 + 3.0], "x": [1, 2, 3, 4]}
    started = time.monotonic()
    assert [(w.start, w.size) for w in TimeWindow(60, "ts").split(rows)] == [(0.0, 2), (1.7e9 - 20.0, 2)]
    assert time.monotonic() - started < 1.0
    sliding = [(w.start, w.size) for w in SlidingWindow(10, 5, column="ts").split({"ts": [3.0, 12.0, 1000.0]})]
    assert sliding == [(0.0, 1), (5.0, 1), (10.0, 1), (995.0, 1), (1000.0, 1)]


@pytest.mark.parametrize("times", [[0.0, float("nan"), 30.0], pa.array([0, None, 30], pa.timestamp("s"))])
def test_missing_times_are_refused_not_dropped(times: object) -> None:
    # NaN sorted last and ended the walk at once: no window at all, without a word
    with pytest.raises(ValidationError, match="1 missing value"):
        list(TimeWindow(60, "ts").split(pa.table({"ts": times, "x": [1, 2, 3]})))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("window", [TimeWindow(60, "ts"), SlidingWindow(60, 30, column="ts")])
@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_infinite_times_are_refused_not_walked_forever(window: object, bad: float) -> None:
    # an infinite time kept the window walk going forever: the split never returned
    with pytest.raises(ValidationError, match="1 missing value"):
        list(window.split({"ts": [0.0, 30.0, 61.0, bad], "x": [1, 2, 3, 4]}))


def test_day_windows_can_end_at_a_local_midnight() -> None:
    # days were cut at UTC midnight only: a CET team's "Monday" mixed in Sunday's last hour
    cet = dt.timezone(dt.timedelta(hours=1))
    local = [dt.datetime(2024, 1, 1, 0, 30, tzinfo=cet), dt.datetime(2024, 1, 1, 23, 30, tzinfo=cet),
             dt.datetime(2024, 1, 2, 0, 30, tzinfo=cet)]
    table = pa.table({"ts": pa.array(local, pa.timestamp("us", tz="UTC")), "x": [1, 2, 3]})
    utc_days = [w.rows.column("x").to_pylist() for w in TimeWindow(dt.timedelta(days=1), "ts").split(table)]
    assert utc_days == [[1], [2, 3]]  # 00:30 CET is still the previous day in UTC
    cet_days = list(TimeWindow(dt.timedelta(days=1), "ts", offset=dt.timedelta(hours=-1)).split(table))
    assert [w.rows.column("x").to_pylist() for w in cet_days] == [[1, 2], [3]]
    assert cet_days[0].start == dt.datetime(2024, 1, 1, tzinfo=cet).timestamp()
    far = {"ts": [0.0, 1.7e9], "x": [1, 2]}  # the jump over empty windows keeps the shift
    assert [w.start for w in TimeWindow(86400, "ts", offset=-3600).split(far)] == [
        -3600.0, (1.7e9 + 3600) // 86400 * 86400 - 3600]
    with pytest.raises(ConfigError, match="row windows"):
        SlidingWindow(4, 2, offset=5)


def test_the_docstrings_new_york_offset_cuts_days_at_new_yorks_midnight() -> None:
    # the docstring said hours=-5, which cut New York's days at 14:00 local time
    new_york = dt.timezone(dt.timedelta(hours=-5))  # EST
    local = [dt.datetime(2026, 1, 15, hour, tzinfo=new_york) for hour in (1, 12, 23)]
    rows = {"ts": [t.timestamp() for t in local], "x": [1, 2, 3]}
    days = list(TimeWindow(dt.timedelta(days=1), "ts", offset=dt.timedelta(hours=5)).split(rows))
    assert [(dt.datetime.fromtimestamp(w.start, new_york).hour, w.size) for w in days] == [(0, 3)]


@pytest.mark.parametrize(
    "make",
    [lambda: SlidingWindow(4, 0.5), lambda: SlidingWindow(0.5, 1), lambda: CountWindow(0.5),
     lambda: SlidingWindow(4, float("inf"))],
)
def test_row_windows_of_fractional_rows_are_refused(make) -> None:
    # a step of 0.5 rows advanced by int(0.5) == 0: the same window, forever
    with pytest.raises(ConfigError, match=r"size=.*step="):
        make()


def test_time_windows_below_the_times_resolution_are_refused_not_walked_forever() -> None:
    with pytest.raises(ConfigError, match="below the resolution"):
        list(TimeWindow(1e-7, "ts").split({"ts": [1.7e9, 1.7e9 + 1], "x": [1, 2]}))
