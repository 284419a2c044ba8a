"""The prediction log: every prediction as a Parquet row, written off the request path.

The batching loop hands each finished batch to `PredictionLog.observe`, which
only appends it to an in-memory queue. A background thread turns queued
batches into Arrow tables and writes one Parquet segment per model version
(per variant of an endpoint, whose variants share its name and may share a
version number) every ``flush_s`` seconds (or sooner when ``segment_rows``
pile up). Segments are written to a temporary name and renamed, so a reader
never sees half a file. Layout::

    <root>/predictions/<model>/<version>/<time>-<seq>.parquet
    <root>/feedback/<time>-<seq>.parquet

A row holds request_id, row (index in the request), time, model, version,
variant, latency_ms, ``inputs`` (a struct of the model's input fields) and
``outputs`` (a struct holding the output, named after the method). Feedback
rows (request_id, time, label as JSON, label_value as a float when numeric)
join to predictions on request_id for delayed-label monitoring.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.core.paths import write_parquet_durably
from loopstack.serving.inputs import columns_of, concat

if TYPE_CHECKING:
    import pyarrow as pa

    from loopstack.serving.batcher import Batch

_seq = itertools.count()
RETRY_ROWS = 100_000  # per model version (and for feedback) kept for the next flush after a failed write
logger = logging.getLogger("loopstack.serving")


class PredictionLog:
    """Append predictions and feedback to Parquet segments from a background thread.

    Examples
    --------
    >>> import tempfile
    >>> log = PredictionLog(tempfile.mkdtemp())
    >>> log.feedback([{"request_id": "r1", "label": 1}])
    1
    >>> log.close()
    >>> read_feedback(log.root).column("label_value").to_pylist()
    [1.0]
    """

    def __init__(self, root: str | os.PathLike[str], flush_s: float = 1.0, segment_rows: int = 50_000) -> None:
        self.root = Path(root)
        self.flush_s = flush_s
        self.segment_rows = segment_rows
        self.rows_written = 0
        self._pending: deque[Batch] = deque()
        self._pending_rows = 0
        self._feedback: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()  # one writer at a time (thread or flush())
        self._thread = threading.Thread(target=self._loop, name="loopstack-prediction-log", daemon=True)
        self._thread.start()

    # -- producers (event loop) ------------------------------------------------------------
    def observe(self, batch: Batch) -> None:
        """Queue a finished batch; costs one append on the request path."""
        self._pending.append(batch)
        self._pending_rows += batch.outputs.shape[0]
        if self._pending_rows >= self.segment_rows:
            self._wake.set()

    def feedback(self, records: list[dict[str, Any]]) -> int:
        """Queue outcomes or labels by request id; returns how many were accepted."""
        now = time.time()
        checked = [_feedback_row(r, i, now) for i, r in enumerate(records)]
        self._feedback.extend(checked)
        return len(checked)

    # -- writer ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # keep logging later batches; this one is reported, not retried
                logger.exception("prediction log: writing a segment failed")

    def flush(self) -> None:
        """Write everything queued so far (called by the thread, and on close).

        Each model version's segment, and the feedback, is written on its own: one that fails to
        write (a full disk, a folder turned read-only) keeps its rows for the next flush (the
        newest ``RETRY_ROWS`` of them), and costs the others nothing.
        """
        with self._lock:
            batches = _drain(self._pending)
            self._pending_rows = 0
            feedback = _drain(self._feedback)
            groups: dict[int, list[Batch]] = defaultdict(list)
            for batch in batches:  # by adapter, not by name and version: an endpoint's variants share both
                groups[id(batch.adapter)].append(batch)
            for group in groups.values():
                self._write_predictions(group[0].adapter.name, group[0].adapter.version, group)
            if feedback:
                self._write_feedback(feedback)

    def _write_predictions(self, model: str, version: str, group: list[Batch]) -> None:
        try:
            table = predictions_table(group)
        except Exception:  # one bad batch: convert them one by one, so only the bad ones are lost
            table, group = _convert_each(model, version, group)
            if table is None:
                return
        try:
            self._write(table, self.root / "predictions" / model / version)
        except OSError:
            kept = _newest(group, lambda batch: batch.outputs.shape[0])
            logger.exception("prediction log: writing %s/%s failed; %d of its batches are kept for the next flush",
                             model, version, len(kept))
            self._pending.extendleft(reversed(kept))  # older than what queued meanwhile: first again
            self._pending_rows += sum(batch.outputs.shape[0] for batch in kept)
            return
        self.rows_written += table.num_rows

    def _write_feedback(self, feedback: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        try:
            self._write(pa.Table.from_pylist(feedback, schema=_feedback_schema()), self.root / "feedback")
        except OSError:
            kept = _newest(feedback, lambda _: 1)
            logger.exception("prediction log: writing feedback failed; %d rows are kept for the next flush", len(kept))
            self._feedback.extendleft(reversed(kept))

    def _write(self, table: pa.Table, folder: Path) -> None:

        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{os.getpid()}-{next(_seq):06d}.parquet"
        write_parquet_durably(table, folder / name, use_dictionary=_dictionary_columns(table.schema))

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()


def _convert_each(model: str, version: str, group: list[Batch]) -> tuple[pa.Table | None, list[Batch]]:
    """The batches of `group` that convert, as one table (None when none does), and those batches.

    Each batch that fails is dropped with a warning naming its requests: converting it again would fail
    again, and keeping it would cost the rest of its flush window.
    """
    import pyarrow as pa

    tables, kept = [], []
    for batch in group:
        try:
            tables.append(predictions_table([batch]))
        except Exception as error:
            logger.warning("prediction log: a batch of %s/%s could not be converted (%s: %s); dropped its "
                           "requests %s", model, version, type(error).__name__, error,
                           [item.request_id for item in batch.items])
        else:
            kept.append(batch)
    if not tables:
        return None, kept
    return pa.concat_tables(tables, promote_options="permissive"), kept


def _newest(items: list[Any], rows: Callable[[Any], int]) -> list[Any]:
    """The newest of `items` holding at most `RETRY_ROWS` rows in all (at least the newest one)."""
    kept, total = [], 0
    for item in reversed(items):
        total += rows(item)
        if kept and total > RETRY_ROWS:
            break
        kept.append(item)
    return kept[::-1]


def predictions_table(batches: list[Batch]) -> pa.Table:
    """One Arrow table from batches of one adapter, without the requests answered 504.

    One adapter, not one name and version: the input fields and the output are named from the first
    batch's schema, and two variants of an endpoint (fraud/1 and fraud-xgb/1) share its name and a version.

    Built column-wise in Arrow and NumPy: the writer thread holds the GIL while it runs Python, and
    each stretch of that is a pause for the event loop answering requests.
    """
    import pyarrow as pa

    adapter = batches[0].adapter
    items = [item for b in batches for item in b.items]
    counts = np.fromiter((item.n for item in items), np.int64, len(items))
    arrival = np.fromiter((item.arrival for item in items), np.float64, len(items))
    per_batch = np.fromiter((len(b.items) for b in batches), np.int64, len(batches))
    finished = np.repeat(np.fromiter((b.finished for b in batches), np.float64, len(batches)), per_batch)
    times = np.repeat(np.fromiter((b.wall_time for b in batches), np.float64, len(batches)), per_batch)
    rows = concat([b.rows for b in batches])
    outputs = np.concatenate([b.outputs for b in batches])
    inputs = columns_of(rows, adapter.schema)
    n = int(counts.sum())
    to_rows = None if (counts == 1).all() else pa.array(np.repeat(np.arange(len(items)), counts))

    def per_row(values: Any, type: pa.DataType) -> pa.Array:
        array = pa.array(values, type)
        return array if to_rows is None else array.take(to_rows)

    table = pa.table({
        "request_id": per_row([i.request_id for i in items], pa.string()),
        "row": pa.array(np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts), pa.int32()),
        "time": per_row((times * 1e6).astype("int64"), pa.timestamp("us", tz="UTC")),
        "model": pa.repeat(pa.scalar(adapter.name, pa.string()), n),
        "version": pa.repeat(pa.scalar(adapter.version, pa.string()), n),
        "variant": per_row([i.variant or adapter.variant for i in items], pa.string()),
        "latency_ms": per_row((finished - arrival) * 1e3, pa.float64()),
        "inputs": pa.StructArray.from_arrays([_input_array(v) for v in inputs.values()], list(inputs)),
        "outputs": pa.StructArray.from_arrays([_output_array(outputs)], [adapter.method]),
    })
    if not any(b.timed_out for b in batches):
        return table
    # a request answered 504 got no prediction: the log holds what clients were answered, nothing else
    answered = np.ones(len(items), dtype=bool)
    start = 0
    for b in batches:
        answered[[start + i for i in b.timed_out]] = False
        start += len(b.items)
    return table.filter(pa.array(np.repeat(answered, counts)))


def read_prediction_log(root: str | os.PathLike[str], model: str | None = None) -> pa.Table:
    """All logged predictions (of one model, when given) as one Arrow table.

    Versions whose inputs differ are unified: a field missing in a version is null there.
    """
    logged = Path(root) / "predictions"
    folder = logged if model is None else logged / model
    files = prediction_segments(root, model)
    if not files and model is not None and not folder.is_dir():
        models = sorted(p.name for p in logged.glob("*") if p.is_dir()) if logged.is_dir() else []
        if models:  # a misspelt model waited "a second after serving" for predictions that never come
            raise ValidationError(f"no predictions under {folder}: the log holds no model {model!r}; "
                                  f"it holds {models}")
    return _read(files, what=f"predictions under {folder}")


def read_feedback(root: str | os.PathLike[str]) -> pa.Table:
    """All feedback rows as one Arrow table."""
    return _read(feedback_segments(root), what="feedback", schema=_feedback_schema())


def prediction_segments(root: str | os.PathLike[str], model: str | None = None) -> list[Path]:
    """The prediction log's segment files (of one model, when given), in write-time order.

    A segment's name starts with the nanosecond time it was written, so later segments come later
    whatever their version folder is called (in path order, version "10" would sort before "9").

    A segment is written whole under a temporary name and renamed into place, and nothing writes
    to it again: a reader may keep what it read of one. `read_prediction_log` unifies their
    schemas permissively (as ``pa.concat_tables(..., promote_options="permissive")`` does).
    """
    folder = Path(root) / "predictions"
    return sorted((folder if model is None else folder / model).glob("**/*.parquet"), key=lambda p: (p.name, p))


def feedback_segments(root: str | os.PathLike[str]) -> list[Path]:
    """The feedback log's segment files in name (write-time) order; written once, like prediction segments."""
    return sorted((Path(root) / "feedback").glob("*.parquet"))


