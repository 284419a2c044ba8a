"""The feature log: what was served, appended to Parquet segments off the request path.

A served request costs one queue append; a background thread groups rows by
log name (the feature service, or ``adhoc-<hash>`` for a plain feature list)
and writes a Parquet segment when enough rows wait or a second has passed.
Each segment carries the feature references and join keys in its schema
metadata, so the skew check can recompute it without any other state.
Segments (and compacted files) are written to a temporary name, synced to
disk, renamed into place and the folder synced, so an OS crash leaves a
whole file or none; a segment that cannot be read all the same (empty,
truncated) is skipped by readers and compaction, with a warning naming it,
instead of failing every read of the log.

Examples
--------
>>> import tempfile, pathlib
>>> log = FeatureLogger(pathlib.Path(tempfile.mkdtemp()))
>>> log.log("ranker", "req-1", 0, {"driver_id": [7]}, {"conv_rate": [0.5]},
...         {"features": ["driver_stats:conv_rate"], "columns": ["conv_rate"], "join_keys": ["driver_id"]})
>>> log.flush()
>>> log.read("ranker").column("conv_rate").to_pylist()
[0.5]
>>> log.close()
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from loopstack.core.errors import LoopstackError, NotFoundError
from loopstack.core.paths import write_parquet_durably

logger = logging.getLogger("loopstack.features")
REQUEST_ID, REQUEST_TIME, ROW = "request_id", "request_time", "row_in_request"


class FeatureLogger:
    """Buffers served rows and writes them as Parquet segments under `folder/<name>/`."""

    def __init__(self, folder: Path, flush_rows: int = 10_000, flush_interval_s: float = 1.0) -> None:
        self.folder = folder
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="loopstack-feature-log", daemon=True)
        self._closed = False
        self._thread.start()
        atexit.register(self.close)

    def log(self, name: str, request_id: str, request_us: int, entities: dict[str, list[Any]],
            values: dict[str, list[Any]], meta: dict[str, Any]) -> None:
        """Queue one served request (returns at once)."""
        self._queue.put((name, request_id, request_us, entities, values, meta))

    def flush(self) -> None:
        """Write everything queued so far and wait until it is on disk."""
        if self._closed:
            return
        done = threading.Event()
        self._queue.put(done)
        while not done.wait(0.1):
            if not self._thread.is_alive():
                raise LoopstackError(f"the feature log writer for {self.folder} has stopped; queued rows are not "
                                     "on disk (its traceback was printed when it stopped)")

    def close(self) -> None:
        if self._closed:
            return
        if self._thread.is_alive():
            self.flush()
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        atexit.unregister(self.close)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_dir()) if self.folder.exists() else []

    def segments(self, name: str) -> list[Path]:
        """The log's Parquet files in write order, less any segment a compacted file already holds."""
        files = sorted((self.folder / name).glob("*.parquet"))
        merged = _merged_away(files)
        return [f for f in files if f.name not in merged]

    def compact(self, name: str, older_than_s: float = 60.0) -> int:
        """Merge runs of segments older than `older_than_s` into one file each; returns the segments merged.

        A run is consecutive segments logged with the same features; a merged
        file takes the place of its run in write order and names its sources.
        It is in place before they are deleted, so a crash in between leaves
        sources that readers skip and the next compaction deletes: no row is
        lost or read twice.
        """
        folder = self.folder / name
        if not folder.is_dir():
            raise NotFoundError(f"no feature log {name!r} in {self.folder}; logs: {self.names()}")
        with (folder / ".compact.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two compactions of one log would merge the same run twice
            return self._compact(folder, older_than_s)

    def _compact(self, folder: Path, older_than_s: float) -> int:
        import pyarrow.parquet as pq

        files = sorted(folder.glob("*.parquet"))
        merged = _merged_away(files)
        for leftover in (f for f in files if f.name in merged):
            leftover.unlink(missing_ok=True)
        _remove_debris(folder)
        cutoff = time.time() - older_than_s
        runs: list[list[tuple[Path, Any]]] = [[]]
        for path in (f for f in files if f.name not in merged):
            if path.name.endswith(_COMPACTED) or path.stat().st_mtime > cutoff:  # stays as it is
                runs.append([])
                continue
            schema = _read_segment(path, pq.read_schema)
            if schema is None:  # left as it is: readers skip it too
                runs.append([])
                continue
            meta = schema.metadata or {}
            if runs[-1] and meta.get(_FEATURES) != runs[-1][-1][1].get(_FEATURES):
                runs.append([])
            runs[-1].append((path, meta))
        count = 0
        for run in (r for r in runs if len(r) > 1):
            sources = [path for path, _ in run]
            table = _concat(sources)
            metadata = {**(table.schema.metadata or {}), _SOURCES: json.dumps([p.name for p in sources]).encode()}
            target = sources[-1].with_name(sources[-1].stem + _COMPACTED)
            _write_durably(table.replace_schema_metadata(metadata), target)  # on disk before its sources go
            for source in sources:
                source.unlink()
            count += len(sources)
        return count

    def read(self, name: str) -> Any:
        """Every logged row under `name` as one Arrow table (schema metadata of the latest segment).

        A compaction may delete segments this listed before it opens them; their merged file is
        in place by then, so listing again finds every row once.
        """
        for attempt in range(_READ_ATTEMPTS):
            files = self.segments(name)
            if not files:
                raise NotFoundError(f"no feature log {name!r} in {self.folder}; logs: {self.names()}")
            try:
                table = _concat(files)
                if table is None:
                    raise NotFoundError(f"feature log {name!r} in {self.folder} has no readable segment "
                                        f"({len(files)} unreadable, named in the warnings)")
                return table
            except FileNotFoundError:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        pending: dict[str, list[Any]] = {}
        count = 0
        deadline = time.monotonic() + self.flush_interval_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                item = False
            if item is None:
                self._write_all(pending)
                return
            if isinstance(item, threading.Event):
                self._write_all(pending)
                count = 0
                item.set()
                continue
            if item is not False:
                pending.setdefault(item[0], []).append(item)
                count += len(next(iter(item[3].values()), []))
            if count >= self.flush_rows or time.monotonic() >= deadline:
                self._write_all(pending)
                count = 0
                deadline = time.monotonic() + self.flush_interval_s

    def _write_all(self, pending: dict[str, list[Any]]) -> None:
        for name, items in pending.items():
            if items:
                try:
                    self._write(name, items)
                except Exception as exc:  # a failed segment must not kill the writer or the server
                    # logged, not warned: under warnings-as-errors a warning raised here ended the thread, and
                    # every later flush (and close, at exit) then waited for it forever
                    logger.error("feature log %r: could not write a segment of %d requests: %s", name, len(items),
                                 exc)
        pending.clear()

    def _write(self, name: str, items: list[Any]) -> None:
        import pyarrow as pa

        meta = items[-1][5]
        names = list(dict.fromkeys(column for item in items for column in (*item[3], *item[4])))
        columns: dict[str, list[Any]] = {REQUEST_ID: [], REQUEST_TIME: [], ROW: [], **{c: [] for c in names}}
        for _, request_id, request_us, entities, values, _ in items:
            rows = len(next(iter(entities.values()), []))
            columns[REQUEST_ID].extend([request_id] * rows)
            columns[REQUEST_TIME].extend([request_us] * rows)
            columns[ROW].extend(range(rows))
            sent = {**entities, **values}
            for column in names:  # a column some requests did not send is null for their rows
                columns[column].extend(sent.get(column, [None] * rows))
        arrays = {k: _array(v) for k, v in columns.items()}
        arrays[REQUEST_TIME] = pa.array(columns[REQUEST_TIME], pa.int64()).cast(pa.timestamp("us"))
        table = pa.table(arrays).replace_schema_metadata({"loopstack.features": json.dumps(meta)})
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        _write_durably(table, folder / f"segment-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet")


_FEATURES, _SOURCES = b"loopstack.features", b"loopstack.compacted_from"
_COMPACTED = "-compacted.parquet"  # sorts after the run's other segments, before the next one
_READ_ATTEMPTS = 5
_WRITE_DEBRIS_AGE_S = 3600  # a segment still being written is seconds old; one an hour old was abandoned


def _write_durably(table: Any, path: Path) -> None:
    """`table` at `path` whole or not at all, after an OS crash too; the ``.tmp`` name beside it is what
    `_remove_debris` knows to clean up after a killed writer."""
    write_parquet_durably(table, path, temporary=path.with_suffix(".tmp"))


def _read_segment(path: Path, read: Any) -> Any:
    """`read(path)`, or None with a warning naming the file when it is no readable Parquet file (empty or
    truncated by a crash): one such file must not fail every read of the log. A file deleted meanwhile (a
    compaction) still raises FileNotFoundError, for the caller to list again."""
    import pyarrow as pa

    try:
        return read(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        logger.warning("feature log segment %s cannot be read and is skipped: %s", path, exc)
        return None


def _remove_debris(folder: Path) -> None:
    """Delete half-written files a killed process left: a compaction's at once (the caller holds the
    compaction lock, so none is in progress), a writer's once it is an hour old."""
    now = time.time()
    for temporary in folder.glob("*.tmp"):
        try:
            if temporary.name.endswith("-compacted.tmp") or now - temporary.stat().st_mtime > _WRITE_DEBRIS_AGE_S:
                temporary.unlink()
        except FileNotFoundError:  # renamed into place meanwhile by its writer
            pass


def _array(values: list[Any]) -> Any:
    """One logged column; values of types that share no Arrow type are kept as text.

    Serving accepts a key sent as 1 by one client and as "1" by another (both
    find the same record); one such pair must not cost every row of a segment.
    """
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _concat(files: list[Path]) -> Any:
    """The rows of `files` in order, with the schema metadata (features, join keys) of the last readable one;
    None when none is readable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [t for t in (_read_segment(f, pq.read_table) for f in files) if t is not None]
    if not tables:
        return None
    try:
        merged = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column logged as numbers in one segment, text in another
        merged = pa.concat_tables(_as_text_where_types_differ(tables), promote_options="permissive")
    return merged.replace_schema_metadata(tables[-1].schema.metadata)


def _as_text_where_types_differ(tables: list[Any]) -> list[Any]:
    """`tables` with every column whose (non-null) type differs between them cast to text, as `_array` does."""
    import pyarrow as pa

    kinds: dict[str, set[Any]] = {}
    for table in tables:
        for column in table.schema:
            if not pa.types.is_null(column.type):
                kinds.setdefault(column.name, set()).add(column.type)
    mixed = {name for name, types in kinds.items() if len(types) > 1}
    return [table.cast(pa.schema([pa.field(f.name, pa.string()) if f.name in mixed else f for f in table.schema],
                                 table.schema.metadata)) for table in tables]


def _merged_away(files: list[Path]) -> set[str]:
    """Names of the segments that compacted files among `files` already hold."""
    import pyarrow.parquet as pq

    names: set[str] = set()
    for path in (f for f in files if f.name.endswith(_COMPACTED)):
        schema = _read_segment(path, pq.read_schema)  # unreadable: its sources, if still there, are read instead
        if schema is not None:
            names.update(json.loads((schema.metadata or {}).get(_SOURCES, b"[]")))
    return names


def log_meta(table: Any) -> dict[str, Any]:
    """The feature references and join keys stored with a log."""
    raw = (table.schema.metadata or {}).get(b"loopstack.features")
    return json.loads(raw) if raw else {}


__all__ = ["FeatureLogger", "log_meta"]
