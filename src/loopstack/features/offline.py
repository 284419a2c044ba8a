"""Point-in-time joins: the training frame a model would have seen at each moment.

For each entity row and each feature view, the answer is the feature row with
the same join keys whose event timestamp is the latest one at or before the
entity timestamp, and at most `ttl` older (inclusive: a row exactly ttl old
counts). Ties on the event timestamp go to the larger created timestamp; a
full tie (same event and created timestamp) to the last row in source order,
on both plans and in materialization alike.
Every entity row comes back, in order, duplicates included; a row with no
valid feature row gets nulls.

Sources are read as they lie (Parquet, CSV or Arrow, never copied) and
times compared as integer microseconds (UTC). Two plans, both exact:

- the default: the view's rows (keys, times, features) are read once, a
  sort and a binary search (``asof.latest_rows``) pick each entity row's
  source row, and the features of just those rows are gathered. A single
  Parquet file is read by Arrow, only the row groups whose event-time
  statistics overlap the entity times (minus the ttl); anything else is read
  through DuckDB. Its work is a sort of the view's rows, whatever the ttl.
- ``as_of_known_time``: a hash join on the join keys filtered to the window
  ``[t - ttl, t]`` and to ``created <= t``, then per entity row ``arg_max``
  over (event time, created time). The extra condition means the latest row
  by event time may not be the answer, so the sort plan cannot serve it; its
  work grows with the rows inside the window (without a ttl, with all the
  entity's rows), which is why it is opt-in. It also serves views whose
  source holds more than ``SORT_PLAN_MAX_ROWS`` rows, since DuckDB can spill to
  disk where the sort plan holds the rows in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.features.catalog import Catalog, FeatureRequest
from loopstack.features.definitions import FeatureView
from loopstack.features.engine import Session, quote
from loopstack.features.sources import FileSource, PushSource, Source, SqlSource, TableSource
from loopstack.features.timeutil import sql_timestamp, ttl_us
from loopstack.features.types import KEY_TYPES

INTEGER_KEY_TYPES = KEY_TYPES - {"VARCHAR"}

ROW, TS = "__row", "__ts"


def spine(entity: Any, timestamp_field: str, keys: list[str]) -> Any:
    """The slim entity frame DuckDB joins on: row number, UTC time in microseconds, join keys."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if timestamp_field not in entity.column_names:
        raise ValidationError(
            f"the entity frame has no timestamp column {timestamp_field!r} (columns: {entity.column_names}); "
            "add one or pass timestamp_field="
        )
    missing = [k for k in keys if k not in entity.column_names]
    if missing:
        raise ValidationError(
            f"the entity frame lacks join key(s) {missing} that the requested views need "
            f"(columns: {entity.column_names}); add them"
        )
    ts = entity.column(timestamp_field)
    if pa.types.is_date(ts.type):
        ts = ts.cast(pa.timestamp("us"))
    if not pa.types.is_timestamp(ts.type):
        raise ValidationError(
            f"entity frame column {timestamp_field!r} is {ts.type}, not a timestamp; convert it "
            "(pandas: pd.to_datetime(df[col], utc=True))"
        )
    # An aware timestamp holds UTC instants; dropping the zone keeps them, naive ones are taken as UTC.
    ts = ts.cast(pa.timestamp(ts.type.unit))
    if ts.type.unit == "ns" and (pc.min(ts).value or 0) < 0:  # floored like the source's times; a cast
        ts = pc.floor_temporal(ts, unit="microsecond")  # truncates before 1970 (-1.5 µs to -1 µs)
    ts = ts.cast(pa.timestamp("us"), safe=False).cast(pa.int64())
    columns = {ROW: pa.array(np.arange(entity.num_rows, dtype=np.int64)), TS: ts}
    columns.update({k: entity.column(k) for k in keys})
    return pa.table(columns)