def read_feedback_segment(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """One feedback segment in the feedback schema, as `read_feedback` reads it (only `columns`, when given)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, schema=_feedback_schema(), columns=columns)


def _read(files: list[Path], what: str, schema: pa.Schema | None = None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if not files:
        if schema is not None:
            return schema.empty_table()
        raise ValidationError(f"no {what} yet; they are written about a second after serving")
    readable, schemas = [], []
    for path in files:
        try:
            schemas.append(pq.read_schema(path))
        except (OSError, pa.ArrowException) as error:  # cut short by a crash of an older writer, say
            logger.warning("prediction log: skipping the unreadable segment %s (%s)", path, error)
            continue
        readable.append(str(path))
    if not readable:
        if schema is not None:
            return schema.empty_table()
        raise ValidationError(f"no {what} readable: every segment failed to read (see the warnings)")
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    return ds.dataset(readable, schema=unified, format="parquet").to_table()


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The string columns, top-level or in a struct (``inputs.city``): the ones that repeat.

    Parquet's default tries a dictionary for every column and falls back page by page, which on
    request ids and float features tripled the writer's CPU for a larger file.
    """
    import pyarrow as pa

    names = []
    for field in schema:
        children = [field.type.field(i) for i in range(field.type.num_fields)] if pa.types.is_struct(field.type) else []
        names.extend(f"{field.name}.{child.name}" for child in children if _is_text(child.type))
        if _is_text(field.type) and field.name != "request_id":
            names.append(field.name)
    return names


def _is_text(type_: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _input_array(values: np.ndarray) -> pa.Array:
    """An input column in Arrow: a column of objects is a string field, whatever its values (all null, say),
    so every segment of a version has one schema and a stray non-string fails its own batch, not a read."""
    import pyarrow as pa

    return pa.array(values, pa.string() if values.dtype.kind == "O" else None)


def _output_array(outputs: np.ndarray) -> pa.Array:
    import pyarrow as pa

    if outputs.ndim == 1:
        return pa.array(outputs)
    width = int(np.prod(outputs.shape[1:]))
    flat = pa.array(outputs.reshape(-1))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, max(1, width)), pa.int32()), flat)


