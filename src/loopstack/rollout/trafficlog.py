"""The endpoint traffic log: one row per request per variant, failures included.

The prediction log only sees batches that succeeded, but a canary is judged
on its errors too, and a shadow's failures must be visible without ever
reaching the caller. So the endpoint route writes its own small record for
every live and mirrored request: which variant, whether it succeeded, how
long it took. Records are queued in memory and written as Parquet segments
by a background thread, like the prediction log, under::

    <log_dir>/endpoints/<endpoint>/<time>-<pid>-<seq>.parquet

Outputs stay in the prediction log (``read_prediction_log(log_dir, endpoint)``,
column ``variant``), which the shadow comparison joins on request id.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("loopstack.rollout")
_seq = itertools.count()


def traffic_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("request_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("endpoint", pa.string()),
        ("variant", pa.string()),
        ("ref", pa.string()),
        ("deployment_version", pa.int64()),
        ("unit_id", pa.string()),
        ("shadow", pa.bool_()),
        ("ok", pa.bool_()),
        ("status", pa.int32()),
        ("latency_ms", pa.float64()),
        ("error", pa.string()),
    ])


class TrafficLog:
    """Queue request records and write them to Parquet off the request path.

    Examples
    --------
    >>> import tempfile
    >>> log = TrafficLog(tempfile.mkdtemp())
    >>> log.record(request_id="r1", endpoint="api", variant="m/1", ref="m/1", deployment_version=1,
    ...            unit_id="u1", shadow=False, ok=True, status=200, latency_ms=1.5)
    >>> log.close()
    >>> read_traffic_log(log.root, "api").column("variant").to_pylist()
    ['m/1']
    """

    def __init__(self, root: str | os.PathLike[str], flush_s: float = 1.0) -> None:
        self.root = Path(root)
        self.flush_s = flush_s
        self._pending: deque[dict[str, Any]] = deque()
        self._unwritten: dict[str, list[dict[str, Any]]] = {}  # per endpoint: records of a failed write, kept
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="loopstack-traffic-log", daemon=True)
        self._thread.start()

    def record(self, **row: Any) -> None:
        """Queue one record (one deque append on the request path)."""
        row.setdefault("time", int(time.time() * 1e6))
        row.setdefault("error", None)
        self._pending.append(row)

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # keep serving whatever went wrong; flush reports each endpoint's failure itself
                logger.exception("traffic log: writing a segment failed")

    def flush(self) -> None:
        """Write everything queued so far, one segment per endpoint, each endpoint's write on its own.

        A write that fails (a full disk, a folder made read-only) loses no other endpoint's records: it
        is logged, and its own records are kept for the next flush, the newest `RETRY_ROWS` of them, so
        a disk that stays full cannot grow memory without limit. Records that cannot be converted are
        logged and dropped, since they would fail the same way again.
        """
        with self._lock:
            groups, self._unwritten = self._unwritten, {}
            while self._pending:
                row = self._pending.popleft()
                groups.setdefault(row["endpoint"], []).append(row)
            for endpoint, rows in groups.items():
                try:
                    self._write(endpoint, rows)
                except OSError:
                    self._unwritten[endpoint] = rows[-RETRY_ROWS:]
                    logger.exception("traffic log: writing %d records of endpoint %r failed; %d kept for the next "
                                     "flush", len(rows), endpoint, len(self._unwritten[endpoint]))
                except Exception:
                    logger.exception("traffic log: %d records of endpoint %r could not be converted and are "
                                     "dropped", len(rows), endpoint)

    def _write(self, endpoint: str, rows: list[dict[str, Any]]) -> None:
        import pyarrow.parquet as pq

        folder = self.root / "endpoints" / endpoint
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{os.getpid()}-{next(_seq):06d}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(_table(rows), tmp)
        tmp.replace(folder / name)  # readers never see half a file

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
        lost = sum(len(rows) for rows in self._unwritten.values())
        if lost:
            logger.error("traffic log: closed with %d records of endpoints %s unwritten; they are lost", lost,
                         sorted(self._unwritten))


SINCE_SLACK_S = 60.0
RETRY_ROWS = 100_000  # per endpoint: the newest records of a failed write kept for the next flush
CHUNK_ROWS = 1024  # rows converted per hold of the GIL (about a millisecond)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """The records as a table, converted a chunk at a time.

    Arrow converts Python objects holding the GIL throughout: a second of traffic in one call
    would pause the event loop that answers requests for ~10 ms. Between chunks the writer yields.
    """
    import pyarrow as pa

    schema = traffic_schema()
    batches = []
    for start in range(0, len(rows), CHUNK_ROWS):
        batches.append(pa.RecordBatch.from_pylist(rows[start : start + CHUNK_ROWS], schema=schema))
        time.sleep(0)  # lets a thread waiting for the GIL (the event loop) take it
    return pa.Table.from_batches(batches, schema)


def read_traffic_log(root: str | os.PathLike[str], endpoint: str, since: float | None = None) -> pa.Table:
    """The endpoint's request records (since a UNIX time, when given); empty before the first write.

    A segment is named after the time it was written, after every record in it was made, so
    segments named more than `SINCE_SLACK_S` before `since` are not read at all (the slack covers
    a wall clock stepped back and records given an explicit time; a name without a time is read).
    """
    import pyarrow as pa

    files = segments_since(traffic_segments(root, endpoint), since)
    if not files:
        return traffic_schema().empty_table()
    return rows_since(pa.concat_tables([read_traffic_segment(f) for f in files]), since)


def traffic_segments(root: str | os.PathLike[str], endpoint: str) -> list[Path]:
    """The endpoint's segment files in name (write-time) order.

    `TrafficLog.flush` writes each one whole under a temporary name and renames it into place,
    and nothing writes to it again: a reader may keep what it read of one.
    """
    return sorted((Path(root) / "endpoints" / endpoint).glob("*.parquet"))


def segments_since(files: list[Path], since: float | None) -> list[Path]:
    """The log segments (of any log) named no earlier than `SINCE_SLACK_S` before `since`; all when it is None."""
    if since is None:
        return files
    cutoff = (since - SINCE_SLACK_S) * 1e9
    return [f for f in files if written_ns(f) >= cutoff]


def written_ns(path: Path) -> float:
    """The write time in a segment's name (``<time_ns>-<pid>-<seq>.parquet``); infinity (read it) otherwise."""
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else float("inf")


def read_traffic_segment(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """One segment in the traffic schema (only `columns`, when given)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, schema=traffic_schema(), columns=columns)


def rows_since(table: pa.Table, since: float | None) -> pa.Table:
    """The records of `table` logged at or after the UNIX time `since` (all of them when it is None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if since is None:
        return table
    return table.filter(pc.greater_equal(table["time"].cast(pa.int64()), int(since * 1e6)))


__all__ = ["TrafficLog", "read_traffic_log", "traffic_schema"]