def historical(session: Session, catalog: Catalog, request: FeatureRequest, entity: Any, timestamp_field: str,
               as_of_known_time: bool = False) -> Any:
    """Feature columns (Arrow), one row per row of `entity`, in order.

    Views are joined concurrently, each on its own cursor: DuckDB, Arrow and
    NumPy's sorts and searches release the GIL, so two views take about as
    long as the slower one on two cores.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    views = [catalog.view(name) for name in request.views]
    keys = sorted({k for view in views for k in catalog.join_keys(view)})
    frame = spine(entity, timestamp_field, keys)
    bounds = pc.min_max(frame.column(TS)).as_py() if frame.num_rows else {"min": None, "max": None}

    def join(view: FeatureView, fork: bool) -> list[Any]:
        if not fork:
            return _view_columns(session, catalog, view, request.views[view.name], frame, bounds, as_of_known_time)
        with session.fork() as own:
            return _view_columns(own, catalog, view, request.views[view.name], frame, bounds, as_of_known_time)

    if len(views) > 1 and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=min(len(views), os.cpu_count() or 1)) as pool:
            results = list(pool.map(join, views, [True] * len(views)))
    else:
        results = [join(view, False) for view in views]
    columns: dict[str, Any] = {}
    for view, values in zip(views, results, strict=True):
        columns.update(zip((_slot(view.name, f) for f in request.views[view.name]), values, strict=True))
    return _outputs(request, pa.table(columns) if columns else pa.table({}), entity)


def _view_columns(session: Session, catalog: Catalog, view: FeatureView, features: list[str], frame: Any,
                  bounds: dict[str, Any], as_of_known_time: bool) -> list[Any]:
    """One view's feature columns in spine order."""
    name = session.register(frame)
    query = _ViewQuery.of(session, catalog, view, features, bounds)
    if as_of_known_time or _stored_rows(session, view.source) > SORT_PLAN_MAX_ROWS:
        windowed = query.windowed(name, frame.schema, as_of_known_time)
        return _in_spine_order(session.arrow(windowed), features, frame.num_rows)
    return _sort_merge(session, query, name, frame, bounds)


SORT_PLAN_MAX_ROWS = 50_000_000  # beyond this a view's rows stay in DuckDB, which can spill to disk


def _stored_rows(session: Session, source: Source) -> int:
    """How many rows the source holds, at most: the sort plan keeps a view's rows in memory.

    Parquet footers and Arrow tables say so exactly. A CSV file is estimated from its size and the
    line density of its first MiB, decompressed for a .gz (counting would parse it twice). A SQL query is counted by
    DuckDB, up to one row past the limit: that runs the query once more (free for a Parquet scan's
    row count, a second parse for CSV), so a huge source costs no more than the limit to reject.
    """
    if isinstance(source, PushSource):
        source = source.batch_source
    if isinstance(source, TableSource):
        return source.arrow().num_rows
    if isinstance(source, FileSource):
        files = source.files(session.root)
        if source.format(session.root) == "csv":
            return sum(_csv_rows(file) for file in files)
        import pyarrow.parquet as pq

        return sum(pq.read_metadata(file).num_rows for file in files)
    if isinstance(source, SqlSource):
        bounded = f"SELECT 1 FROM {session.sql(source)} LIMIT {SORT_PLAN_MAX_ROWS + 1}"
        return int(session.con.execute(f"SELECT count(*) FROM ({bounded})").fetchall()[0][0])
    return 0


def _csv_rows(path: Path, sample_bytes: int = 1 << 20) -> int:
    """Data rows of a CSV file: exact when it fits in the sample, else estimated from the sample's lines.

    A ``.gz`` file is sampled decompressed, and the estimate scaled by the compressed bytes that sample
    took: newlines counted in the compressed bytes are noise, hundreds of times too few.
    """
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        head, consumed = _gunzip_head(path, sample_bytes)
        whole = consumed >= size and len(head) < sample_bytes
    else:
        with open(path, "rb") as file:
            head = file.read(sample_bytes)
        consumed = len(head)
        whole = consumed >= size
    lines = head.count(b"\n")
    if whole:
        unterminated = bool(head) and not head.endswith(b"\n")
        return max(lines + unterminated - 1, 0)  # less the header
    return round(size * lines / consumed) if consumed else 0


