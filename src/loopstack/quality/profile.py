"""Propose a suite from reference data: what held there becomes what is expected.

One aggregate query measures every column (nulls, range, length, an
approximate distinct count); exact distinct counts and value sets are then
fetched only for the columns that look like keys or categories. Every
proposal holds on the reference by construction, so the suite passes there
and flags what changes later. Read it, tighten or loosen it, save it as YAML.
"""

from __future__ import annotations

import math
import os
from typing import Any

from loopstack.quality.expectations import (
    Between,
    Expectation,
    InSet,
    NotNull,
    RowCount,
    SchemaMatches,
    StringLength,
    Unique,
    ZScoreOutliers,
)
from loopstack.quality.expectations.distribution import Distribution
from loopstack.quality.expectations.schema import FAMILIES
from loopstack.quality.source import Query, Source, open_source, quote
from loopstack.quality.suite import Suite

NULL_SLACK = 1.5  # a proposed null-ratio threshold is the observed ratio times this, plus a point
_RANGED = (*FAMILIES["numeric"], *FAMILIES["temporal"])
_NANOSECONDS = ("TIMESTAMP_NS", "TIME_NS")


def profile(
    reference: Any,
    name: str = "profile",
    max_categories: int = 20,
    distribution: bool | None = None,
    outliers: bool = False,
) -> Suite:
    """A suite of expectations that hold on `reference`.

    Parameters
    ----------
    reference : data
        Any input a suite accepts (a Parquet folder is streamed, not loaded).
    name : str
        The suite's name.
    max_categories : int
        Columns with at most this many distinct values (and many repeats) get
        an ``in_set`` check instead of ranges or lengths.
    distribution : bool, optional
        Add a ``distribution`` check per column against `reference`. By
        default only when `reference` is a path or SQL text, so that the
        suite can still be saved as YAML.
    outliers : bool
        Add ``zscore_outliers`` (4 standard deviations) for numeric columns,
        with the reference mean and std stored so requests can be checked;
        ``mostly`` is 0.99, or the share within 4 std on the reference if lower.

    Examples
    --------
    >>> suite = profile({"id": [1, 2, 3, 4], "tier": ["a", "b", "a", "a"], "score": [0.5, 0.7, None, 0.9]})
    >>> for expectation in suite:
    ...     print(expectation.to_dict())
    {'kind': 'schema_matches', 'baseline': {'id': 'BIGINT', 'tier': 'VARCHAR', 'score': 'DOUBLE'}}
    {'kind': 'row_count', 'min': 1}
    {'kind': 'not_null', 'column': 'id'}
    {'kind': 'unique', 'column': 'id'}
    {'kind': 'between', 'column': 'id', 'min': 1, 'max': 4}
    {'kind': 'not_null', 'column': 'tier'}
    {'kind': 'in_set', 'column': 'tier', 'values': ['a', 'b']}
    {'kind': 'not_null', 'mostly': 0.615, 'column': 'score'}
    {'kind': 'between', 'column': 'score', 'min': 0.5, 'max': 0.9}
    >>> suite.run({"id": [1, 1], "tier": ["a", "c"], "score": [0.6, 0.8]}).passed
    False
    """
    if distribution is None:
        distribution = isinstance(reference, str | os.PathLike | Query)
    with open_source(reference) as source:
        schema = source.schema
        stats = _measure(source, schema)
        expectations: list[Expectation] = [SchemaMatches(dict(schema))]
        if stats["__rows__"]:  # an empty reference proposes no row count: the suite must pass on it
            expectations.append(RowCount(min=1))
        for column, kind in schema.items():
            expectations.extend(_propose(source, column, kind, stats[column], stats["__rows__"], max_categories))
            if outliers and stats[column].get("std"):
                expectations.append(_outlier_check(source, column, stats[column]))
            if distribution and stats[column]["non_null"]:
                expectations.append(Distribution(column, reference=reference))
    return Suite(name, expectations, description=f"proposed by profile() from {source.description}")


def _outlier_check(source: Source, column: str, stats: dict[str, Any]) -> ZScoreOutliers:
    """``zscore_outliers`` at 4 std with the reference's mean and std, tolerating the share it flags there.

    ``mostly`` is at most 0.99, lower when more of the reference lies beyond
    4 std (95 zeros and 5 hundreds: 5%), so the suite passes on its reference.
    """
    check = ZScoreOutliers(column, threshold=4.0, mean=stats["mean"], std=stats["std"])
    outlying = int(source.one(f"SELECT count(*) FROM data WHERE {check.condition(source.schema)}")[0])
    kept = (stats["non_null"] - outlying) / stats["non_null"]
    mostly = min(0.99, math.floor(kept * 1000) / 1000)
    return ZScoreOutliers(column, threshold=4.0, mean=stats["mean"], std=stats["std"], mostly=mostly)


