"""Plain value objects returned by the tracking API."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from loopstack.core.errors import ValidationError

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
STATUSES = (RUNNING, FINISHED, FAILED, KILLED)
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-./: ]{0,249}\Z")


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    created_at: float


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    step: int
    timestamp: float


@dataclass(frozen=True)
class RunInfo:
    id: str
    experiment_id: int
    name: str
    status: str
    start_time: float
    end_time: float | None
    parent_id: str | None

    @property
    def duration_s(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.start_time


@dataclass(frozen=True)
class Run:
    """A run with what it logged: params and tags as text, the latest value of each metric."""

    info: RunInfo
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> str:
        return self.info.status


def validate_key(key: str, what: str = "key") -> str:
    """Keys become identifiers in filters and file names, so keep them plain."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValidationError(
            f"invalid {what} {key!r}: use 1-250 letters, digits, '_', '-', '.', '/', ':' or "
            "spaces, starting with a letter, digit or '_'"
        )
    return key


def check_storable(text: str, what: str) -> str:
    """Refuse text the metadata database cannot store, naming the character and its position: PostgreSQL
    text holds no NUL, and no backend encodes a lone surrogate (os.fsdecode makes them from undecodable file
    names); the driver's own error names neither."""
    if not text.isascii() or "\x00" in text:
        bad = next((i for i, ch in enumerate(text) if ch == "\x00" or "\ud800" <= ch <= "\udfff"), None)
        if bad is not None:
            raise ValidationError(
                f"{what} has {text[bad]!r} at position {bad}, which the metadata database cannot store; "
                "remove it, or for a file name decode its bytes with errors='replace'"
            )
    return text


def validate_status(status: str) -> str:
    if status not in STATUSES:
        raise ValidationError(f"invalid run status {status!r}; use one of {', '.join(STATUSES)}")
    return status
