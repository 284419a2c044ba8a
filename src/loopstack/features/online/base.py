"""The online store contract: latest feature values per entity key, newest write wins.

A backend stores, per (feature view, entity key), one record: the event
timestamp and created timestamp (integer microseconds, UTC) and the encoded
feature values (a JSON object made by DuckDB at materialization). Four
methods are the whole contract; ttl, decoding and on-demand transforms live
above it, so that every backend behaves the same.

``write_batch`` keeps a stored record when it is newer (larger event time, or
equal event time and larger created time) than the incoming one, so
replaying a batch or resuming an interrupted materialization is harmless. On a
full tie (equal event and created time) the last write wins: materialization
writes the offline join's winner, the last such row in source order, so a
source that gained a tied row serves the same value online as offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Record = tuple[int, str]
"""(event timestamp in microseconds, encoded values)"""


class OnlineStore(Protocol):
    """Where served feature values live (SQLite embedded, Redis for production)."""

    def write_batch(self, view: str, rows: Any) -> int:
        """Upsert an Arrow table (key, event_ts, created_ts, value) for `view`; newer stored rows win."""
        ...

    def read(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[Record | None]]:
        """Records for each (view, keys) pair, aligned with the keys; None where absent. One round trip."""
        ...

    def delete_view(self, view: str) -> None:
        """Drop everything stored for `view`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


__all__ = ["OnlineStore", "Record"]
