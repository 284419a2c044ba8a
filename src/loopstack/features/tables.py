"""The feature store's tables in the metadata DB.

``feature_objects`` points at the applied version of each definition and
``feature_object_versions`` keeps every version by its content hash, so a
changed view is a new row, never an overwrite. Materialization state (a
watermark per online store and view, and per-job chunk progress for resuming)
and the lineage of every retrieved training set live here too.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, String, Table

from loopstack.core.tables import METADATA

feature_objects = Table(
    "feature_objects",
    METADATA,
    Column("kind", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("origin", String(1024), nullable=False),
    Column("applied_at", Float, nullable=False),
)

feature_object_versions = Table(
    "feature_object_versions",
    METADATA,
    Column("kind", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

feature_watermarks = Table(
    "feature_watermarks",
    METADATA,
    Column("store", String(255), primary_key=True),
    Column("view", String(255), primary_key=True),
    Column("watermark_us", BigInteger, nullable=False),
    Column("view_digest", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)

feature_materializations = Table(
    "feature_materializations",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("store", String(255), nullable=False),
    Column("view", String(255), nullable=False),
    Column("start_us", BigInteger, nullable=False),
    Column("end_us", BigInteger, nullable=False),
    Column("chunks_total", Integer, nullable=False),
    Column("chunks_done", Integer, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index(None, "store", "view"),
)

feature_datasets = Table(
    "feature_datasets",
    METADATA,
    Column("digest", String(64), primary_key=True),
    Column("features", JSON, nullable=False),
    Column("sources", JSON, nullable=False),
    Column("entity_digest", String(64), nullable=True),
    Column("num_rows", BigInteger, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)