def _feedback_row(record: Any, index: int, now: float) -> dict[str, Any]:
    if not isinstance(record, dict) or not isinstance(record.get("request_id"), str) or not record["request_id"]:
        raise ValidationError(f"feedback[{index}] needs a non-empty string 'request_id', got {record!r:.80}")
    key = next((k for k in ("label", "outcome", "value") if k in record), None)
    if key is None:
        raise ValidationError(f"feedback[{index}] needs a 'label' (or 'outcome') for request {record['request_id']!r}")
    model = record.get("model")
    if model is not None and not isinstance(model, str):  # checked here: the writer would drop the whole batch
        raise ValidationError(f"feedback[{index}] 'model' must be the model's name as a string, got {model!r:.80}")
    label = record[key]
    number = _label_number(label)
    if number is not None and not math.isfinite(number):
        raise ValidationError(f"feedback[{index}] label {label!r:.80} for request {record['request_id']!r} is not a "
                              "finite number; send a number, or a string for a label that is not one")
    return {
        "request_id": record["request_id"],
        "time": int(now * 1e6),
        "model": model,
        "label": json.dumps(label),
        "label_value": number,
    }


def _label_number(label: Any) -> float | None:
    """The label as a float when it is a number (booleans count as 0/1); inf when too large for one."""
    if not isinstance(label, int | float):
        return None
    try:
        return float(label)
    except OverflowError:  # a whole number of hundreds of digits, as JSON allows
        return math.inf


def _feedback_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("request_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("label", pa.string()),
        ("label_value", pa.float64()),
    ])


def _drain(queue: deque[Any]) -> list[Any]:
    out = []
    while queue:
        out.append(queue.popleft())
    return out
