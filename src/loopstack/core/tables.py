"""The shared SQLAlchemy MetaData and the core's own table, `events`.

Each subpackage declares its tables on `METADATA` in its own ``tables``
module; `loopstack.schema` imports them all so that a fresh database can be
created in one step and Alembic can compare it with the migrations.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table

METADATA = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = Table(
    "events",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("cause", Integer, ForeignKey("events.id"), nullable=True),
    Index(None, "kind", "time"),
    Index(None, "subject", "time"),
)
