"""feature store tables

Revision ID: 0002_features
Revises: 0001
Create Date: 2026-11-26 08:58:22.852564
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_features"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_datasets",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("entity_digest", sa.String(length=64), nullable=True),
        sa.Column("num_rows", sa.BigInteger(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_feature_datasets")),
    )
    op.create_table(
        "feature_materializations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("store", sa.String(length=255), nullable=False),
        sa.Column("view", sa.String(length=255), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=False),
        sa.Column("end_us", sa.BigInteger(), nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=False),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_materializations")),
    )
    with op.batch_alter_table("feature_materializations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feature_materializations_store_view"), ["store", "view"], unique=False)

    op.create_table(
        "feature_object_versions",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", "digest", name=op.f("pk_feature_object_versions")),
    )
    op.create_table(
        "feature_objects",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("applied_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_feature_objects")),
    )
    op.create_table(
        "feature_watermarks",
        sa.Column("store", sa.String(length=255), nullable=False),
        sa.Column("view", sa.String(length=255), nullable=False),
        sa.Column("watermark_us", sa.BigInteger(), nullable=False),
        sa.Column("view_digest", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("store", "view", name=op.f("pk_feature_watermarks")),
    )


def downgrade() -> None:
    op.drop_table("feature_watermarks")
    op.drop_table("feature_objects")
    op.drop_table("feature_object_versions")
    with op.batch_alter_table("feature_materializations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feature_materializations_store_view"))

    op.drop_table("feature_materializations")
    op.drop_table("feature_datasets")