def _measure(source: Source, schema: dict[str, str]) -> dict[str, Any]:
    """Per-column statistics from one aggregate query."""
    parts, keys = ["count(*)"], [("__rows__", "")]
    for column, kind in schema.items():
        col = quote(column)
        wanted = {"non_null": f"count({col})", "distinct": f"approx_count_distinct({col})"}
        if _base(kind) in _RANGED:
            wanted |= {"min": _bound("min", col, kind), "max": _bound("max", col, kind)}
        if _base(kind) in FAMILIES["numeric"]:
            wanted |= {"mean": f"avg({col})", "std": f"stddev_samp({col})"}
        if kind == "VARCHAR":
            wanted |= {"min_length": f"min(length({col}))", "max_length": f"max(length({col}))"}
        for stat, sql in wanted.items():
            parts.append(sql)
            keys.append((column, stat))
    values = source.one(f"SELECT {', '.join(parts)} FROM data")
    stats: dict[str, Any] = {column: {} for column in schema}
    stats["__rows__"] = int(values[0])
    for (column, stat), value in zip(keys[1:], values[1:], strict=True):
        stats[column][stat] = _plain(value)
    return stats


def _propose(
    source: Source, column: str, kind: str, stats: dict[str, Any], rows: int, max_categories: int
) -> list[Expectation]:
    out: list[Expectation] = []
    non_null = stats["non_null"]
    if rows:
        null_ratio = 1 - non_null / rows
        if null_ratio == 0:
            out.append(NotNull(column))
        elif null_ratio < 1:
            allowed = min(1.0, null_ratio * NULL_SLACK + 0.01)
            out.append(NotNull(column, mostly=math.floor((1 - allowed) * 1000) / 1000))
    if non_null == 0:
        return out
    if _maybe_key(stats, kind) and non_null > 1 and _distinct(source, column) == non_null:
        out.append(Unique(column))
    values = _categories(source, column, stats, kind, max_categories)
    if values is not None:
        out.append(InSet(column, values))
    elif "min" in stats and stats["min"] is not None:
        out.append(Between(column, min=stats["min"], max=stats["max"]))
    if kind == "VARCHAR" and values is None:
        out.append(StringLength(column, min=stats["min_length"], max=stats["max_length"]))
    return out


def _bound(function: str, col: str, kind: str) -> str:
    """SQL for a column's min or max; nanosecond timestamps as text, as Python's datetime would cut them to
    microseconds and a range from the cut bounds would fail on the very rows it came from."""
    return f"CAST({function}({col}) AS VARCHAR)" if _base(kind) in _NANOSECONDS else f"{function}({col})"


def _distinct(source: Source, column: str) -> int:
    return int(source.one(f"SELECT count(DISTINCT {quote(column)}) FROM data")[0])


def _maybe_key(stats: dict[str, Any], kind: str) -> bool:
    """Worth an exact distinct count: integer or text whose approximate count is near the row count."""
    keyish = kind == "VARCHAR" or _base(kind) in FAMILIES["integer"]
    return keyish and stats["distinct"] >= 0.9 * stats["non_null"]


def _categories(source: Source, column: str, stats: dict[str, Any], kind: str, limit: int) -> list[Any] | None:
    """The sorted value set of a categorical-looking column, or None."""
    categorical = kind in ("VARCHAR", "BOOLEAN") or _base(kind) in FAMILIES["integer"]
    if not categorical or stats["distinct"] > 2 * limit or stats["distinct"] * 2 > stats["non_null"]:
        return None
    col = quote(column)
    rows = source.sql(f"SELECT DISTINCT {col} FROM data WHERE {col} IS NOT NULL LIMIT {limit + 1}").fetchall()
    if len(rows) > limit or len(rows) * 2 > stats["non_null"]:
        return None
    values = [_plain(row[0]) for row in rows]
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _base(kind: str) -> str:
    return kind.split("(")[0]


def _plain(value: Any) -> Any:
    """Decimals as floats, dates and times as ISO text, so the suite is plain YAML."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
