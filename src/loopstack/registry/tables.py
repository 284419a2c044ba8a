"""Tables of the model registry: models, versions and aliases."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Table,
    Text,
)

from loopstack.core.tables import METADATA

registered_models = Table(
    "registered_models",
    METADATA,
    Column("name", String(255), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("description", Text, nullable=False, default=""),
    # the highest version number ever given: a deleted version's number is never handed out again
    Column("last_version", Integer, nullable=True),
)

model_versions = Table(
    "model_versions",
    METADATA,
    Column("name", String(255), ForeignKey("registered_models.name"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("artifact_path", String(1024), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("flavor", String(32), nullable=False),
    Column("signature", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("lineage", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

model_aliases = Table(
    "model_aliases",
    METADATA,
    Column("name", String(255), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"]
    ),
)
