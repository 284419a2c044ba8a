"""What the loop is doing, read from the DB alone: works whether or not a scheduler runs."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from loopstack.pipelines import state

if TYPE_CHECKING:
    from loopstack.core.project import Project


def collect(project: Project, recent: int = 20) -> dict[str, Any]:
    """The lease holder, every trigger's state (with the next fire time of schedules), runs, and the latest
    signals that started no run (``loop.suppressed``: a cooldown, a run in progress), with why.

    Examples
    --------
    >>> import tempfile, loopstack as ls
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="doc")
    >>> collect(project)
    {'lease': None, 'triggers': [], 'runs': [], 'suppressed': []}
    >>> project.close()
    """
    from sqlalchemy import select

    table = project.db.table("loop_triggers")
    with project.db.read() as connection:
        rows = [row._asdict() for row in connection.execute(select(table).order_by(table.c.policy, table.c.trigger))]
    for row in rows:
        row["next_fire"] = _next_fire(row["trigger"], row["last_fire"])
    in_flight = state.runs(project, status="running", limit=1000)
    others = [r for r in state.runs(project, limit=recent) if r.status != "running"]
    suppressed = project.events.list(kind="loop.suppressed", limit=recent)
    return {
        "lease": state.lease_holder(project),
        "triggers": rows,
        "runs": [asdict(r) for r in [*in_flight, *others]],
        "suppressed": [{"event": e.id, "time": e.time, "policy": e.subject, "reason": e.payload.get("reason", "")}
                       for e in suppressed],
    }


def _next_fire(key: str, last_fire: float | None) -> float | None:
    if not key.startswith("schedule:"):
        return None
    from loopstack.pipelines.triggers import Schedule

    expression, _, zone = key.removeprefix("schedule:").rpartition("@")
    try:
        schedule = Schedule(expression, zone)
    except Exception:  # a schedule written by another version: show no time rather than fail
        return None
    import datetime as dt
    from zoneinfo import ZoneInfo

    from loopstack.pipelines.cron import Cron

    start = dt.datetime.fromtimestamp(last_fire or time.time(), ZoneInfo(schedule.timezone))
    return Cron.parse(schedule.cron).next_after(start).timestamp()


__all__ = ["collect"]
