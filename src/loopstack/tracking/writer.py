"""The background writer that keeps logging off the training loop's critical path.

A log call appends a tuple to a deque (thread-safe, no lock, no I/O) and
returns in about a microsecond. A daemon thread drains the deques every
``flush_interval_s`` and writes everything in one transaction, so a kill -9
loses at most one interval of points and never leaves a half-written batch.
A write that fails (database locked beyond the busy timeout, server away)
keeps its rows for the next attempt instead of dropping them. A write that
fails because of a row (a constraint or a value the database refuses) would
fail every attempt and block every later point of every run: the batch is
then written in halves until each bad row stands alone, and only those are
dropped, each with a logged error (and the writer's `on_drop` hook).

Params are immutable, but two processes logging the same param of one run
each check only their own values. The insert keeps the value stored first;
the write then reads back the stored values of its params, and a different
one is a conflict: logged as a warning, told to the `on_conflict` hook in the
same transaction (the tracking store records a ``run.value_dropped`` event),
and kept in `conflicts` until `flush` or the end of the run raises it as a
`ConflictError` in the process whose value was dropped.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from loopstack.core.direct import Compiled

if TYPE_CHECKING:
    import logging

    from sqlalchemy import Connection

    from loopstack.core.db import MetadataDB
    from loopstack.core.direct import DirectStatement

MetricRow = tuple[str, str, float, int, float]
METRIC_COLUMNS = ("run_id", "key", "value", "step", "timestamp")
TagRow = tuple[str, str, str]
ArtifactRow = tuple[str, str, str, int, str]  # run_id, path, digest, size, kind
Batch = tuple[list[MetricRow], list[TagRow], list[TagRow], list[ArtifactRow]]
TAG_COLUMNS = ("run_id", "key", "value")
ARTIFACT_COLUMNS = ("run_id", "path", "digest", "size", "kind")
TABLES = ("metrics", "params", "tags", "artifacts")  # the order of a Batch's lists
Tagged = tuple[int, tuple[Any, ...]]  # a row with the index of its list in a Batch
DropHook = Callable[[str, tuple[Any, ...], BaseException], None]  # table, row, the error that refused it
ParamConflict = tuple[str, str, str, str]  # run_id, key, the value stored (kept), the value this process dropped
ConflictHook = Callable[[Any, list[ParamConflict]], None]  # the write's connection, its conflicts

# A batch's statements as SQLAlchemy compiles them for SQLite, so that the writer runs on the
# driver alone there (see core.sqlite); a test compares each with the statement it stands for.
_SQLITE_METRICS = Compiled(
    'INSERT INTO metrics (run_id, "key", value, step, timestamp) VALUES (?, ?, ?, ?, ?)',
    METRIC_COLUMNS,
    floats=("value", "timestamp"),
)
_SQLITE_LATEST = Compiled(
    'INSERT INTO latest_metrics (run_id, "key", value, step, timestamp) VALUES (?, ?, ?, ?, ?) '
    'ON CONFLICT (run_id, "key") DO UPDATE SET value = excluded.value, step = excluded.step, '
    "timestamp = excluded.timestamp WHERE excluded.step > latest_metrics.step OR "
    "excluded.step = latest_metrics.step AND excluded.timestamp >= latest_metrics.timestamp",
    METRIC_COLUMNS,
    floats=("value", "timestamp"),
)
_SQLITE_PARAMS = Compiled(
    'INSERT INTO params (run_id, "key", value) VALUES (?, ?, ?) ON CONFLICT (run_id, "key") DO NOTHING', TAG_COLUMNS
)
_SQLITE_TAGS = Compiled(
    'INSERT INTO tags (run_id, "key", value) VALUES (?, ?, ?) '
    'ON CONFLICT (run_id, "key") DO UPDATE SET value = excluded.value',
    TAG_COLUMNS,
)
_SQLITE_ARTIFACTS = Compiled(
    "INSERT INTO artifacts (run_id, path, digest, size, kind) VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, path) "
    "DO UPDATE SET digest = excluded.digest, size = excluded.size, kind = excluded.kind",
    ARTIFACT_COLUMNS,
)


class BufferedWriter:
    """Buffers metrics, params and tags; writes them in batches from a daemon thread."""

    def __init__(self, db: MetadataDB, flush_interval_s: float, max_buffered: int) -> None:
        self.db = db
        self.flush_interval_s = flush_interval_s
        self.max_buffered = max_buffered
        self.metrics: deque[MetricRow] = deque()
        self.params: deque[TagRow] = deque()
        self.tags: deque[TagRow] = deque()
        self.artifacts: deque[ArtifactRow] = deque()  # rows for blobs already in the artifact store
        self.before_write: list[Callable[[Connection], None]] = []
        self.on_drop: DropHook | None = None  # told of each row the database refused for good
        self.on_conflict: ConflictHook | None = None  # told, in the write's transaction, of params another kept
        self.conflicts: list[ParamConflict] = []  # written since, not raised yet (see take_conflicts)
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._retry: Batch | None = None
        # each `then` of a flush that failed on an unreachable database (a run's end): run with the next write
        self._retry_then: list[Callable[[Connection], None]] = []
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None
        _writers.add(self)

    @cached_property
    def _metrics_insert(self) -> DirectStatement:
        """The bulk of every flush, compiled once, on the first flush, run on the DBAPI cursor (see core.direct)."""
        return self.db.direct(lambda: self.db.table("metrics").insert(), METRIC_COLUMNS, sqlite=_SQLITE_METRICS)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closed.clear()
            self._thread = threading.Thread(target=self._loop, name="loopstack-writer", daemon=True)
            self._thread.start()

    def pending(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags) + len(self.artifacts)

    def nudge(self) -> None:
        """Called when the buffer is large: flush now, and block if it is over the bound."""
        if len(self.metrics) >= self.max_buffered:
            self.flush()
        else:
            self._wake.set()

    def flush(self, then: Callable[[Connection], None] | None = None, check: bool = True) -> None:
        """Write everything buffered so far, on the caller's thread.

        `then` runs in the same transaction after the rows (ending a run this
        way costs one transaction instead of two). With `check`, a param
        another process had already stored with a different value (in this
        write or an earlier background one) raises ConflictError afterwards.
        """
        with self._flush_lock:
            batch = self._drain()
            thens = [*self._retry_then, *([then] if then is not None else [])]  # earlier ends not written yet first
            self._retry_then = []
            if any(batch) or self.before_write or thens:
                self._write(batch, thens)
        if check:
            raise_conflicts(self.take_conflicts())

    def take_conflicts(self, run_ids: Callable[[str], bool] | None = None) -> list[ParamConflict]:
        """The param conflicts found since the last call (of the runs `run_ids` accepts), now forgotten."""
        with self._flush_lock:
            taken = [c for c in self.conflicts if run_ids is None or run_ids(c[0])]
            self.conflicts = [c for c in self.conflicts if c not in taken]
        return taken

    def flush_pending(self) -> None:
        """Write buffered rows, if any, before a read (read-your-writes without a write
        transaction per read; heartbeats are the background loop's business)."""
        with self._flush_lock:  # also waits for a batch the background thread is writing
            batch = self._drain()
            if any(batch):
                self._write(batch)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush(check=False)  # each conflict was logged when found

    def take_unwritten(self) -> tuple[Batch, list[Callable[[Connection], None]]]:
        """Hand over, and forget, what is not written: the kept and buffered rows, and the kept ``then``s (a
        run's end: `TrackingStore.end_run`), to keep them somewhere other than the database."""
        with self._flush_lock:
            batch, thens = self._drain(), self._retry_then
            self._retry_then = []
        return batch, thens

    def write_now(self, batch: Batch, thens: Sequence[Callable[[Connection], None]] = ()) -> None:
        """Write `batch` and run `thens` in one transaction, on the caller's thread: all of it or, on any
        error (raised), none of it. Nothing is kept for a retry: the caller still holds the rows."""
        with self._flush_lock:
            self._write_once(batch, thens)

    def give_back(self, batch: Batch, thens: Sequence[Callable[[Connection], None]] = ()) -> None:
        """Take back what `take_unwritten` handed out (keeping it elsewhere failed): first in line again."""
        with self._flush_lock:
            self._retry = _untagged([*_tagged(batch), *(_tagged(self._retry) if self._retry else [])])
            self._retry_then = [*thens, *self._retry_then]

    def unwritten(self) -> tuple[int, int]:
        """The rows (kept from a failed write, and buffered since) and the run ends not written yet."""
        retry = sum(len(rows) for rows in self._retry) if self._retry is not None else 0
        return retry + self.pending(), len(self._retry_then)

    def _forget_parent(self) -> None:
        """In a forked child: the buffered rows are the parent's to write (writing them here too would
        store every point twice), and its thread and a lock that thread may have held did not come along."""
        for rows in (self.metrics, self.params, self.tags, self.artifacts):
            rows.clear()
        self.conflicts = []
        self._retry = None
        self._retry_then = []
        self._flush_lock = threading.Lock()
        self._wake, self._closed = threading.Event(), threading.Event()
        self._thread = None

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush(check=False)  # raised on the caller's thread, at its next flush or end of run
                self.last_error = None
            except Exception as exc:  # keep the thread alive; rows are kept for retry
                if self.last_error is None:
                    _logger().warning("loopstack could not write tracking data, will retry: %s", exc)
                self.last_error = exc
                time.sleep(min(self.flush_interval_s, 1.0))

    def _drain(self) -> Batch:
        batch: Batch = ([], [], [], []) if self._retry is None else self._retry
        self._retry = None
        for source, target in zip((self.metrics, self.params, self.tags, self.artifacts), batch, strict=True):
            for _ in range(len(source)):
                target.append(source.popleft())  # type: ignore[arg-type]
        return batch

    def _write(self, batch: Batch, thens: Sequence[Callable[[Connection], None]] = ()) -> None:
        try:
            try:
                self._write_once(batch, thens, hooks=self.before_write)
            except BaseException as error:
                if is_transient(error):
                    self._retry = batch
                    raise
                self._write_around_bad_rows(batch)
                if thens:
                    self._write_once(([], [], [], []), thens)
        except BaseException as error:
            if thens and is_transient(error):
                self._retry_then = [*thens, *self._retry_then]  # written with the next attempt, as the rows are
            raise

    def _write_once(
        self, batch: Batch, thens: Sequence[Callable[[Connection], None]] = (), hooks: list[Any] | None = None
    ) -> None:
        """The batch in one transaction: all of it or, on any error, none of it."""
        metrics, params, tags, artifacts = batch
        with self.db.direct_write() as connection:
            for hook in hooks or ():
                hook(connection)
            conflicts = _write_params(self.db, connection, params)
            if conflicts and self.on_conflict is not None:
                self.on_conflict(connection, conflicts)
            _write_tags(self.db, connection, tags)
            _write_metrics(self.db, connection, metrics, self._metrics_insert)
            _write_artifacts(self.db, connection, artifacts)
            for then in thens:
                then(connection)
        for run_id, key, kept, dropped in conflicts:  # committed: told once, however often the batch was tried
            _logger().warning("loopstack dropped param %r = %r of run %s: another process had already stored %r, "
                              "and params are immutable", key, dropped, run_id, kept)
        self.conflicts.extend(conflicts)

    def _write_around_bad_rows(self, batch: Batch) -> None:
        """Write the rows of a batch that failed for good, in halves until each bad row fails alone; drop
        those and keep the others in their order. The rows go first without the hooks and `then` (either may
        have been the cause; the hooks run again with the next batch). A transient failure on the way keeps
        the rows not yet written for the next attempt."""
        pending = [_tagged(batch)]  # a stack: the last part is written next
        while pending:
            rows = pending.pop()
            try:
                self._write_once(_untagged(rows))
                continue
            except BaseException as error:
                if is_transient(error):
                    self._retry = _untagged([*rows, *itertools.chain.from_iterable(reversed(pending))])
                    raise
                failure = error
            if len(rows) == 1:
                self._drop(rows[0], failure)
            else:
                middle = len(rows) // 2
                pending += [rows[middle:], rows[:middle]]

    def _drop(self, tagged: Tagged, error: BaseException) -> None:
        """Give up on a row that the database refuses for good, saying which and why."""
        table, row = TABLES[tagged[0]], tagged[1]
        _logger().error("loopstack dropped %s, which the metadata database refused: %s", _describe(table, row), error)
        if self.on_drop is not None:
            try:
                self.on_drop(table, row, error)
            except Exception as exc:  # the row is gone either way; the log line above says so
                _logger().error("loopstack could not record the dropped row: %s", exc)


_writers: weakref.WeakSet[BufferedWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._forget_parent()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _logger() -> logging.Logger:
    import logging  # here: a process that never fails a write does not import it

    return logging.getLogger("loopstack.tracking")


def is_transient(error: BaseException) -> bool:
    """Whether `error` is the database's (unreachable, locked, busy, interrupted) rather than the rows'.

    A constraint violation, a value the database or its driver refuses, is the
    rows' and fails every attempt; anything else is retried with every row kept.
    """
    if isinstance(error, (ValueError, TypeError, OverflowError)):  # the driver could not bind a value
        return False
    if "sqlalchemy" not in type(error).__module__:
        return True
    from sqlalchemy.exc import DataError, IntegrityError

    return not isinstance(error, (DataError, IntegrityError))


def _tagged(batch: Batch) -> list[Tagged]:
    return [(index, row) for index, rows in enumerate(batch) for row in rows]


def _untagged(rows: list[Tagged]) -> Batch:
    batch: Batch = ([], [], [], [])
    for index, row in rows:
        batch[index].append(row)  # type: ignore[arg-type]
    return batch


def _describe(table: str, row: tuple[Any, ...]) -> str:
    """The row as a person looks for it: its run, its key (an artifact's path) and its value."""
    if table == "metrics":
        return f"metric {row[1]!r} = {row[2]!r} at step {row[3]} of run {row[0]}"
    if table == "artifacts":
        return f"artifact {row[1]!r} (digest {row[2]!r}) of run {row[0]}"
    return f"{table[:-1]} {row[1]!r} = {row[2]!r} of run {row[0]}"


def _write_params(db: MetadataDB, connection: Connection, rows: list[TagRow]) -> list[ParamConflict]:
    """Insert params, keeping a stored value; the rows whose (run, key) holds another value once written."""
    if not rows:
        return []
    records = [{"run_id": r, "key": k, "value": v} for r, k, v in rows]
    db.upsert(connection, "params", records, keys=("run_id", "key"), update=(), sqlite=_SQLITE_PARAMS)
    runs, keys = sorted({r for r, _, _ in rows}), sorted({k for _, k, _ in rows})
    if db.raw is not None:  # the writer's connection is the driver's (see core.db.direct_write)
        marks = ", ".join("?" * len(runs)), ", ".join("?" * len(keys))
        found = connection.fetchall(  # type: ignore[attr-defined]
            f'SELECT run_id, "key", value FROM params WHERE run_id IN ({marks[0]}) AND "key" IN ({marks[1]})',
            (*runs, *keys))
    else:
        from sqlalchemy import select

        table = db.table("params")
        found = connection.execute(select(table.c.run_id, table.c.key, table.c.value).where(
            table.c.run_id.in_(runs), table.c.key.in_(keys))).all()
    stored = {(r, k): v for r, k, v in found}
    conflicts: list[ParamConflict] = []
    for r, k, v in rows:
        kept = stored.get((r, k), v)
        if kept != v and (r, k, kept, v) not in conflicts:
            conflicts.append((r, k, kept, v))
    return conflicts


def raise_conflicts(conflicts: list[ParamConflict]) -> None:
    """Raise ConflictError naming each param whose value another process had stored first, if any."""
    if not conflicts:
        return
    from loopstack.core.errors import ConflictError

    lines = [f"param {k!r} of run {r}: {dropped!r} was dropped, {kept!r} is stored"
             for r, k, kept, dropped in conflicts]
    raise ConflictError(
        "another process logged these params of the same run first, with other values; params are immutable, "
        "so the stored values were kept (see the run.value_dropped events): " + "; ".join(lines)
    )


def _write_tags(db: MetadataDB, connection: Connection, rows: list[TagRow]) -> None:
    latest: dict[tuple[str, str], str] = {(r, k): v for r, k, v in rows}
    records = [{"run_id": r, "key": k, "value": v} for (r, k), v in latest.items()]
    db.upsert(connection, "tags", records, keys=("run_id", "key"), update=("value",), sqlite=_SQLITE_TAGS)


def _write_artifacts(db: MetadataDB, connection: Connection, rows: list[ArtifactRow]) -> None:
    records = [{"run_id": r, "path": p, "digest": d, "size": n, "kind": k} for r, p, d, n, k in rows]
    update = ("digest", "size", "kind")
    db.upsert(connection, "artifacts", records, keys=("run_id", "path"), update=update, sqlite=_SQLITE_ARTIFACTS)


def _write_metrics(db: MetadataDB, connection: Connection, rows: list[MetricRow], insert: DirectStatement) -> None:
    if not rows:
        return
    records = [
        {"run_id": r, "key": k, "value": None if math.isnan(v) else v, "step": s, "timestamp": t}
        for r, k, v, s, t in rows
    ]
    insert.execute_many(connection, records)
    db.upsert(
        connection,
        "latest_metrics",
        list(_latest(records).values()),
        keys=("run_id", "key"),
        update=("value", "step", "timestamp"),
        only_if=_is_newer,
        sqlite=_SQLITE_LATEST,
    )


def _latest(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest point per (run, key): highest step, then latest timestamp (MLflow's rule)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        key = (record["run_id"], record["key"])
        current = latest.get(key)
        if current is None or (record["step"], record["timestamp"]) >= (current["step"], current["timestamp"]):
            latest[key] = record
    return latest


def _is_newer(table: Any, excluded: Any) -> Any:
    from sqlalchemy import and_, or_

    return or_(
        excluded.step > table.c.step,
        and_(excluded.step == table.c.step, excluded.timestamp >= table.c.timestamp),
    )