def _gunzip_head(path: Path, sample_bytes: int) -> tuple[bytes, int]:
    """The first `sample_bytes` of a gzip file decompressed, and how many compressed bytes they took.

    Concatenated gzip members are read in turn; a damaged stream ends the sample where it breaks
    (DuckDB refuses the file when it reads it).
    """
    import zlib

    out = bytearray()
    consumed = 0
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # 32: expect a gzip header
    pending = b""
    with open(path, "rb") as file:
        while len(out) < sample_bytes:
            pending = pending or file.read(1 << 16)
            if not pending:
                break
            before = len(pending)
            try:
                out += inflater.decompress(pending, sample_bytes - len(out))
            except zlib.error:
                break
            pending = inflater.unconsumed_tail
            if inflater.eof:  # one member ended: the next starts in its unused data
                pending = inflater.unused_data + pending
                inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
            consumed += before - len(pending)
    return bytes(out), consumed


@dataclass
class _ViewQuery:
    """The SQL fragments of one view's retrieval: its filtered relation and its columns."""

    view: FeatureView
    features: list[str]
    keys: list[str]
    key_types: list[str]
    relation: str  # the source, filtered to the times any entity row can use
    times: str  # event and created time as integer microseconds: __ets, __cts
    values: str  # the features cast to their declared types
    ttl: int | None

    @classmethod
    def of(cls, session: Session, catalog: Catalog, view: FeatureView, features: list[str],
           bounds: dict[str, Any]) -> _ViewQuery:
        source = view.source
        columns = session.columns(source, f"feature view {view.name!r}")
        keys = catalog.join_keys(view)
        ttl = ttl_us(view.ttl)
        created = source.created_timestamp_field
        where = _time_filter(source.timestamp_field, columns, bounds, ttl)
        cts = f"coalesce({micros_sql(created, columns)}, {MIN_US})" if created else str(MIN_US)
        return cls(
            view=view, features=features, keys=keys, key_types=[columns.get(k, "VARCHAR") for k in keys],
            relation=f"{session.sql(source)} {where}",
            times=f"{micros_sql(source.timestamp_field, columns)} AS __ets, {cts} AS __cts",
            values=", ".join(f"CAST({quote(f)} AS {view.get_field(f).dtype.duckdb}) AS {quote(f)}" for f in features),
            ttl=ttl,
        )

    @property
    def key_list(self) -> str:
        """The join keys, named exactly as declared (DuckDB would keep the source's spelling)."""
        return ", ".join(f"{quote(k)} AS {quote(k)}" for k in self.keys)

    def spine_keys(self, spine_name: str, spine_schema: Any) -> str:
        """The entity frame's join keys as the source types; a value that does not convert matches nothing."""
        casts = ", ".join(f"{_key_cast(quote(k), spine_schema.field(k).type, t)} AS {quote(k)}"
                          for k, t in zip(self.keys, self.key_types, strict=True))
        return f"SELECT {casts} FROM {spine_name}"

    def windowed(self, spine_name: str, spine_schema: Any, as_of_known_time: bool) -> str:
        """Hash join on the keys filtered to the window (and to created <= t); per entity row the latest row.

        (Splitting the join by ttl-wide time buckets was measured: no faster in DuckDB, so not done.)
        """
        on = " AND ".join(f"f.{quote(k)} = {_key_cast('e.' + quote(k), spine_schema.field(k).type, t)}"
                          for k, t in zip(self.keys, self.key_types, strict=True))
        within = f" AND f.__ets >= e.{TS} - {self.ttl}" if self.ttl is not None else ""
        known = f" AND f.__cts <= e.{TS}" if as_of_known_time else ""
        latest = ", ".join(f"arg_max_null(f.{quote(f)}, {LATEST_ORDER}) AS {quote(f)}" for f in self.features)
        full = f"(SELECT {self.key_list}, {self.times}, {self.values}, {SOURCE_ROW} FROM {self.relation})"
        return (f"SELECT e.{ROW}, {latest} FROM {spine_name} e JOIN {full} f ON {on} "
                f"AND f.__ets <= e.{TS}{within}{known} GROUP BY e.{ROW}")


