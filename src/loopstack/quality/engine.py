"""Run expectations over a source: every row check in one scan, then the table checks.

The scan is a single ``SELECT count(*) FILTER (WHERE ...)`` with one pair of
aggregates per row check, so ten checks read the data once, as DuckDB
streams it. Samples of offending rows are fetched afterwards, only for
checks that found some, with ``LIMIT`` so the scan stops early. A check that
cannot run (missing column, bad pattern, a value of the wrong type) becomes a
failed result with the reason, and the others still run.
"""

from __future__ import annotations

from typing import Any

from loopstack.quality.expectations.base import Expectation, RowExpectation, TableExpectation
from loopstack.quality.expectations.table import fetch_dicts
from loopstack.quality.results import ExpectationResult
from loopstack.quality.source import Source, quote


def evaluate(
    expectations: list[Expectation], source: Source, sample_size: int = 5
) -> tuple[list[ExpectationResult], int]:
    """Results in the order of `expectations`, and the row count."""
    schema = source.schema
    results: dict[int, ExpectationResult] = {}
    rows: dict[int, RowExpectation] = {}
    for index, expectation in enumerate(expectations):
        missing = [c for c in expectation.columns_used if c not in schema]
        if missing:
            results[index] = _failed(expectation, f"column(s) {missing} not in the data; columns: {list(schema)}")
        elif isinstance(expectation, RowExpectation):
            try:
                rows[index] = expectation.prepare(source)
            except _errors() as error:
                results[index] = _failed(expectation, _reason(error))
    row_count, counts = _scan(source, rows, schema)
    for index, check in rows.items():
        if isinstance(counts[index], str):
            results[index] = _failed(check, counts[index])
            continue
        unexpected, elements = counts[index]
        sample = _sample(source, check, schema, sample_size) if unexpected and sample_size else []
        results[index] = ExpectationResult(
            check.spec(),
            check.judge(unexpected, elements),
            unexpected,
            elements,
            _observed(check, unexpected, elements),
            sample,
        )
    for index, expectation in enumerate(expectations):
        if index not in results and isinstance(expectation, TableExpectation):
            try:
                results[index] = expectation.run(source, row_count, sample_size)
            except _errors() as error:
                results[index] = _failed(expectation, _reason(error))
    return [results[i] for i in range(len(expectations))], row_count


def _scan(
    source: Source, rows: dict[int, RowExpectation], schema: dict[str, str]
) -> tuple[int, dict[int, tuple[int, int] | str]]:
    """The row count and (unexpected, elements) per row check, from one query when all compile."""
    try:
        return _count(source, rows, schema)
    except _errors():
        pass
    # One check broke the shared query: count each alone so only that one fails.
    counts: dict[int, tuple[int, int] | str] = {}
    row_count = int(source.one("SELECT count(*) FROM data")[0])
    for index, check in rows.items():
        try:
            counts[index] = _count(source, {index: check}, schema)[1][index]
        except _errors() as error:
            counts[index] = _reason(error)
    return row_count, counts


def _count(
    source: Source, rows: dict[int, RowExpectation], schema: dict[str, str]
) -> tuple[int, dict[int, tuple[int, int] | str]]:
    parts = ["count(*)"]
    for check in rows.values():
        parts.append(f"count(*) FILTER (WHERE {check.condition(schema)})")
        parts.append("count(*)" if check.counts_nulls else f"count({quote(check.columns_used[0])})")
    values = source.one(f"SELECT {', '.join(parts)} FROM data")
    counts: dict[int, tuple[int, int] | str] = {
        index: (int(values[1 + 2 * k]), int(values[2 + 2 * k])) for k, index in enumerate(rows)
    }
    return int(values[0]), counts


def _sample(source: Source, check: RowExpectation, schema: dict[str, str], size: int) -> list[dict[str, Any]]:
    select = source.sample_select(check.columns_used)
    return fetch_dicts(source.sql(f"SELECT {select} FROM data WHERE {check.condition(schema)} LIMIT {int(size)}"))


def _observed(check: RowExpectation, unexpected: int, elements: int) -> dict[str, Any]:
    ratio = unexpected / elements if elements else 0.0
    return {"null_ratio" if check.counts_nulls else "unexpected_ratio": ratio}


def _failed(expectation: Expectation, reason: str) -> ExpectationResult:
    return ExpectationResult(expectation.spec(), False, error=reason)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"


def _errors() -> tuple[type[BaseException], ...]:
    """Errors that mean 'this check cannot run on this data', not a bug in loopstack."""
    import duckdb

    from loopstack.core.errors import LoopstackError

    return (duckdb.Error, LoopstackError, ValueError)
