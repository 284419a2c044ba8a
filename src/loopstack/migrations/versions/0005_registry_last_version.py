"""registry: registered_models.last_version, so deleted version numbers are not reused

Revision ID: 0005_registry_last_version
Revises: 0004_rollout
Create Date: 2026-11-27 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_registry_last_version"
down_revision = "0004_rollout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("registered_models", sa.Column("last_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.drop_column("last_version")