def _key_cast(column: str, spine_type: Any, key_type: str) -> str:
    """An entity-frame key as the source's key type, NULL (matching nothing) unless it converts exactly.

    The rule online lookups follow too (``serving._key_text``): a bool is no
    key and matches nothing; an integral float or decimal (pandas makes an int column
    with a gap float) is the integer it holds, so 2.0 matches 2 and '2', not
    '2.0'; text matches an integer key only when it is the integer's own
    spelling ('1', not '01', ' 1', '+1' or '1.0': the online store keys by
    that spelling); any other value matches its exact conversion. A bare TRY_CAST
    rounds 2.5 to 2 and turns true into 1 or 'true', which would join
    another entity's features.
    """
    import pyarrow as pa

    if pa.types.is_boolean(spine_type):
        return f"CAST(NULL AS {key_type})"
    cast = f"TRY_CAST({column} AS {key_type})"
    integer_key = key_type.upper().split("(")[0] in INTEGER_KEY_TYPES
    if integer_key and (pa.types.is_floating(spine_type) or pa.types.is_decimal(spine_type)):
        return f"CASE WHEN {column} = trunc({column}) THEN {cast} END"
    if integer_key and (pa.types.is_string(spine_type) or pa.types.is_large_string(spine_type)):
        return f"CASE WHEN CAST({cast} AS VARCHAR) = {column} THEN {cast} END"  # '01', ' 1', '+1', '1.0': no key
    if not integer_key and (pa.types.is_floating(spine_type) or pa.types.is_decimal(spine_type)):
        finite = f"isfinite({column}) AND " if pa.types.is_floating(spine_type) else ""  # a decimal always is
        return (f"CASE WHEN {finite}{column} = trunc({column}) "
                f"THEN CAST(TRY_CAST({column} AS HUGEINT) AS VARCHAR) ELSE {cast} END")
    return cast


def _sort_merge(session: Session, query: _ViewQuery, spine_name: str, frame: Any, bounds: dict[str, Any]) -> list[Any]:
    """Feature columns in spine order, the source rows picked by a sort and a binary search."""
    file = query.view.source.parquet_file(session.root)
    parquet = _ParquetView.of(file, query.view, query.keys, query.features, bounds, query.ttl) if file else None
    if parquet is not None:
        _, seen, features = parquet.read(lambda keys_and_times: _seen(
            session, query, spine_name, frame, [keys_and_times.column(k) for k in query.keys],
            parquet.times(keys_and_times)))
        picked = parquet.cast(session, _take_rows(features.select(query.features), seen), query.values)
        return [picked.column(f) for f in query.features]
    # keys under their own names: a feature may share a join key's name
    names = [f"__key{i}" for i in range(len(query.keys))]
    renamed = ", ".join(f"{quote(k)} AS {a}" for k, a in zip(query.keys, names, strict=True))
    rows = session.arrow(f"SELECT {renamed}, {query.times}, {query.values} FROM {query.relation}")
    times = rows.column("__ets").to_numpy(), rows.column("__cts").to_numpy(), None
    picked = _take_rows(rows.select(query.features), _seen(session, query, spine_name, frame,
                                                           [rows.column(n) for n in names], times))
    return [picked.column(f) for f in query.features]


