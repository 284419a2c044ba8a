"""The loop engine's persisted state: the scheduler lease, trigger cursors and runs in flight.

All of it lives in the metadata DB, so ``loopstack loop run`` can be killed
at any moment and started again (on this or another machine) and carry on:
triggers do not fire twice for one event, a schedule missed while down fires
once, and an action that was running is resumed.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConflictError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from loopstack.core.project import Project

LEASE = "scheduler"
_PG_LEASE_LOCK = 7_402_011_302
HOST = socket.gethostname()


@dataclass
class LoopRun:
    """One firing of a policy, as stored."""

    id: str
    policy: str
    trigger: str
    cause: int | None
    status: str
    step: int
    results: dict[str, Any]
    state: dict[str, Any]
    last_event: int | None
    owner: str | None
    started_at: float
    updated_at: float
    error: str | None


def new_owner() -> str:
    """An owner token: host, pid, a nonce (two engines in one process are two owners) and the process's
    start time, so that another process given the same pid later is not taken for this one."""
    from loopstack.tracking.processes import own_start_time

    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{own_start_time():.2f}"


def acquire_lease(project: Project, owner: str, ttl_s: float) -> None:
    """Become the one scheduler of this project, or raise ConflictError naming the live one.

    A holder is presumed dead once its heartbeat is older than the ttl *it*
    declared, or at once if it was a process on this host that has exited.
    """
    from sqlalchemy import select

    table = project.db.table("loop_leases")
    now = time.time()
    with project.db.write() as connection:
        if project.db.dialect == "postgresql":  # serialize takeovers; SQLite's BEGIN IMMEDIATE already does
            from sqlalchemy import text

            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LEASE_LOCK})
        row = connection.execute(select(table).where(table.c.name == LEASE)).first()
        if row is not None and row.owner != owner and _alive(row.owner, now - row.heartbeat, row.ttl_s):
            raise ConflictError(
                f"another loop scheduler ({row.owner}) holds this project, last seen "
                f"{now - row.heartbeat:.0f}s ago; stop it first, or wait {row.ttl_s:.0f}s after it stopped"
            )
        values = {"name": LEASE, "owner": owner, "heartbeat": now, "ttl_s": ttl_s, "started_at": now}
        project.db.upsert(connection, table, [values], keys=("name",),
                          update=("owner", "heartbeat", "ttl_s", "started_at"))


def heartbeat(project: Project, owner: str) -> None:
    """Renew the lease; raise ConflictError if another scheduler took it over meanwhile."""
    table = project.db.table("loop_leases")
    with project.db.write() as connection:
        updated = connection.execute(
            table.update().where(table.c.name == LEASE, table.c.owner == owner).values(heartbeat=time.time())
        ).rowcount
    if updated != 1:
        raise ConflictError(f"scheduler {owner} lost its lease to another scheduler; this one stops")


def release_lease(project: Project, owner: str) -> None:
    table = project.db.table("loop_leases")
    with project.db.write() as connection:
        connection.execute(table.delete().where(table.c.name == LEASE, table.c.owner == owner))


def lease_holder(project: Project) -> dict[str, Any] | None:
    from sqlalchemy import select

    table = project.db.table("loop_leases")
    with project.db.read() as connection:
        row = connection.execute(select(table).where(table.c.name == LEASE)).first()
    return None if row is None else row._asdict()


def _alive(owner: str, age_s: float, ttl_s: float) -> bool:
    """A lease holder is alive while its heartbeat is fresh, unless it is a dead process on this host.

    The pid alone is not the process: once the holder died, a new process could get its pid and keep its
    lease alive until the ttl ran out. The owner token carries the holder's start time, and a process of
    that pid with another start time (or a zombie) is not the holder.
    """
    if age_s > ttl_s:
        return False
    host, pid, _, started = [*owner.split(":"), "", "", "", ""][:4]
    if host != HOST or not pid.isdigit():
        return True
    try:
        start_time = float(started)
    except ValueError:  # a token from before start times were recorded: the pid is all there is
        import psutil

        return bool(psutil.pid_exists(int(pid)))
    from loopstack.tracking.processes import is_process_alive

    return is_process_alive(int(pid), start_time)


# -- triggers ---------------------------------------------------------------------------------
def trigger_states(project: Project, policy: str) -> dict[str, dict[str, Any]]:
    from sqlalchemy import select

    table = project.db.table("loop_triggers")
    with project.db.read() as connection:
        rows = connection.execute(select(table).where(table.c.policy == policy))
        return {row.trigger: row._asdict() for row in rows}


def init_trigger(project: Project, policy: str, trigger: str, last_fire: float | None, cursor: int | None) -> None:
    """Create a trigger's state unless it exists (a restart keeps the old cursor and fire time)."""
    row = {"policy": policy, "trigger": trigger, "last_fire": last_fire, "cursor": cursor, "updated_at": time.time()}
    with project.db.write() as connection:
        project.db.upsert(connection, project.db.table("loop_triggers"), [row], keys=("policy", "trigger"), update=())


def advance_trigger(connection: Connection, project: Project, policy: str, trigger: str, **values: Any) -> None:
    table = project.db.table("loop_triggers")
    statement = table.update().where(table.c.policy == policy, table.c.trigger == trigger)
    connection.execute(statement.values(updated_at=time.time(), **values))


