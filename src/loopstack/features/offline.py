"""Point-in-time joins in DuckDB: the training frame a model would have seen at each moment.

For each entity row and each feature view, the answer is the feature row with
the same join keys whose event timestamp is the latest one at or before the
entity timestamp, and at most `ttl` older (inclusive: a row exactly ttl old
counts). Ties on the event timestamp go to the larger created timestamp.
Every entity row comes back, in order, duplicates included; a row with no
valid feature row gets nulls.

Sources are read as they lie (Parquet, CSV or Arrow, never copied) and
times compared as integer microseconds (UTC). Two plans, both exact:

- a view with a ttl: a hash join on the join keys filtered to the window
  ``[t - ttl, t]``, then per entity row ``arg_max`` over (event time, created
  time) packed into one number. Its work grows with the rows inside the window.
- a view without a ttl: an ``ASOF JOIN`` on the keys and event time alone
  (narrow input, fast to sort), then the latest-created row among those with
  the matched event time.

``as_of_known_time`` adds ``created <= t`` to the first plan; without a ttl it
has no window to bound it, so it is slower, which is why it is opt-in.
"""

from __future__ import annotations

from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.features.catalog import Catalog, FeatureRequest
from loopstack.features.definitions import FeatureView
from loopstack.features.engine import Session, quote
from loopstack.features.timeutil import sql_timestamp, ttl_us

ROW, TS = "__row", "__ts"


def spine(entity: Any, timestamp_field: str, keys: list[str]) -> Any:
    """The slim entity frame DuckDB joins on: row number, UTC time in microseconds, join keys."""
    import numpy as np
    import pyarrow as pa

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
    ts = ts.cast(pa.timestamp(ts.type.unit)).cast(pa.timestamp("us"), safe=False).cast(pa.int64())
    columns = {ROW: pa.array(np.arange(entity.num_rows, dtype=np.int64)), TS: ts}
    columns.update({k: entity.column(k) for k in keys})
    return pa.table(columns)


def historical(session: Session, catalog: Catalog, request: FeatureRequest, entity: Any, timestamp_field: str,
               as_of_known_time: bool = False) -> Any:
    """Feature columns (Arrow), one row per row of `entity`, in order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    views = [catalog.view(name) for name in request.views]
    keys = sorted({k for view in views for k in catalog.join_keys(view)})
    frame = spine(entity, timestamp_field, keys)
    name = session.register(frame)
    bounds = pc.min_max(frame.column(TS)).as_py() if frame.num_rows else {"min": None, "max": None}
    columns: dict[str, Any] = {}
    for i, view in enumerate(views):
        alias, features = f"v{i}", request.views[view.name]
        ctes = _view_ctes(session, catalog, view, features, alias, name, bounds, as_of_known_time)
        matched = session.arrow(f"WITH {', '.join(ctes)} SELECT * FROM {alias}")
        columns.update(zip((_slot(view.name, f) for f in features), _in_spine_order(matched, features, frame.num_rows),
                           strict=True))
    return _outputs(request, pa.table(columns) if columns else pa.table({}), entity)


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


def _view_ctes(session: Session, catalog: Catalog, view: FeatureView, features: list[str], alias: str,
               spine_name: str, bounds: dict[str, Any], as_of_known_time: bool) -> list[str]:
    source = view.source
    columns = session.columns(source, f"feature view {view.name!r}")
    keys = catalog.join_keys(view)
    ttl = ttl_us(view.ttl)
    created = source.created_timestamp_field
    where = _time_filter(source.timestamp_field, columns, bounds, ttl)
    relation = f"{session.sql(source)} {where}"
    key_list = ", ".join(quote(k) for k in keys)
    ets = f"{micros_sql(source.timestamp_field, columns)} AS __ets"
    cts = f"coalesce({micros_sql(created, columns)}, {MIN_US}) AS __cts" if created else f"{MIN_US} AS __cts"
    casts = ", ".join(f"CAST({quote(f)} AS {view.get_field(f).dtype.duckdb}) AS {quote(f)}" for f in features)
    full = f"(SELECT {key_list}, {ets}, {cts}, {casts} FROM {relation})"
    on = " AND ".join(f"f.{quote(k)} = TRY_CAST(e.{quote(k)} AS {columns.get(k, 'VARCHAR')})" for k in keys)
    within = f"f.__ets >= e.{TS} - {ttl}" if ttl is not None else "true"
    out = ", ".join([f"e.{ROW}", *(f"f.{quote(f)}" for f in features)])
    if ttl is not None or as_of_known_time:
        return _windowed(alias, spine_name, full, on, within, features, as_of_known_time)
    if not created:
        return [f"{alias} AS (SELECT {out} FROM {spine_name} e ASOF JOIN {full} f ON {on} AND e.{TS} >= f.__ets)"]
    # Two phases keep the sorted ASOF input narrow: match the latest event time per entity row on
    # (keys, event time) only, then take the latest-created row among those with that event time.
    narrow = f"(SELECT {key_list}, {ets} FROM {relation})"
    matched = (f"{alias}_m AS (SELECT e.{ROW}, {', '.join(f'f.{quote(k)}' for k in keys)}, f.__ets FROM {spine_name} e "
               f"ASOF JOIN {narrow} f ON {on} AND e.{TS} >= f.__ets WHERE {within})")
    same = " AND ".join([*(f"f.{quote(k)} = m.{quote(k)}" for k in keys), "f.__ets = m.__ets"])
    latest = ", ".join(f"arg_max_null(f.{quote(f)}, f.__cts) AS {quote(f)}" for f in features)
    return [matched, f"{alias} AS (SELECT m.{ROW}, {latest} FROM {alias}_m m JOIN {full} f ON {same} "
                     f"GROUP BY m.{ROW})"]


MIN_US, MAX_US = -(2**63) + 1, 2**63 - 1


def _windowed(alias: str, spine_name: str, full: str, on: str, within: str, features: list[str],
              as_of_known_time: bool) -> list[str]:
    """Hash join on the keys filtered to the window; per entity row the latest (event, created) row.

    (Splitting the join by ttl-wide time buckets was measured: no faster in DuckDB, so not done.)
    """
    known = f" AND f.__cts <= e.{TS}" if as_of_known_time else ""
    order = "(CAST(f.__ets AS HUGEINT) << 64) + f.__cts"  # (event time, created time) as one number
    latest = ", ".join(f"arg_max_null(f.{quote(f)}, {order}) AS {quote(f)}" for f in features)
    return [f"{alias} AS (SELECT e.{ROW}, {latest} FROM {spine_name} e JOIN {full} f ON {on} "
            f"AND f.__ets <= e.{TS} AND {within}{known} GROUP BY e.{ROW})"]


def micros_sql(column: str, columns: dict[str, str]) -> str:
    """Integer microseconds (UTC) of a timestamp column: cheaper to compare than timestamps."""
    kind = columns.get(column, "TIMESTAMP").upper()
    if kind == "DATE":
        return f"epoch_us(CAST({quote(column)} AS TIMESTAMP))"
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
            inputs[field.name] = entity.column(field.name)
        result = odfv.transform(pa.table(inputs))
        for name in result.column_names:
            computed[f"{odfv.name}:{name}"] = result.column(name)
    columns = {}
    for out in request.outputs:
        columns[out.column] = computed[out.ref] if out.on_demand else base.column(_slot(out.view, out.feature))
    return pa.table(columns) if columns else pa.table({})


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