def latest_parquet_rows(session: Session, catalog: Catalog, view: FeatureView, start_us: int | None,
                        end_us: int | None) -> Any:
    """Each entity's latest source row with an event time in [start, end], or None if the sort plan cannot read it.

    Materialization's fast path for a view over one Parquet file: the rows
    are picked as `_sort_merge` picks them (the same rule, ties included),
    and only the winners' columns, as stored, come back for encoding.
    """
    import numpy as np
    import pyarrow as pa

    from loopstack.features.asof import dense_codes, latest_per_code

    file = view.source.parquet_file(session.root)
    bounds = {"min": start_us, "max": MAX_US if end_us is None else end_us}
    key_names = catalog.join_keys(view)
    parquet = _ParquetView.of(file, view, key_names, [f.name for f in view.schema], bounds, 0) if file else None
    if parquet is None:
        return None

    def pick(keys_and_times: Any) -> Any:
        keys = [keys_and_times.column(k) for k in key_names]
        codes, _ = dense_codes(keys, [key.slice(0, 0) for key in keys])
        event_us, created_us, usable = parquet.times(keys_and_times)
        within = usable & (event_us <= bounds["max"])
        if start_us is not None:
            within &= event_us >= start_us
        return pa.array(latest_per_code(np.where(within, codes, -1), event_us, created_us))

    keys_and_times, winners, features = parquet.read(pick)
    picked = {name: keys_and_times.column(name).take(winners) for name in keys_and_times.column_names}
    picked.update({name: features.column(name).take(winners) for name in features.column_names if name not in picked})
    return pa.table(picked)


def _seen(session: Session, query: _ViewQuery, spine_name: str, frame: Any, keys: list[Any],
          times: tuple[Any, Any, Any]) -> Any:
    """For each spine row, the index of the source row it sees, or -1.

    `keys` are the source's join-key columns; `times` its event and created
    times in integer µs and which rows have an event time (None: all).
    """
    import numpy as np
    import pyarrow.compute as pc

    from loopstack.features.asof import dense_codes, latest_rows

    event_us, created_us, usable = times
    spine_keys = session.arrow(query.spine_keys(spine_name, frame.schema))
    codes, spine_codes = dense_codes(keys, [spine_keys.column(k) for k in query.keys])
    if usable is not None and not usable.all():  # a row without an event time matches nothing
        codes = np.where(usable, codes, -1)
    query_us = frame.column(TS)
    if query_us.null_count:  # to_numpy would give floats (NaN), too coarse for packed keys; a null matches nothing
        spine_codes = np.where(pc.is_valid(query_us).to_numpy(), spine_codes, -1)
        query_us = pc.fill_null(query_us, 0)
    return latest_rows(codes, event_us, created_us, spine_codes, query_us.to_numpy(), query.ttl)


def _take_rows(table: Any, positions: Any) -> Any:
    """Row ``positions[i]`` of `table` for each i, null where it is -1.

    Arrow's take is several times slower when its indices hold nulls, so a
    missing row takes row 0 and is set to null afterwards, column by column.
    """
    import numpy as np
    import pyarrow as pa

    missing = positions < 0
    if not missing.any():
        return table.take(pa.array(positions))
    if not table.num_rows:
        return table.take(pa.array(positions, mask=missing))
    taken = table.take(pa.array(np.where(missing, 0, positions)))
    found = pa.array(~missing)
    columns = [_null_where_missing(column, found, lambda i=i: table.column(i).take(pa.array(positions, mask=missing)))
               for i, column in enumerate(taken.columns)]
    return pa.Table.from_arrays(columns, schema=taken.schema)


