"""Tables of experiment tracking: experiments, runs and what runs log."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from loopstack.core.tables import METADATA

experiments = Table(
    "experiments",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("name"),
)

runs = Table(
    "runs",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", Float, nullable=False),
    Column("end_time", Float, nullable=True),
    Column("parent_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_started", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
    Index(None, "experiment_id", "start_time"),
    Index(None, "status"),
)

params = Table(
    "params",
    METADATA,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

tags = Table(
    "tags",
    METADATA,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

metrics = Table(
    "metrics",
    METADATA,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", Float, nullable=True),  # NULL stores NaN (SQLite has no NaN)
    Column("step", BigInteger, nullable=False),
    Column("timestamp", Float, nullable=False),
    Index(None, "run_id", "key", "step"),
)

latest_metrics = Table(
    "latest_metrics",
    METADATA,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float, nullable=True),  # NULL stores NaN (SQLite has no NaN)
    Column("step", BigInteger, nullable=False),
    Column("timestamp", Float, nullable=False),
    Index(None, "key", "value"),
)

artifacts = Table(
    "artifacts",
    METADATA,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
)

datasets = Table(
    "datasets",
    METADATA,
    Column("digest", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("source", Text, nullable=False),
    Column("num_rows", BigInteger, nullable=False),
    Column("schema", JSON, nullable=False),
    Column("stats", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

run_inputs = Table(
    "run_inputs",
    METADATA,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("dataset_digest", String(64), ForeignKey("datasets.digest"), primary_key=True),
    Column("context", String(64), primary_key=True),
)
