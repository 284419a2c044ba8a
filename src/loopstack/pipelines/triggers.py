"""Triggers: when a loop policy fires. A cron schedule, or matching events in the event log.

Signals are read from the one ``events`` table, where monitors, quality
suites and the feature store already write, so a trigger is just a matcher:
an event kind (or a family ending in '.'), an optional subject and optional
conditions on the payload. The engine keeps a persisted cursor per trigger,
so each event is seen once, across restarts. The helpers at the bottom name
the signals the loop cares about.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from loopstack.core.errors import ConfigError
from loopstack.core.events import Event
from loopstack.pipelines.cron import Cron

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
_MISSING = object()


@dataclass(frozen=True)
class Schedule:
    """Fire on a cron schedule; a time missed while the scheduler was down fires once on restart.

    Examples
    --------
    >>> import datetime as dt
    >>> nightly = Schedule("0 3 * * *")
    >>> start = dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.timezone.utc).timestamp()
    >>> due = nightly.due(start, start + 2 * 3600)  # two hours later: 03:00 has passed
    >>> dt.datetime.fromtimestamp(due, dt.timezone.utc).hour
    3
    >>> nightly.due(due, due + 60) is None  # already fired for 03:00
    True
    """

    cron: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        Cron.parse(self.cron)  # fail at declaration, not at 3 a.m.
        try:
            ZoneInfo(self.timezone)
        except Exception:
            raise ConfigError(f"unknown time zone {self.timezone!r}; use an IANA name like 'Europe/Berlin'") from None

    @property
    def key(self) -> str:
        return f"schedule:{self.cron}@{self.timezone}"

    def due(self, last_fire: float, now: float) -> float | None:
        """The latest fire time in (last_fire, now], or None: missed times collapse into one."""
        cron, zone = Cron.parse(self.cron), ZoneInfo(self.timezone)
        fire = cron.next_after(dt.datetime.fromtimestamp(last_fire, zone))
        if fire.timestamp() > now:
            return None
        while True:
            following = cron.next_after(fire)
            if following.timestamp() > now:
                return fire.timestamp()
            fire = following

    def describe(self) -> str:
        return f"schedule {self.cron!r} ({self.timezone})"


@dataclass(frozen=True)
class OnEvent:
    """Fire on events of a kind (``'drift.detected'``, or a family like ``'drift.'``).

    Parameters
    ----------
    kind
        The event kind, or a prefix ending in '.'.
    subject
        Only events about this subject (a monitor, suite, feature view...).
    where
        Conditions on the payload: ``{"share": (">", 0.3), "passed": False}``;
        a key may be a dotted path into nested payloads (``"metrics.auc"``).
    predicate
        A Python function of the `Event`, for conditions ``where`` cannot say.
    name
        A label for the trigger; with the kind, subject and conditions, its persisted identity (`key`).
        Needed to tell apart two triggers of one policy that differ only by predicate.
    from_start
        Consider events older than the policy's first start too.

    Examples
    --------
    >>> from loopstack.core.events import Event
    >>> trigger = OnEvent("drift.checked", where={"share": (">", 0.3)})
    >>> trigger.matches(Event(1, 0.0, "drift.checked", "m", {"share": 0.5}, None))
    True
    >>> trigger.matches(Event(2, 0.0, "drift.checked", "m", {"share": 0.1}, None))
    False
    """

    kind: str
    subject: str | None = None
    where: Mapping[str, Any] = field(default_factory=dict)
    predicate: Callable[[Event], bool] | None = None
    name: str | None = None
    from_start: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.from_start, bool):  # YAML "false" (quoted) is truthy: every old event would fire
            raise ConfigError(f"trigger {self.kind!r}: from_start={self.from_start!r} must be true or false (unquoted)")
        if self.predicate is not None and not callable(self.predicate):  # else a TypeError in the loop's tick
            raise ConfigError(
                f"trigger {self.kind!r}: predicate={self.predicate!r} is not callable; pass a function of the Event"
            )
        for path, condition in self.where.items():
            if isinstance(condition, tuple | list) and (len(condition) != 2 or condition[0] not in _OPERATORS):
                raise ConfigError(
                    f"trigger condition {path}: {condition!r} must be a value or (operator, value) with "
                    f"an operator in {sorted(_OPERATORS)}"
                )

    @property
    def key(self) -> str:
        """The trigger's persisted identity: its cursor is stored under it.

        The kind counts even when a name is given, so ``performance_below(..., kind=...)`` twice keeps two
        cursors. A predicate cannot be keyed (its code changes on every edit): two triggers that differ only by
        predicate are told apart by ``name=``, and `Policy` refuses them without one.
        """
        conditions = json.dumps(dict(self.where), sort_keys=True, default=str)
        digest = hashlib.sha256(conditions.encode()).hexdigest()[:12] if self.where else "all"
        label = f"{self.name}@{self.kind}" if self.name else self.kind
        return f"event:{label}:{self.subject or '*'}:{digest}"

    @property
    def legacy_key(self) -> str:
        """The key's form before the kind was part of it: a cursor saved under it is taken over, so an upgrade
        skips no event that arrived while the loop was down."""
        return f"event:{self.name or self.kind}:{self.subject or '*'}:{self.key.rsplit(':', 1)[1]}"

    def matches(self, event: Event) -> bool:
        """Whether `event` is a signal for this trigger."""
        if self.kind.endswith(".") and not event.kind.startswith(self.kind):
            return False
        if not self.kind.endswith(".") and event.kind != self.kind:
            return False
        if self.subject is not None and event.subject != self.subject:
            return False
        for path, condition in self.where.items():
            if not _holds(_lookup(event.payload, path), condition):
                return False
        return self.predicate is None or bool(self.predicate(event))

    def describe(self) -> str:
        about = f" about {self.subject!r}" if self.subject else ""
        conditions = f" where {dict(self.where)}" if self.where else ""
        return f"event {self.kind!r}{about}{conditions}"


Trigger = Schedule | OnEvent


def _lookup(payload: Any, path: str) -> Any:
    value = payload
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _holds(value: Any, condition: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(condition, tuple | list):
        op, expected = condition
        try:
            return bool(_OPERATORS[op](value, expected))
        except TypeError:  # e.g. None > 0.3: a payload without a number is not a signal
            return False
    return bool(value == condition)


# -- the signals the loop reacts to ----------------------------------------------------------
def _number(helper: str, name: str, value: Any) -> Any:
    """A threshold must be a number: ``"0.3"`` (quoted in YAML) compared with a payload's float never holds,
    and the trigger would silently never fire."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{helper}: {name}={value!r} must be a number (unquoted), not {type(value).__name__}")
    return value


