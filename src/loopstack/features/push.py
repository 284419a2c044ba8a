"""``push``: streaming rows into the online store (and optionally the offline history).

Pushed rows go through the same DuckDB encoding as materialization (latest
row per entity, typed casts, JSON values), so a pushed value and a
materialized one are byte-identical; the online store's newer-wins rule
means a late, older event never replaces a fresher value. Every value is
checked against its field's type before anything is written, online or
offline, and rows appended to the offline history carry the declared types.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ValidationError
from loopstack.core.paths import write_parquet_durably
from loopstack.features.engine import quote
from loopstack.features.materialize import encoded_rows
from loopstack.features.sources import FileSource, PushSource

if TYPE_CHECKING:
    from loopstack.features.definitions import FeatureView, Field
    from loopstack.features.store import FeatureStore

TARGETS = ("online", "offline", "online_and_offline")


def push(store: FeatureStore, source_name: str, rows: Any, to: str = "online") -> int:
    """Write `rows` to every online view of the push source; returns the number of rows pushed."""
    if to not in TARGETS:
        raise ValidationError(f"push(to={to!r}); use one of {TARGETS}")
    table = _arrow(rows)
    views = store.catalog.views_of_push_source(source_name)
    source = store.catalog.push_sources[source_name]
    if not table.num_rows and not table.num_columns:  # an empty list: a stream's idle tick
        return 0
    for view in views:
        needed = [source.timestamp_field, *store.catalog.join_keys(view), *(f.name for f in view.schema)]
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise ValidationError(
                f"rows pushed to {source_name!r} lack column(s) {missing} that feature view {view.name!r} needs"
            )
    _check_times(source, table)
    _check_values(store, source_name, views, table)  # on every path, before anything is written
    online = [(view.name, _encoded(store, view, source_name, table)) for view in views
              if view.online and to in ("online", "online_and_offline")]
    if to in ("offline", "online_and_offline"):
        _append_offline(store, source, _declared(store, views, table))
    for name, encoded in online:
        store.online.write_batch(name, encoded)
    return table.num_rows


def _check_times(source: PushSource, table: Any) -> None:
    """Refuse event times that are not timestamps (ISO strings from a JSON stream, say) before DuckDB does."""
    import pyarrow as pa

    kind = table.schema.field(source.timestamp_field).type
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        raise ValidationError(
            f"rows pushed to {source.name!r} have {source.timestamp_field!r} of type {kind}, not a timestamp; "
            "send datetimes (pandas: pd.to_datetime(df[col], utc=True))"
        )


def _check_values(store: FeatureStore, source_name: str, views: list[FeatureView], table: Any) -> None:
    """Refuse a value its field's declared type cannot hold, naming the view, the column and the value.

    The offline history is the views' own source: one ``"abc"`` in a Float64
    column appended there would break every later read of it.
    """
    with store.engine.session() as session:
        relation = session.register(table)
        for view in views:
            firsts = ", ".join(_first_misfit_sql(f) for f in view.schema)
            misfits = session.con.execute(f"SELECT {firsts} FROM {relation}").fetchone() if firsts else ()
            for field, value in zip(view.schema, misfits, strict=True):
                if value is not None:
                    raise ValidationError(
                        f"rows pushed to {source_name!r} do not fit feature view {view.name!r}: column "
                        f"{field.name!r} holds {value!r}, which is not a {field.dtype.name}; send values of "
                        "the declared types"
                    )


def _first_misfit_sql(field: Field) -> str:
    """The first value of `field`'s column, as text, that its declared type cannot hold (NULL: none).

    For an integer field a number that would be rounded (2.5 becomes 3) does not fit either.
    """
    column, dtype = quote(field.name), field.dtype.duckdb
    misfit = f"TRY_CAST({column} AS {dtype}) IS NULL"
    if field.dtype.name in ("Int32", "Int64"):
        number = f"TRY_CAST({column} AS DOUBLE)"
        misfit += f" OR {number} <> CAST(TRY_CAST({column} AS {dtype}) AS DOUBLE)"
    return f"first(CAST({column} AS VARCHAR)) FILTER (WHERE {column} IS NOT NULL AND ({misfit}))"


def _declared(store: FeatureStore, views: list[FeatureView], table: Any) -> Any:
    """`table` with each feature column cast to its declared type, as the offline history must keep it.

    A column of another type (``"1.5"`` as text, a list of all-None) would
    change the type DuckDB reads for the whole source and fail the type check
    of the next ``apply``. A column shared by several views takes the first
    one's type.
    """
    declared = {f.name: f.dtype for view in reversed(views) for f in view.schema}
    if not declared:
        return table
    casts = ", ".join(f"CAST({quote(name)} AS {dtype.duckdb}) AS {quote(name)}" for name, dtype in declared.items())
    with store.engine.session() as session:
        typed = session.arrow(f"SELECT {casts} FROM {session.register(table)}")
    for name in declared:
        table = table.set_column(table.column_names.index(name), name, typed.column(name))
    return table


def _encoded(store: FeatureStore, view: Any, source_name: str, table: Any) -> Any:
    """The rows encoded for `view`; a value its declared type cannot hold is named, not a DuckDB traceback."""
    import duckdb

    try:
        return encoded_rows(store, view, None, None, data=table)
    except duckdb.ConversionException as exc:
        first = str(exc).splitlines()[0]
        raise ValidationError(
            f"rows pushed to {source_name!r} do not fit feature view {view.name!r}: {first}; "
            "send values of the declared types"
        ) from None


def _arrow(rows: Any) -> Any:
    import pyarrow as pa

    if isinstance(rows, list):
        return pa.Table.from_pylist(rows)
    from loopstack.tracking.datasets import to_arrow

    return to_arrow(rows)


def _append_offline(store: FeatureStore, source: PushSource, table: Any) -> None:
    batch = source.batch_source
    folder = batch.resolve(store.root) if isinstance(batch, FileSource) else None
    if (folder is None or (folder.exists() and not folder.is_dir()) or batch.file_format == "csv"
            or batch.is_pattern(store.root)):  # a pattern's "folder" would be made under its literal name
        raise ValidationError(
            f"push source {source.name!r} cannot append offline: its batch source is not a folder of Parquet "
            "files; use FileSource(path='some/folder') or push(to='online')"
        )
    folder.mkdir(parents=True, exist_ok=True)
    # under a temporary name the source's listing skips, then renamed: a reader, or a kill mid-write, never
    # sees a truncated Parquet file, which would break every read of the view
    write_parquet_durably(table, folder / f"push-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet")


__all__ = ["push"]
