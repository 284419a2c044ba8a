"""A small cron parser: five fields, names, ranges, steps, macros, and the next fire time.

Semantics follow Vixie cron (what ``crontab(5)`` documents and croniter
implements): when both day-of-month and day-of-week are restricted (neither
starts with ``*``) a day matches if *either* does; 0 and 7 are Sunday.
Times are wall-clock times in the zone of the datetime passed in; a wall
time that does not exist (the hour skipped when clocks go forward) is
skipped, and an ambiguous one (the hour repeated when they go back) fires
once, at its first occurrence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from loopstack.core.errors import ConfigError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, lowest, highest, names) per field, in crontab order
_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_MAX_YEARS = 8  # a search past 8 years means "never" in practice (impossible dates are refused at parse)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression.

    Examples
    --------
    >>> import datetime as dt
    >>> cron = Cron.parse("*/15 9-17 * * MON-FRI")
    >>> cron.next_after(dt.datetime(2024, 3, 1, 17, 50))  # a Friday evening
    datetime.datetime(2024, 3, 4, 9, 0)
    >>> Cron.parse("@daily").next_after(dt.datetime(2024, 12, 31, 12, 0))
    datetime.datetime(2025, 1, 1, 0, 0)
    """

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Parse five space-separated fields or a macro such as ``@daily``."""
        text = MACROS.get(expression.strip().lower(), expression.strip())
        parts = text.split()
        if len(parts) != 5:
            raise ConfigError(
                f"cron expression {expression!r} has {len(parts)} fields; use five "
                "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *', or a macro "
                f"({', '.join(sorted(MACROS))})"
            )
        values = [_parse_field(part, spec, expression) for part, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if day == 7 else day for day in values[4])
        cron = cls(expression, *values[:4], weekdays, not parts[2].startswith("*"), not parts[4].startswith("*"))
        cron._check_possible()
        return cron

    def matches(self, when: dt.datetime) -> bool:
        """Whether the minute of `when` is a fire time."""
        return (
            when.minute in self.minutes
            and when.hour in self.hours
            and when.month in self.months
            and self._day_matches(when.date())
        )

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first fire time strictly after `when`, in `when`'s time zone."""
        zone = when.tzinfo
        wall = when.replace(tzinfo=None) if zone is not None else when
        candidate = wall.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        while True:
            candidate = self._next_wall(candidate)
            if zone is None:
                return candidate
            placed = _place(candidate, zone)
            # compare instants: two datetimes with the same tzinfo compare by wall time and ignore
            # `fold`, so from the repeated hour (fold=1) an earlier first-occurrence time looked later
            if placed is not None and placed.timestamp() > when.timestamp():
                return placed
            candidate += dt.timedelta(minutes=1)

    def _next_wall(self, start: dt.datetime) -> dt.datetime:
        """The first matching naive wall time at or after `start`."""
        t = start
        limit = start.year + _MAX_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1) + dt.timedelta(days=32)).replace(day=1, hour=0, minute=0)
            elif not self._day_matches(t.date()):
                t = (t + dt.timedelta(days=1)).replace(hour=0, minute=0)
            elif t.hour not in self.hours:
                t = (t + dt.timedelta(hours=1)).replace(minute=0)
            elif t.minute not in self.minutes:
                later = [m for m in self.minutes if m > t.minute]
                t = t.replace(minute=min(later)) if later else (t + dt.timedelta(hours=1)).replace(minute=0)
            else:
                return t
        raise ConfigError(f"cron expression {self.expression!r} has no fire time within {_MAX_YEARS} years")

    def _day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_month or in_week
        return in_month and in_week

    def _check_possible(self) -> None:
        if self.weekday_restricted and self.day_restricted:
            return
        if not any(day <= _DAYS_IN_MONTH[month - 1] for month in self.months for day in self.days):
            raise ConfigError(
                f"cron expression {self.expression!r} never fires: no selected month has day "
                f"{min(self.days)}; pick a day that exists (e.g. 'L' is not supported: use 28)"
            )


def _parse_field(text: str, spec: tuple[str, int, int, dict[str, int]], expression: str) -> frozenset[int]:
    name, low, high, names = spec
    values: set[int] = set()
    for item in text.split(","):
        values |= _parse_item(item, low, high, names, f"{name} field {text!r} of {expression!r}")
    return frozenset(values)


def _parse_item(item: str, low: int, high: int, names: dict[str, int], where: str) -> set[int]:
    body, _, step_text = item.partition("/")
    step = _number(step_text, names, where) if step_text else 1
    if step < 1:
        raise ConfigError(f"{where}: step {step_text!r} must be a positive integer")
    if body == "*":
        start, stop = low, high
    elif "-" in body:
        first, last = body.split("-", 1)
        start, stop = _number(first, names, where), _number(last, names, where)
    else:
        start = _number(body, names, where)
        stop = high if step_text else start  # "5/15" means every 15 from 5
    if not low <= start <= stop <= high:
        raise ConfigError(f"{where}: {item!r} is outside {low}-{high} or a reversed range; write low-high")
    return set(range(start, stop + 1, step))


def _number(text: str, names: dict[str, int], where: str) -> int:
    lowered = text.strip().lower()
    if lowered in names:
        return names[lowered]
    if not (lowered.isascii() and lowered.isdigit()):
        raise ConfigError(f"{where}: {text!r} is not a number{' or a name' if names else ''}")
    return int(lowered)


def _place(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime | None:
    """`wall` in `zone`, or None if that wall time is skipped there (a DST gap)."""
    placed = wall.replace(tzinfo=zone, fold=0)
    round_trip = placed.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
    return placed if round_trip == wall else None


__all__ = ["MACROS", "Cron"]
