"""Reading and writing pipeline runs, step runs, the step cache and artifact lineage.

Each state change is written in the same transaction as the event that
announces it, so the event log and the tables never disagree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import NotFoundError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from loopstack.core.project import Project


@dataclass
class StepRecord:
    """One step of one pipeline run, as stored."""

    id: str
    run_id: str
    step: str
    status: str
    cache_key: str | None
    code_digest: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    outputs: list[dict[str, Any]]
    attempts: int
    logs_digest: str | None
    tracking_run_id: str | None
    started_at: float
    ended_at: float | None
    error: str | None

    @property
    def cached(self) -> bool:
        return self.status == "cached"

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass
class RunRecord:
    """One pipeline run, as stored, with its steps."""

    id: str
    pipeline: str
    status: str
    params: dict[str, Any]
    executor: str
    tracking_run_id: str | None
    cause: int | None
    event_id: int | None
    started_at: float
    ended_at: float | None
    error: str | None
    steps: list[StepRecord] = field(default_factory=list)


def _t(project: Project, name: str) -> Any:
    return project.db.table(name)


def insert_run(connection: Connection, project: Project, row: dict[str, Any]) -> None:
    connection.execute(_t(project, "pipeline_runs").insert(), row)


def update_run(connection: Connection, project: Project, run_id: str, **values: Any) -> None:
    table = _t(project, "pipeline_runs")
    connection.execute(table.update().where(table.c.id == run_id).values(**values))


def insert_step(connection: Connection, project: Project, row: dict[str, Any]) -> None:
    connection.execute(_t(project, "pipeline_step_runs").insert(), row)


def update_step(connection: Connection, project: Project, step_run_id: str, **values: Any) -> None:
    table = _t(project, "pipeline_step_runs")
    connection.execute(table.update().where(table.c.id == step_run_id).values(**values))


def cache_lookup(project: Project, key: str) -> dict[str, Any] | None:
    """The cache entry for `key` if every output it names is still in the artifact store.

    The entry carries the logs of the step run that computed it, shown for the cached step too.
    """
    from sqlalchemy import select

    table, steps = _t(project, "pipeline_cache"), _t(project, "pipeline_step_runs")
    query = (
        select(table, steps.c.logs_digest)
        .join(steps, steps.c.id == table.c.step_run_id, isouter=True)
        .where(table.c.key == key)
    )
    with project.db.read() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    entry = row._asdict()
    if not all(_whole(project, output) for output in entry["outputs"]):
        return None  # an artifact was deleted or truncated: run again rather than fail later
    return entry


def _whole(project: Project, output: dict[str, Any]) -> bool:
    """Whether a cached output is stored at the size it was stored with.

    Existence alone let a truncated artifact be a hit, which every later read refused with IntegrityError.
    The size, not the hash: hashing would read every cached output on every run (a download, on S3).
    """
    size = project.artifacts.size(output["digest"])
    return size is not None and output.get("size") in (None, size)


def cache_store(
    connection: Connection, project: Project, key: str, step: str, outputs: list[dict[str, Any]], step_run_id: str
) -> None:
    row = {"key": key, "step": step, "outputs": outputs, "step_run_id": step_run_id, "created_at": time.time()}
    project.db.upsert(connection, _t(project, "pipeline_cache"), [row], keys=("key",),
                      update=("outputs", "step_run_id", "created_at"))


def record_artifacts(connection: Connection, project: Project, step_run_id: str, outputs: list[dict[str, Any]]) -> None:
    now = time.time()
    rows = [
        {"digest": o["digest"], "step_run_id": step_run_id, "name": o["name"], "format": o["format"],
         "type": o["type"][:255], "size": o["size"], "created_at": now}
        for o in outputs
    ]
    project.db.upsert(connection, _t(project, "pipeline_artifacts"), rows, keys=("digest", "step_run_id"), update=())


def reap_dead_runs(project: Project) -> list[str]:
    """Mark pipeline runs whose process died as failed, with their unfinished steps; returns their ids.

    A killed driver leaves its run "running" for good. Its tracking run tells: tracking marks a run
    KILLED once its process is gone (`TrackingStore.reap_dead_runs`, on every project open).
    """
    import time

    from sqlalchemy import select

    from loopstack.tracking.entities import KILLED

    runs, steps, tracked = _t(project, "pipeline_runs"), _t(project, "pipeline_step_runs"), _t(project, "runs")
    query = (select(runs.c.id, runs.c.pipeline, runs.c.event_id, runs.c.tracking_run_id)
             .join(tracked, tracked.c.id == runs.c.tracking_run_id)
             .where(runs.c.status == "running", tracked.c.status == KILLED))
    with project.db.read() as connection:
        dead = connection.execute(query).all()
    reaped = []
    for row in dead:
        error = f"its process died mid-run (tracking run {row.tracking_run_id} was killed)"
        with project.db.write() as connection:
            done = connection.execute(runs.update().where(runs.c.id == row.id, runs.c.status == "running")
                                      .values(status="failed", ended_at=time.time(), error=error))
            if not done.rowcount:  # another process reaped it first
                continue
            connection.execute(steps.update().where(steps.c.run_id == row.id, steps.c.status == "running")
                               .values(status="failed", ended_at=time.time(), error=error))
            project.events.emit("pipeline.failed", row.pipeline, {"run_id": row.id, "status": "failed",
                                                                  "error": error}, row.event_id, connection)
        reaped.append(row.id)
    return reaped


def get_run(project: Project, run_id: str) -> RunRecord:
    """A stored pipeline run with its steps; a unique prefix of the id is enough."""
    from sqlalchemy import select

    reap_dead_runs(project)

    runs, steps = _t(project, "pipeline_runs"), _t(project, "pipeline_step_runs")
    with project.db.read() as connection:
        rows = connection.execute(select(runs).where(runs.c.id.startswith(run_id)).limit(2)).all()
        if len(rows) != 1:
            raise NotFoundError(
                f"{'no' if not rows else 'more than one'} pipeline run matches {run_id!r}; "
                "list runs with `loopstack pipelines list`"
            )
        record = RunRecord(**rows[0]._asdict())
        query = select(steps).where(steps.c.run_id == record.id).order_by(steps.c.started_at)
        record.steps = [StepRecord(**row._asdict()) for row in connection.execute(query)]
    return record


def list_runs(project: Project, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]:
    """Recent pipeline runs, newest first (without their steps)."""
    from sqlalchemy import select

    reap_dead_runs(project)

    runs = _t(project, "pipeline_runs")
    query = select(runs).order_by(runs.c.started_at.desc()).limit(limit)
    if pipeline:
        query = query.where(runs.c.pipeline == pipeline)
    with project.db.read() as connection:
        return [RunRecord(**row._asdict()) for row in connection.execute(query)]


def lineage(project: Project, digest: str, depth: int = 50) -> list[dict[str, Any]]:
    """The steps that produced an artifact and, recursively, its inputs: newest producer first.

    Each entry names the artifact, the step run that wrote it, the pipeline run
    and the digests it read, so a model can be traced back to its raw data.
    """
    from sqlalchemy import select

    artifacts, steps = _t(project, "pipeline_artifacts"), _t(project, "pipeline_step_runs")
    found: list[dict[str, Any]] = []
    queue, seen = [digest], set()
    with project.db.read() as connection:
        while queue and len(found) < depth:
            current = queue.pop(0)
            if current in seen:
                continue
            seen.add(current)
            query = (
                select(artifacts.c.digest, artifacts.c.name, artifacts.c.format, steps)
                .join(steps, steps.c.id == artifacts.c.step_run_id)
                .where(artifacts.c.digest == current)
                .order_by(steps.c.started_at)
                .limit(1)
            )
            row = connection.execute(query).first()
            if row is None:
                continue
            entry = row._asdict()
            found.append({"digest": current, "output": entry["name"], "format": entry["format"],
                          "step": entry["step"], "step_run_id": entry["id"], "pipeline_run_id": entry["run_id"],
                          "inputs": entry["inputs"], "params": entry["params"], "code_digest": entry["code_digest"]})
            for value in entry["inputs"].values():
                queue.extend(value if isinstance(value, list) else [value])
    return found


__all__ = ["RunRecord", "StepRecord", "get_run", "lineage", "list_runs"]