def max_event_id(project: Project) -> int:
    from sqlalchemy import func, select

    table = project.db.table("events")
    with project.db.read() as connection:
        return int(connection.execute(select(func.max(table.c.id))).scalar() or 0)


# -- runs -----------------------------------------------------------------------------------------
def insert_run(connection: Connection, project: Project, row: dict[str, Any]) -> None:
    connection.execute(project.db.table("loop_runs").insert(), row)


def update_run(connection: Connection, project: Project, run_id: str, **values: Any) -> None:
    table = project.db.table("loop_runs")
    connection.execute(table.update().where(table.c.id == run_id).values(updated_at=time.time(), **values))


def save_state(project: Project, run_id: str, action: str, state: dict[str, Any], last_event: int | None) -> None:
    """Persist one action's checkpoint (and the latest event of the story)."""
    from sqlalchemy import select

    table = project.db.table("loop_runs")
    with project.db.write() as connection:
        current = connection.execute(select(table.c.state).where(table.c.id == run_id)).scalar() or {}
        update_run(connection, project, run_id, state={**current, action: dict(state)}, last_event=last_event)


def runs(project: Project, status: str | None = None, policy: str | None = None, limit: int = 50) -> list[LoopRun]:
    """Stored runs, newest first."""
    from sqlalchemy import select

    table = project.db.table("loop_runs")
    query = select(table).order_by(table.c.started_at.desc()).limit(limit)
    if status:
        query = query.where(table.c.status == status)
    if policy:
        query = query.where(table.c.policy == policy)
    with project.db.read() as connection:
        return [LoopRun(**row._asdict()) for row in connection.execute(query)]


@dataclass(frozen=True)
class RunSpan:
    """A run's place in the event log: after its ``loop.triggered`` event and before its end event.

    Event ids, not times: they order what was recorded whatever clock the ticks ran on (a replay's, a
    skewed host's), and they are in the log, so a restarted scheduler reads the same spans.
    """

    run: str
    first: int | None  # its loop.triggered event; None: at or before the events asked about
    last: int | None  # its loop.finished or loop.stopped event; None: still in flight

    def holds(self, event_id: int) -> bool:
        """Whether `event_id` was recorded while this run was in progress."""
        return (self.first is None or self.first < event_id) and (self.last is None or event_id < self.last)


RUN_ENDS = ("loop.finished", "loop.failed", "loop.stopped")
ANSWERED = ("loop.finished", "loop.stopped")  # the run acted on its evidence, or a gate decided against it


def run_spans(project: Project, policy: str, after_id: int) -> list[RunSpan]:
    """The spans of the policy's runs that were in progress at some event after `after_id`: the runs that
    answered the evidence of their time (finished, or stopped by a gate) and those still in flight.

    A failed run answered nothing: the signals recorded during it are left to start a run as any other
    (the cooldown still applies). Read from the runs stored as in flight, then from the run boundaries in the
    event log: in that order, a run that starts between the two reads has its start in the log. A start with
    no end that is not in flight (an edited log) is left out: it would hold back the policy's signals forever.
    """
    in_flight = {run.id for run in runs(project, status="running", policy=policy, limit=1000)}
    query = boundaries_query(project.db.table("events"), policy, after_id)
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    failed: set[str] = set()
    with project.db.read() as connection:
        for row in connection.execute(query):
            run = (row.payload or {}).get("run")
            if not isinstance(run, str):
                continue
            if row.kind == "loop.triggered":
                starts[run] = row.id
            elif row.kind in ANSWERED:
                ends[run] = row.id
            else:
                failed.add(run)
    spans = [RunSpan(run, starts.get(run), ends.get(run)) for run in dict.fromkeys([*starts, *ends, *in_flight])]
    return [span for span in spans
            if span.run not in failed and (span.run in in_flight or span.last is not None)]


def boundaries_query(events: Any, policy: str, after_id: int) -> Any:
    """The policy's run starts and ends after `after_id`, oldest first.

    It reads the events after `after_id` by id (a trigger's cursor is recent, so they are few) and filters
    them: with ``subject`` and ``kind`` compared as ``column || ''``, no database uses their indexes, which
    on SQLite made the query read every loop event of the policy however recent the cursor (12 ms at 100k
    events, 51 ms at 500k). A trigger's first poll (cursor 0) reads the whole log once.
    """
    from sqlalchemy import literal, select

    return (select(events.c.id, events.c.kind, events.c.payload)
            .where(events.c.id > after_id, (events.c.subject + literal("")) == policy,
                   (events.c.kind + literal("")).in_(("loop.triggered", *RUN_ENDS)))
            .order_by(events.c.id))


def last_start(project: Project, policy: str, not_after: float | None = None) -> float | None:
    """When the policy's latest run started, counting only runs that started by `not_after` (a replay's time
    line holds only its own runs, not the ones a later clock stamped)."""
    from sqlalchemy import func, select

    table = project.db.table("loop_runs")
    query = select(func.max(table.c.started_at)).where(table.c.policy == policy)
    if not_after is not None:
        query = query.where(table.c.started_at <= not_after)
    with project.db.read() as connection:
        return connection.execute(query).scalar()


__all__ = ["LoopRun", "RunSpan", "acquire_lease", "heartbeat", "lease_holder", "release_lease", "run_spans", "runs"]
