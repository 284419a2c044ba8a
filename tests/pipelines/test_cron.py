"""The cron parser against known cases, crontab(5) semantics and croniter."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.core.errors import ConfigError
from loopstack.pipelines.cron import Cron

UTC = dt.UTC


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        ("* * * * *", "2024-01-01 00:00:30", "2024-01-01 00:01"),
        ("0 3 * * *", "2024-01-01 03:00", "2024-01-02 03:00"),  # strictly after
        ("*/15 * * * *", "2024-01-01 10:46", "2024-01-01 11:00"),
        ("5/20 * * * *", "2024-01-01 10:46", "2024-01-01 11:05"),
        ("0 9-17/4 * * *", "2024-01-01 13:00", "2024-01-01 17:00"),
        ("30 8 * * mon-fri", "2024-03-01 09:00", "2024-03-04 08:30"),  # Friday -> Monday
        ("0 0 29 2 *", "2023-03-01 00:00", "2024-02-29 00:00"),  # leap day
        ("0 0 31 * *", "2024-04-01 00:00", "2024-05-31 00:00"),  # April has no 31st
        ("0 0 1,15 * 3", "2024-05-02 00:00", "2024-05-08 00:00"),  # dom OR dow: the Wednesday first
        ("0 0 * * 7", "2024-05-01 00:00", "2024-05-05 00:00"),  # 7 is Sunday
        ("0 0 */1 * 0", "2000-01-01 00:00", "2000-01-02 00:00"),  # "*/1" starts with *: AND, as in Vixie cron
        ("0 12 * jan,jul *", "2024-02-01 00:00", "2024-07-01 12:00"),
        ("@hourly", "2024-12-31 23:59", "2025-01-01 00:00"),
        ("@weekly", "2024-05-01 00:00", "2024-05-05 00:00"),
        ("@yearly", "2024-05-01 00:00", "2025-01-01 00:00"),
    ],
)
def test_known_next_fire_times(expression: str, start: str, expected: str) -> None:
    fire = Cron.parse(expression).next_after(dt.datetime.fromisoformat(start))
    assert fire == dt.datetime.fromisoformat(expected)


@pytest.mark.parametrize(
    "expression",
    ["* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "5-1 * * * *", "*/0 * * * *",
     "x * * * *", "0 0 30 2 *", "@reboot"],
)
def test_bad_expressions_are_config_errors(expression: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(expression))):  # the message names the expression
        Cron.parse(expression)


def test_spring_forward_gap_is_skipped_and_fall_back_fires_once() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2024-03-31 02:30 does not exist in Berlin: the next 02:30 is on April 1st
    fire = Cron.parse("30 2 * * *").next_after(dt.datetime(2024, 3, 30, 3, 0, tzinfo=berlin))
    assert fire.replace(tzinfo=None) == dt.datetime(2024, 4, 1, 2, 30)
    # 2024-10-27 02:30 happens twice; it fires at the first, then the next day
    first = Cron.parse("30 2 * * *").next_after(dt.datetime(2024, 10, 27, 0, 0, tzinfo=berlin))
    second = Cron.parse("30 2 * * *").next_after(first)
    assert first.utcoffset() == dt.timedelta(hours=2)
    assert (second - first).total_seconds() > 23 * 3600


def _field(low: int, high: int, star_steps: bool = True) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    single = number.map(str)
    # a-a ranges are left out: croniter reads a one-value weekday range such as 1-1 as "every day"
    ranged = st.tuples(number, number).filter(lambda ab: ab[0] != ab[1]).map(lambda ab: f"{min(ab)}-{max(ab)}")
    bases = ["*", f"{low}-{high}"] if star_steps else [f"{low}-{high}"]
    stepped = st.tuples(st.sampled_from(bases), st.integers(1, 7)).map(lambda p: f"{p[0]}/{p[1]}")
    item = st.one_of(single, ranged, stepped)
    return st.one_of(st.just("*"), st.lists(item, min_size=1, max_size=3).map(",".join))


@settings(max_examples=150, deadline=None)
@given(
    # no */n in the day fields: Vixie cron (and we) read "*/2" there as unrestricted for the
    # day-of-month OR day-of-week rule, croniter as restricted; a case below pins ours
    minute=_field(0, 59),
    hour=_field(0, 23),
    day=_field(1, 28, star_steps=False),
    month=_field(1, 12),
    weekday=_field(0, 6, star_steps=False),
    start=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2035, 1, 1)),
)
def test_agrees_with_croniter(minute: str, hour: str, day: str, month: str, weekday: str, start: dt.datetime) -> None:
    croniter = pytest.importorskip("croniter").croniter
    expression = f"{minute} {hour} {day} {month} {weekday}"
    ours = Cron.parse(expression).next_after(start.replace(tzinfo=UTC))
    theirs = croniter(expression, start.replace(tzinfo=UTC)).get_next(dt.datetime)
    assert ours == theirs, expression


def test_from_the_repeated_hour_the_next_fire_is_later_in_time() -> None:
    new_york = ZoneInfo("America/New_York")
    # 01:10 EST on 2024-11-03 is the second 01:10 (fold=1); 01:30 EDT already passed an hour ago
    when = dt.datetime(2024, 11, 3, 1, 10, fold=1, tzinfo=new_york)
    for expression in ("30 1 * * *", "*/15 * * * *"):
        fire = Cron.parse(expression).next_after(when)
        assert fire.timestamp() > when.timestamp(), expression


def test_a_schedule_started_in_the_repeated_hour_does_not_fire_for_the_past() -> None:
    from loopstack.pipelines.triggers import Schedule

    started = dt.datetime(2024, 11, 3, 6, 10, tzinfo=UTC).timestamp()  # 01:10 EST, after 01:30 EDT
    assert Schedule("30 1 * * *", "America/New_York").due(started, started + 600) is None


def test_non_ascii_digits_are_config_errors() -> None:
    for expression in ("² * * * *", "٣ * * * *"):
        with pytest.raises(ConfigError):
            Cron.parse(expression)
