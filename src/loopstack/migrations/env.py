"""Alembic environment: migrations run on the connection loopstack hands over.

loopstack calls Alembic itself (see `loopstack.core.db`), inside the write
transaction that holds the migration lock, so this module never opens a
connection of its own.
"""

from __future__ import annotations

from alembic import context

from loopstack.core.db import VERSION_TABLE
from loopstack.schema import METADATA

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=METADATA,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
context.run_migrations()
