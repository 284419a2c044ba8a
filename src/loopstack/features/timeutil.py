"""Time in the feature store: UTC instants as integer microseconds.

Naive datetimes are taken as UTC, aware ones are converted, so that a frame
built on a laptop in Berlin and a server in UTC select the same feature rows.
Microseconds are the resolution of DuckDB's TIMESTAMP; nanoseconds are
floored to them.

Examples
--------
>>> from datetime import datetime
>>> to_us(datetime(1970, 1, 1, 0, 0, 1))
1000000
>>> to_us("1970-01-01T01:00:00+01:00")
0
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from loopstack.core.errors import ValidationError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(value: Any) -> datetime:
    """An aware UTC datetime from a datetime, pandas Timestamp, ISO string or epoch seconds."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                f"cannot read {value!r} as a time; use ISO 8601, e.g. '2024-05-01T12:00:00'"
            ) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return EPOCH + timedelta(seconds=value)
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise ValidationError(f"cannot read {value!r} ({type(value).__name__}) as a time; pass a datetime")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_us(value: Any) -> int:
    """Microseconds since the epoch (UTC) for anything `to_datetime` reads."""
    delta = to_datetime(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(micros: int) -> datetime:
    """The aware UTC datetime of `micros` microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=micros)


def ttl_us(ttl: timedelta | None) -> int | None:
    """A ttl in microseconds, None meaning "never expires"."""
    if ttl is None:
        return None
    return (ttl.days * 86_400 + ttl.seconds) * 1_000_000 + ttl.microseconds


def sql_timestamp(micros: int) -> str:
    """A DuckDB TIMESTAMP literal (naive, UTC) for `micros`."""
    return f"make_timestamp({int(micros)}::BIGINT)"