def _null_where_missing(column: Any, found: Any, masked_take: Any) -> Any:
    """`column` with nulls where `found` is false; `masked_take` for the types ``if_else`` cannot do."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.if_else(found, column, pa.scalar(None, column.type))
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return masked_take()


@dataclass
class _ParquetView:
    """One Parquet file read by Arrow instead of DuckDB, for the sort plan.

    DuckDB's scan of a wide file into Arrow costs more than the join itself;
    Arrow decodes the row groups that can hold a usable row (by their
    event-time statistics) straight into the arrays the sort needs, on its own
    thread pool. Only files whose
    columns Arrow names exactly as declared and whose times are plain
    timestamps or dates take this path; the rest go through DuckDB.
    Values are cast to their declared types by DuckDB, after the rows are
    picked, exactly as the SQL plans cast them.
    """

    readers: tuple[Any, Any]  # two pyarrow ParquetFiles of one file: one read from two threads can crash
    view: FeatureView
    feature_names: list[str]
    key_and_time_columns: list[str]
    groups: list[int]

    @classmethod
    def of(cls, path: Path, view: FeatureView, keys: list[str], features: list[str], bounds: dict[str, Any],
           ttl: int | None) -> _ParquetView | None:
        """None unless Arrow can read the file as DuckDB would; row groups that cannot hold a row the
        ``bounds`` (minus ``ttl``) may use are skipped.

        A file Arrow cannot open (damaged, or half copied) is None too: DuckDB then refuses it with an
        error that names the view, where Arrow's would name neither the view nor the fix.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = view.source
        times = [t for t in (source.timestamp_field, source.created_timestamp_field) if t]
        keys_and_times = list(dict.fromkeys([*keys, *times]))
        columns = list(dict.fromkeys([*keys_and_times, *features]))
        try:
            parquet = pq.ParquetFile(path, memory_map=True)
            twin = pq.ParquetFile(path, memory_map=True)
        except (pa.ArrowException, OSError):
            return None
        schema = parquet.schema_arrow
        lowered = [n.lower() for n in schema.names]
        if not set(columns) <= set(schema.names) or any(lowered.count(c.lower()) > 1 for c in columns):
            return None  # DuckDB resolves names case-insensitively (`value` may be `VALUE`); Arrow does not
        if not all(_micros_per_unit(schema.field(t).type) for t in times):
            return None
        if not twin.metadata.equals(parquet.metadata):
            return None  # replaced between the two opens: DuckDB reads it in one go
        groups = _overlapping_groups(parquet, source.timestamp_field, bounds, ttl)
        return cls((parquet, twin), view, features, keys_and_times, groups)

    def read(self, decide: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
        """The keys and times, `decide(keys and times)`, and the feature columns.

        The features decode on the second reader, on a thread of their own, while `decide` (a sort
        and a search, which release the GIL) runs on the keys: reading them after the keys, not
        beside, keeps the key read, the critical path, at full speed.
        """
        keys_and_times = self.readers[0].read_row_groups(self.groups, columns=self.key_and_time_columns)
        with ThreadPoolExecutor(max_workers=1) as reader:
            features = reader.submit(self.readers[1].read_row_groups, self.groups,
                                     columns=list(dict.fromkeys(self.feature_names)))
            decided = decide(keys_and_times)
            return keys_and_times, decided, features.result()

    def times(self, rows: Any) -> tuple[Any, Any, Any]:
        """Event and created times in microseconds, and which rows have an event time at all."""
        import numpy as np

        source = self.view.source
        event_us, usable = _micros(rows.column(source.timestamp_field))
        if source.created_timestamp_field is None:
            return event_us, np.full(len(event_us), MIN_US, dtype=np.int64), usable
        created_us, known = _micros(rows.column(source.created_timestamp_field))
        return event_us, created_us if known.all() else np.where(known, created_us, MIN_US), usable

    def cast(self, session: Session, picked: Any, values: str) -> Any:
        """`picked` with its features cast by `values` (``_ViewQuery.values``), unless already their types."""
        declared = [self.view.get_field(f).dtype for f in self.feature_names]
        if all(picked.schema.field(f).type == d.arrow() for f, d in zip(self.feature_names, declared, strict=True)):
            return picked
        return session.arrow(f"SELECT {values} FROM {session.register(picked)}")


def _micros_per_unit(kind: Any) -> float | None:
    """Microseconds per stored unit of a timestamp or date type; None for anything else."""
    import pyarrow as pa

    if pa.types.is_timestamp(kind):
        return {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}[kind.unit]
    return 86_400e6 if kind == pa.date32() else None


def _micros(column: Any) -> tuple[Any, Any]:
    """Integer microseconds (UTC) of a timestamp or date column, as DuckDB's ``epoch_us`` gives them.

    Nanoseconds are floored, as DuckDB does. Returns the values and a mask of
    the non-null ones.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    per_unit = _micros_per_unit(column.type)
    raw = column.cast(pa.int32() if column.type == pa.date32() else pa.int64())
    if raw.null_count:
        known = ~pc.is_null(raw).to_numpy(zero_copy_only=False)
        raw = pc.fill_null(raw, 0)
    else:
        known = np.ones(len(raw), dtype=bool)
    values = raw.to_numpy().astype(np.int64, copy=False)
    if per_unit == 1:
        return values, known
    if per_unit < 1:
        return values // 1000, known
    return values * int(per_unit), known


def _overlapping_groups(parquet: Any, column: str, bounds: dict[str, Any], ttl: int | None) -> list[int]:
    """Row groups whose event-time statistics overlap [earliest entity time - ttl, latest entity time].

    A group without usable statistics is kept. Bounds are widened by 2 µs
    against rounding in the unit conversion.
    """
    meta = parquet.metadata
    index = next((j for j in range(meta.num_columns) if meta.schema.column(j).path == column), None)
    per_unit = _stored_micros_per_unit(meta.schema.column(index)) if index is not None else None
    high = bounds.get("max")
    if high is None:  # no entity rows
        return []
    low = None if ttl is None or bounds.get("min") is None else bounds["min"] - ttl
    kept = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(index).statistics if per_unit is not None else None
        if (stats is None or not stats.has_min_max or not isinstance(stats.min_raw, int)
                or (stats.min_raw * per_unit <= high + 2 and (low is None or stats.max_raw * per_unit >= low - 2))):
            kept.append(i)
    return kept


def _stored_micros_per_unit(column: Any) -> float | None:
    """Microseconds per unit of a Parquet time column as stored, which its statistics are in.

    Read from the Parquet logical type, not from the Arrow schema a writer may
    have stored beside it (Arrow's seconds are stored as milliseconds, say).
    """
    import json

    logical = json.loads(column.logical_type.to_json() or "{}")
    if logical.get("Type") == "Timestamp":
        return {"milliseconds": 1e3, "microseconds": 1.0, "nanoseconds": 1e-3}.get(logical.get("timeUnit"))
    if logical.get("Type") == "Date":
        return 86_400e6
    return {"TIMESTAMP_MILLIS": 1e3, "TIMESTAMP_MICROS": 1.0, "DATE": 86_400e6}.get(column.converted_type)


def _in_spine_order(matched: Any, features: list[str], rows: int) -> list[Any]:
    """Scatter (row number, features) to one row per entity row, nulls where nothing matched.

    Each view's query yields at most one row per entity row; placing them by
    row number here replaced a join back to the spine and an ORDER BY in DuckDB.
    """
    import numpy as np
    import pyarrow as pa

    position = np.full(rows, -1, dtype=np.int64)
    position[matched.column(ROW).to_numpy()] = np.arange(matched.num_rows, dtype=np.int64)
    take = pa.array(position, mask=position < 0)
    return [matched.column(f).take(take) for f in features]


MIN_US, MAX_US = -(2**63) + 1, 2**63 - 1

# A source row's position, so a full tie (same key, event and created time) goes to the last row, as the
# sort plan's stable sort does. row_number() OVER () is a streaming window that keeps the scan's order.
SOURCE_ROW = "row_number() OVER () AS __rn"
# The winner per key: latest (event time, created time), then the last source row. Event and created
# time as one number is a product, since << refuses negative (pre-1970) times.
LATEST_ORDER = f"{{'t': CAST(__ets AS HUGEINT) * {2**64} + __cts, 'r': __rn}}"


def micros_sql(column: str, columns: dict[str, str]) -> str:
    """Integer microseconds (UTC) of a timestamp column: cheaper to compare than timestamps."""
    kind = columns.get(column, "TIMESTAMP").upper()
    if kind == "DATE":
        return f"epoch_us(CAST({quote(column)} AS TIMESTAMP))"
    if kind == "TIMESTAMPTZ_NS":  # no epoch_us of its own; as UTC nanoseconds (the session clock is UTC), floored
        return f"epoch_us(CAST({quote(column)} AS TIMESTAMP_NS))"
    return f"epoch_us({quote(column)})"


def _time_filter(column: str, columns: dict[str, str], bounds: dict[str, Any], ttl: int | None) -> str:
    """Skip source rows no entity row can use; compares the raw column so Parquet skips row groups."""
    if bounds.get("max") is None:
        return "WHERE false"
    kind = columns.get(column, "").upper()
    if kind == "TIMESTAMP":
        literal = sql_timestamp
    elif kind == "TIMESTAMP WITH TIME ZONE":
        def literal(micros: int) -> str:
            return f"CAST({sql_timestamp(micros)} AS TIMESTAMPTZ)"
    else:
        return f"WHERE {micros_sql(column, columns)} <= {bounds['max']}" + (
            f" AND {micros_sql(column, columns)} >= {bounds['min'] - ttl}" if ttl is not None else "")
    upper = f"{quote(column)} <= {literal(bounds['max'])}"
    if ttl is None:
        return f"WHERE {upper}"
    return f"WHERE {upper} AND {quote(column)} >= {literal(bounds['min'] - ttl)}"


def _slot(view: str, feature: str) -> str:
    return f"{view}:{feature}"


def _outputs(request: FeatureRequest, base: Any, entity: Any) -> Any:
    """Requested columns in order, on-demand transforms run over the joined batch."""
    import pyarrow as pa

    computed: dict[str, Any] = {}
    for odfv in request.on_demand:
        inputs = {ref.split(":")[1]: base.column(ref) for ref in odfv.inputs}
        for field in odfv.request_schema:
            if field.name not in entity.column_names:
                raise ValidationError(
                    f"on-demand feature view {odfv.name!r} needs request column {field.name!r}; "
                    f"add it to the entity frame (columns: {entity.column_names})"
                )
            inputs[field.name] = _request_values(odfv.name, field, entity.column(field.name))
        result = odfv.transform(pa.table(inputs))
        for name in result.column_names:
            computed[f"{odfv.name}:{name}"] = result.column(name)
    columns = {}
    for out in request.outputs:
        columns[out.column] = computed[out.ref] if out.on_demand else base.column(_slot(out.view, out.feature))
    return pa.table(columns) if columns else pa.table({})


def _request_values(odfv_name: str, field: Any, column: Any) -> Any:
    """A request column as its declared type, as online serving builds it; a transform sees the same values."""
    import pyarrow as pa

    try:
        return column.cast(field.dtype.arrow())
    except pa.ArrowException as exc:
        raise ValidationError(
            f"on-demand feature view {odfv_name!r}: request column {field.name!r} is {column.type} and does not "
            f"convert to its declared type {field.dtype.name} ({exc}); fix the column in the entity frame"
        ) from None


def range_spine(session: Session, catalog: Catalog, request: FeatureRequest, start_us: int, end_us: int,
                timestamp_field: str) -> Any:
    """All (join keys, event time) of the requested views in [start, end]: the entity-less mode."""
    views = [catalog.view(name) for name in request.views]
    key_sets = {tuple(catalog.join_keys(v)) for v in views}
    if len(key_sets) != 1:
        raise ValidationError(
            f"without an entity frame all requested views must share join keys; got {sorted(key_sets)}; "
            "pass entity_df= instead"
        )
    keys = list(key_sets.pop())
    parts = []
    for view in views:
        ts = f"CAST({quote(view.source.timestamp_field)} AS TIMESTAMP)"
        parts.append(
            f"SELECT {', '.join(quote(k) for k in keys)}, {ts} AS {quote(timestamp_field)} "
            f"FROM {session.sql(view.source)} WHERE {ts} BETWEEN {sql_timestamp(start_us)} AND {sql_timestamp(end_us)}"
        )
    order = ", ".join([quote(timestamp_field), *(quote(k) for k in keys)])
    return session.arrow(f"SELECT DISTINCT * FROM ({' UNION '.join(parts)}) ORDER BY {order}")


__all__ = ["historical", "range_spine", "spine"]