def drift_detected(monitor: str | None = None, share_above: float | None = None) -> OnEvent:
    """Drift from a `loopstack.drift.Monitor`: its data-set verdict, or a share of drifted columns above x."""
    if share_above is None:
        return OnEvent("drift.detected", subject=monitor, name="drift")
    _number("drift_detected", "share_above", share_above)
    return OnEvent("drift.checked", subject=monitor, where={"share": (">", share_above)}, name="drift")


def performance_below(
    metric: str, threshold: float, subject: str | None = None, kind: str = "performance.checked"
) -> OnEvent:
    """A model metric below a threshold: events of `kind` whose ``payload.metrics[metric]`` < threshold."""
    _number("performance_below", "threshold", threshold)
    return OnEvent(kind, subject=subject, where={f"metrics.{metric}": ("<", threshold)}, name="performance")


def quality_failed(suite: str | None = None) -> OnEvent:
    """A data-quality suite that failed (``quality.suite`` events with ``passed: false``)."""
    return OnEvent("quality.suite", subject=suite, where={"passed": False}, name="quality")


def new_data(view: str | None = None, min_rows: int = 1) -> OnEvent:
    """New rows materialized into a feature view (``features.materialize`` events)."""
    _number("new_data", "min_rows", min_rows)
    return OnEvent("features.materialize", subject=view, where={"rows": (">=", min_rows)}, name="new_data")


def manual(policy: str) -> OnEvent:
    """A person asked for a run: ``loopstack loop trigger POLICY`` emits ``loop.manual`` about the policy.

    From the start of the event log: a request made before the scheduler first started is still a
    request (a new trigger otherwise starts at the newest event, and the first trigger was lost).
    """
    return OnEvent("loop.manual", subject=policy, name="manual", from_start=True)


__all__ = [
    "OnEvent",
    "Schedule",
    "Trigger",
    "drift_detected",
    "manual",
    "new_data",
    "performance_below",
    "quality_failed",
]
