"""Materialization: copy the latest feature row per entity from the offline sources to the online store.

The latest row per entity within the window is picked as the offline join
picks it (a full tie on (event, created) time to the last source row), by
the sort plan for a view over one Parquet file and by DuckDB otherwise; DuckDB
encodes keys and values as strings; then the rows are written in chunks.
Each chunk that lands is recorded in ``feature_materializations``, so a job
interrupted after chunk k resumes at chunk k+1; because the online store
never replaces a newer record with an older one, replaying a chunk is
harmless too. A job's id includes a fingerprint of the rows it writes, so a
source changed since the interruption (even to the same number of rows)
starts a new job from chunk 0 instead of skipping chunks now stale. The
view's watermark moves to the window end only when every chunk has landed,
so ``materialize_incremental`` after a crash repeats the unfinished window
rather than skipping it. Removing a view forgets its watermark and job
progress in the removing transaction and marks its online rows for deletion
(`forget`); the rows go afterwards (`delete_removed`), and a deletion a crash
cut short is finished by the next ``apply`` or ``materialize``.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from loopstack.features.definitions import FeatureView
from loopstack.features.engine import quote

if TYPE_CHECKING:
    from loopstack.features.store import FeatureStore

KEY_SEPARATOR = "\x1f"
DEFAULT_CHUNK = 5_000


def encoded_rows(store: FeatureStore, view: FeatureView, start_us: int | None, end_us: int | None,
                 data: Any = None) -> Any:
    """Arrow (key, event_ts, created_ts, value): the latest row per entity key in [start, end].

    `data` (an Arrow table) replaces the view's source, for pushed rows. A
    view over one Parquet file has its winners picked by the offline sort
    plan (``offline.latest_parquet_rows``), which reads only the keys and
    times to decide; any other source by an ``arg_max`` over (event time,
    created time, source row) per key in DuckDB. Either way DuckDB encodes
    the winners, so both give the same strings.
    """
    from loopstack.features.offline import latest_parquet_rows

    with store.engine.session() as session:
        if data is None:
            winners = latest_parquet_rows(session, store.catalog, view, start_us, end_us)
            if winners is not None:
                return session.arrow(_encoding_query(session, view, store.catalog.join_keys(view),
                                                     session.register(winners), None, None, latest=False))
        relation = session.register(data) if data is not None else session.sql(view.source)
        return session.arrow(_encoding_query(session, view, store.catalog.join_keys(view), relation,
                                             start_us, end_us, latest=True))


def _encoding_query(session: Any, view: FeatureView, keys: list[str], relation: str, start_us: int | None,
                    end_us: int | None, latest: bool) -> str:
    """The SQL that encodes keys and values as strings, one row per key, ordered by key.

    With `latest`, it also picks each key's latest row in [start, end]: the
    offline join's winner, latest (event, created) time and a full tie to the
    last source row, as an ``arg_max`` (one hash aggregation, no sort).
    Without, `relation` already holds one row per key.
    """
    from loopstack.features.offline import LATEST_ORDER, MIN_US, SOURCE_ROW, micros_sql

    source = view.source
    columns = session.describe(relation, f"feature view {view.name!r}")
    ets = micros_sql(source.timestamp_field, columns)
    # A null created time ranks below any known one, as in the offline join (offline._ViewQuery).
    cts = (f"coalesce({micros_sql(source.created_timestamp_field, columns)}, {MIN_US})"
           if source.created_timestamp_field else ets)
    values = ", ".join(f"{quote(f.name)} := {f.dtype.encode_sql(quote(f.name))}" for f in view.schema)
    # Group on the raw key columns and turn only the winners into strings (casting every
    # source row's key to VARCHAR before grouping was wasted work).
    key = (f"CAST({quote(keys[0])} AS VARCHAR)" if len(keys) == 1 else
           "concat_ws(chr(31), " + ", ".join(f"CAST({quote(k)} AS VARCHAR)" for k in keys) + ")")
    if not latest:
        return (f"SELECT {key} AS key, {ets} AS event_ts, {cts} AS created_ts, "
                f"to_json(struct_pack({values})) AS value FROM {relation} ORDER BY key")
    where = [f"{quote(k)} IS NOT NULL" for k in keys] + [f"{ets} IS NOT NULL"]
    if start_us is not None:
        where.append(f"{ets} >= {int(start_us)}")
    if end_us is not None:
        where.append(f"{ets} <= {int(end_us)}")
    raw_keys = ", ".join(quote(k) for k in keys)
    rows = (f"SELECT {raw_keys}, {ets} AS __ets, {cts} AS __cts, struct_pack({values}) AS __v, {SOURCE_ROW} "
            f"FROM {relation} WHERE {' AND '.join(where)}")
    winner = f"arg_max({{'t': __ets, 'c': __cts, 'v': __v}}, {LATEST_ORDER})"
    return (f"SELECT {key} AS key, __latest.t AS event_ts, __latest.c AS created_ts, to_json(__latest.v) AS value "
            f"FROM (SELECT {raw_keys}, {winner} AS __latest FROM ({rows}) GROUP BY {raw_keys}) ORDER BY key")


def materialize_view(store: FeatureStore, view: FeatureView, start_us: int, end_us: int, chunk_size: int,
                     progress: Any = None) -> int:
    """Write the window to the online store in chunks, resuming a job interrupted earlier."""
    rows = encoded_rows(store, view, start_us, end_us)
    chunks = max(1, -(-rows.num_rows // chunk_size))
    job = _job_id(store, view, start_us, end_us, chunk_size, _rows_fingerprint(store, rows))
    done = _start_job(store, job, view.name, start_us, end_us, chunks, rows.num_rows)
    task = progress.add_task(view.name, total=rows.num_rows, completed=min(done * chunk_size, rows.num_rows)) \
        if progress is not None else None
    for index in range(done, chunks):
        chunk = rows.slice(index * chunk_size, chunk_size)
        if chunk.num_rows:
            store.online.write_batch(view.name, chunk)
        _chunk_done(store, job, index + 1, chunks)
        if progress is not None:
            progress.update(task, advance=chunk.num_rows)
    _finish(store, view, end_us, start_us, rows.num_rows)
    return rows.num_rows


def watermark(store: FeatureStore, view: FeatureView) -> int | None:
    """The end of the last completed window for `view` in this online store (None: never, or view changed)."""
    from sqlalchemy import and_, select

    table = store.db.table("feature_watermarks")
    with store.db.read() as connection:
        row = connection.execute(select(table.c.watermark_us, table.c.view_digest).where(
            and_(table.c.store == store.online_id, table.c.view == view.name))).first()
    if row is None or row.view_digest != view.digest():
        return None
    return int(row.watermark_us)


DELETING = "deleting"  # the status of a removed view's pending online deletion in feature_materializations


def forget(store: FeatureStore, view_name: str, connection: Any) -> None:
    """Drop the watermark and job progress of removed view `view_name`, and mark its online rows for deletion.

    Runs in the transaction that removes the view (``apply``), before any
    online row is deleted: otherwise a view removed and later applied again
    (the same digest) would count as materialized after a crash between the
    two, and ``materialize_incremental`` would start after the old watermark
    (a resumed job after its landed chunks), leaving the online store without
    the rows before them. The marker (a ``deleting`` row in
    ``feature_materializations``) stays until `delete_removed` has deleted
    every online row of the view, so a deletion a crash cut short is finished
    by the next ``apply`` or ``materialize``.
    """
    from sqlalchemy import and_, delete

    for name in ("feature_watermarks", "feature_materializations"):
        table = store.db.table(name)
        connection.execute(delete(table).where(and_(table.c.store == store.online_id, table.c.view == view_name)))
    now = time.time()
    store.db.upsert(connection, store.db.table("feature_materializations"), [{
        "id": _deletion_id(store, view_name), "store": store.online_id, "view": view_name, "start_us": 0,
        "end_us": 0, "chunks_total": 1, "chunks_done": 0, "rows": 0, "status": DELETING, "started_at": now,
        "updated_at": now,
    }], keys=("id",), update=("status", "updated_at"))


def delete_removed(store: FeatureStore, views: list[str] | None = None) -> list[str]:
    """Delete the online rows of removed views marked by `forget` (only `views`, if given); the names done.

    Idempotent: a deletion killed half-way is repeated whole, and its marker
    goes only once every row is gone. A view applied again after its removal
    keeps no old row: ``apply`` and ``materialize`` call this first.
    """
    from sqlalchemy import and_, delete, select

    table = store.db.table("feature_materializations")
    where = and_(table.c.store == store.online_id, table.c.status == DELETING)
    if views is not None:
        if not views:
            return []
        where = and_(where, table.c.view.in_(list(views)))
    with store.db.read() as connection:
        pending = sorted({row.view for row in connection.execute(select(table.c.view).where(where))})
    for view_name in pending:
        store.online.delete_view(view_name)
        with store.db.write() as connection:
            connection.execute(delete(table).where(table.c.id == _deletion_id(store, view_name)))
    return pending


def _deletion_id(store: FeatureStore, view_name: str) -> str:
    return hashlib.sha256(f"delete|{store.online_id}|{view_name}".encode()).hexdigest()


def _job_id(store: FeatureStore, view: FeatureView, start_us: int, end_us: int, chunk_size: int,
            rows_fingerprint: str) -> str:
    text = f"{store.online_id}|{view.name}|{view.digest()}|{start_us}|{end_us}|{chunk_size}|{rows_fingerprint}"
    return hashlib.sha256(text.encode()).hexdigest()


def _rows_fingerprint(store: FeatureStore, rows: Any) -> str:
    """A hash of the encoded rows a job writes, so a resumed job knows its landed chunks are still current.

    One parallel DuckDB pass over rows already in memory (one per entity),
    not a read of the source; keys are unique, so an XOR of row hashes
    changes whenever any key, time or value does.
    """
    with store.engine.session() as session:
        relation = session.register(rows)
        digest = session.con.execute(
            f"SELECT count(*), bit_xor(hash(key, event_ts, created_ts, value)) FROM {relation}").fetchone()
    return f"{digest[0]}:{digest[1]}"


def _start_job(store: FeatureStore, job: str, view: str, start_us: int, end_us: int, chunks: int, rows: int) -> int:
    from sqlalchemy import select

    table = store.db.table("feature_materializations")
    now = time.time()
    with store.db.write() as connection:
        row = connection.execute(select(table.c.chunks_done, table.c.status, table.c.rows)
                                 .where(table.c.id == job)).first()
        if row is not None and row.status == "running" and row.rows == rows:
            return int(row.chunks_done)
        store.db.upsert(connection, table, [{
            "id": job, "store": store.online_id, "view": view, "start_us": start_us, "end_us": end_us,
            "chunks_total": chunks, "chunks_done": 0, "rows": rows, "status": "running", "started_at": now,
            "updated_at": now,
        }], keys=("id",), update=("chunks_total", "chunks_done", "rows", "status", "started_at", "updated_at"))
    return 0


def _chunk_done(store: FeatureStore, job: str, done: int, total: int) -> None:
    table = store.db.table("feature_materializations")
    with store.db.write() as connection:
        connection.execute(table.update().where(table.c.id == job).values(
            chunks_done=done, updated_at=time.time(), status="done" if done >= total else "running"))


def _finish(store: FeatureStore, view: FeatureView, end_us: int, start_us: int, rows: int) -> None:
    table = store.db.table("feature_watermarks")
    current = watermark(store, view)
    with store.db.write() as connection:
        store.db.upsert(connection, table, [{
            "store": store.online_id, "view": view.name, "watermark_us": max(end_us, current or end_us),
            "view_digest": view.digest(), "updated_at": time.time(),
        }], keys=("store", "view"), update=("watermark_us", "view_digest", "updated_at"))
        store.project.events.emit("features.materialize", view.name,
                                  {"store": store.online_id, "start_us": start_us, "end_us": end_us, "rows": rows},
                                  connection=connection)


__all__ = ["delete_removed", "encoded_rows", "forget", "materialize_view", "watermark"]
