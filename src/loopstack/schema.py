"""Every table of loopstack on one MetaData, and the migration head it matches.

Importing this module registers the tables of every subpackage. `HEAD` is the
Alembic revision that the tables here correspond to; a test checks that it is
the head of ``loopstack/migrations`` and that running the migrations from an
empty database yields exactly these tables.
"""

from __future__ import annotations

import loopstack.features.tables
import loopstack.pipelines.tables
import loopstack.registry.tables
import loopstack.rollout.tables
import loopstack.tracking.tables  # noqa: F401  (registers tables)
from loopstack.core.tables import METADATA
from loopstack.schema_sqlite import HEAD  # kept beside the SQLite DDL it describes, which needs no SQLAlchemy

__all__ = ["HEAD", "METADATA"]
