"""Tables of rollouts: one row per deployment.

A deployment's traffic configuration (variants, strategy, weights, canary
step, salt, metrics) lives in ``config``; ``version`` grows by one with each
traffic change, so a server only has to compare one integer to know whether
to reload. The rollout controller's working state (the canary analysis, the
bandit's counts, its read cursor) lives in ``state``: it changes on every
evaluation but moves no traffic, so it does not bump the version. Both are
in the database, so a restarted controller or server carries on where the
last one stopped.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Integer, String, Table

from loopstack.core.tables import METADATA

deployments = Table(
    "deployments",
    METADATA,
    Column("endpoint", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("strategy", String(32), nullable=False),
    Column("config", JSON, nullable=False),
    Column("state", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
