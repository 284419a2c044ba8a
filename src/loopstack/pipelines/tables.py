"""Tables of pipelines and the loop engine.

Pipeline side: runs, step runs, the step cache and artifact lineage. Loop
side: per-trigger state (last fire time, event cursor), the actions in flight
and the scheduler's lease. Everything the scheduler needs to carry on after a
restart is here, so the process itself holds no state worth losing.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, Integer, String, Table, Text

from loopstack.core.tables import METADATA

pipeline_runs = Table(
    "pipeline_runs",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("pipeline", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("executor", String(64), nullable=False),
    Column("tracking_run_id", String(32), nullable=True),
    Column("cause", Integer, nullable=True),
    Column("event_id", Integer, nullable=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("error", Text, nullable=True),
    Index(None, "pipeline", "started_at"),
)

pipeline_step_runs = Table(
    "pipeline_step_runs",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("step", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("cache_key", String(64), nullable=True),
    Column("code_digest", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("logs_digest", String(64), nullable=True),
    Column("tracking_run_id", String(32), nullable=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("error", Text, nullable=True),
    Index(None, "run_id"),
)

pipeline_cache = Table(
    "pipeline_cache",
    METADATA,
    Column("key", String(64), primary_key=True),
    Column("step", String(255), nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("step_run_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)

pipeline_artifacts = Table(
    "pipeline_artifacts",
    METADATA,
    Column("digest", String(64), primary_key=True),
    Column("step_run_id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("format", String(16), nullable=False),
    Column("type", String(255), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

loop_triggers = Table(
    "loop_triggers",
    METADATA,
    Column("policy", String(255), primary_key=True),
    Column("trigger", String(255), primary_key=True),
    Column("last_fire", Float, nullable=True),
    Column("cursor", Integer, nullable=True),
    Column("updated_at", Float, nullable=False),
)

loop_runs = Table(
    "loop_runs",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("policy", String(255), nullable=False),
    Column("trigger", String(255), nullable=False),
    Column("cause", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("results", JSON, nullable=False),
    Column("state", JSON, nullable=False),
    Column("last_event", Integer, nullable=True),
    Column("owner", String(255), nullable=True),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("error", Text, nullable=True),
    Index(None, "policy", "status"),
)

loop_leases = Table(
    "loop_leases",
    METADATA,
    Column("name", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("heartbeat", Float, nullable=False),
    Column("ttl_s", Float, nullable=False),
    Column("started_at", Float, nullable=False),
)
