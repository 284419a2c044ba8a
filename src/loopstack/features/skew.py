"""Training/serving skew: recompute what was served, offline, and count the differences.

Each logged row is replayed through ``get_historical_features`` at its
request time, with the same features (on-demand transforms included), and
compared per feature with the value that was served. A mismatch means the
online path and the offline path disagree for that feature: a stale
materialization, a push that never reached the offline history, or logic
split between training and serving. Floats compare with a tolerance; two
nulls (or two NaNs) match.

Examples
--------
>>> FeatureSkew("conv_rate", "driver_stats:conv_rate", rows=4, mismatches=1, examples=[]).rate
0.25
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ValidationError
from loopstack.features.feature_log import REQUEST_ID, REQUEST_TIME, ROW, log_meta
from loopstack.features.timeutil import to_us

if TYPE_CHECKING:
    from loopstack.features.store import FeatureStore


@dataclass
class FeatureSkew:
    """Mismatches of one feature between served and recomputed values."""

    column: str
    ref: str
    rows: int
    mismatches: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0


@dataclass
class SkewReport:
    """Per-feature mismatch rates of one feature log."""

    log: str
    rows: int
    features: list[FeatureSkew]

    @property
    def max_rate(self) -> float:
        return max((f.rate for f in self.features), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "rows": self.rows, "features": [
            {"column": f.column, "ref": f.ref, "rows": f.rows, "mismatches": f.mismatches, "rate": f.rate,
             "examples": f.examples} for f in self.features]}


def check_skew(store: FeatureStore, name: str, since: Any = None, until: Any = None, rtol: float = 1e-9,
               atol: float = 1e-12, examples: int = 5) -> SkewReport:
    """Compare the feature log `name` with an offline recomputation at each request time."""
    import pyarrow.compute as pc

    if since is not None and until is not None and to_us(since) > to_us(until):
        raise ValidationError(f"since={since!r} is after until={until!r}; no request can fall between them, swap them")
    store.feature_log.flush()
    table = store.feature_log.read(name)
    meta = log_meta(table)
    if not meta.get("features"):
        raise ValidationError(f"feature log {name!r} carries no feature list; it was not written by loopstack")
    if since is not None:
        table = table.filter(pc.greater_equal(table.column(REQUEST_TIME), _ts(since)))
    if until is not None:
        table = table.filter(pc.less_equal(table.column(REQUEST_TIME), _ts(until)))
    columns = meta["columns"]
    entity_columns = [c for c in table.column_names if c not in columns and c not in (REQUEST_ID, ROW)]
    entity = table.select(entity_columns)
    job = store.get_historical_features(entity, meta["features"], full_feature_names=meta.get("full", False),
                                        timestamp_field=REQUEST_TIME, record=False)
    offline = job._compute()
    report = SkewReport(name, table.num_rows, [])
    keys = [k for k in meta.get("join_keys", []) if k in table.column_names]
    for column, ref in zip(columns, meta["features"], strict=True):
        mask = _mismatch(table.column(column), offline.column(column), rtol, atol)
        count = int(pc.sum(mask).as_py() or 0)
        skew = FeatureSkew(column, ref, table.num_rows, count)
        if count:
            picked = table.filter(mask).slice(0, examples)
            recomputed = offline.filter(mask).slice(0, examples).column(column).to_pylist()
            for i, row in enumerate(picked.select([*keys, REQUEST_TIME, REQUEST_ID, column]).to_pylist()):
                skew.examples.append({**{k: row[k] for k in keys}, "request_time": row[REQUEST_TIME],
                                      "request_id": row[REQUEST_ID], "served": row[column],
                                      "offline": recomputed[i]})
        report.features.append(skew)
    return report


def _ts(value: Any) -> Any:
    import pyarrow as pa

    return pa.scalar(to_us(value), pa.int64()).cast(pa.timestamp("us"))


def _mismatch(served: Any, offline: Any, rtol: float, atol: float) -> Any:
    """Boolean array: True where the served and recomputed values differ."""
    import pyarrow as pa
    import pyarrow.compute as pc

    served = served.combine_chunks() if hasattr(served, "combine_chunks") else served
    offline = offline.combine_chunks() if hasattr(offline, "combine_chunks") else offline
    if pa.types.is_timestamp(served.type) and served.type.tz is not None:
        served = served.cast(pa.timestamp(served.type.unit))
    if pa.types.is_null(served.type):
        served = pa.nulls(len(served), offline.type)
    served_null, offline_null = pc.is_null(served), pc.is_null(offline)
    if pa.types.is_floating(offline.type) or pa.types.is_floating(served.type):
        a, b = served.cast(pa.float64()), offline.cast(pa.float64())
        tolerance = pc.add(pc.multiply(pc.abs(b), rtol), atol)
        # Tolerance is for finite values: inf - inf is NaN, and an infinite tolerance would pass -inf for inf.
        close = pc.and_(pc.and_(pc.is_finite(a), pc.is_finite(b)), pc.less_equal(pc.abs(pc.subtract(a, b)), tolerance))
        equal = pc.or_(pc.or_(close, pc.equal(a, b)), pc.and_(pc.is_nan(a), pc.is_nan(b)))
    else:
        equal = pc.equal(served.cast(offline.type), offline)
    equal = pc.fill_null(equal, False)
    both_null = pc.and_(served_null, offline_null)
    return pc.and_(pc.invert(both_null), pc.invert(equal))


__all__ = ["FeatureSkew", "SkewReport", "check_skew"]
