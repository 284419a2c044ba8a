"""Run expectations over a source: row checks counted by scans, then each table check's query.

A scan is a single ``SELECT count(*) FILTER (WHERE ...)`` with one pair of
aggregates per row check, so ten checks read the data once, as DuckDB
streams it. Samples of offending rows are fetched afterwards, only for
checks that found some, with ``LIMIT`` so the scan stops early. A check that
cannot run (missing column, bad pattern, a value of the wrong type) becomes a
failed result with the reason, and the others still run.

A Parquet input is read by one DuckDB thread per row group, so a file of
one row group would keep one core busy however many checks it has. There
the row checks are split by the columns they read (each column is still
read once) and these scans and the table checks run as separate queries on
DuckDB's threads at once; every other input runs its queries in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from loopstack.quality.expectations.base import Expectation, RowExpectation, TableExpectation
from loopstack.quality.expectations.table import fetch_dicts
from loopstack.quality.results import ExpectationResult
from loopstack.quality.source import Source, quote

T = TypeVar("T")


def evaluate(
    expectations: list[Expectation], source: Source, sample_size: int = 5
) -> tuple[list[ExpectationResult], int]:
    """Results in the order of `expectations`, and the row count."""
    results, rows, tables = _plan(expectations, source)
    workers = source.workers
    groups = _groups(rows, 4 * workers, source.schema)
    if workers < 2 or len(groups) + len(tables) < 2:
        row_count, found = _run_rows(rows, sample_size, source)
        results.update(found)
        results.update(_run_table(tables, row_count, sample_size, source)[1])
        return [results[i] for i in range(len(expectations))], row_count
    # Independent queries on `workers` threads; table checks first, as they are the slowest.
    row_count = int(source.one("SELECT count(*) FROM data")[0])  # Parquet metadata: no scan
    tasks = [partial(_run_table, {index: check}, row_count, sample_size) for index, check in tables.items()]
    tasks += [partial(_run_rows, group, sample_size) for group in groups]
    for found in _in_parallel(source, tasks, workers):
        results.update(found[1])
    return [results[i] for i in range(len(expectations))], row_count


def _plan(
    expectations: list[Expectation], source: Source
) -> tuple[dict[int, ExpectationResult], dict[int, RowExpectation], dict[int, TableExpectation]]:
    """Checks that cannot run (as failed results), prepared row checks and table checks, by position."""
    schema = source.schema
    results: dict[int, ExpectationResult] = {}
    rows: dict[int, RowExpectation] = {}
    tables: dict[int, TableExpectation] = {}
    for index, expectation in enumerate(expectations):
        missing = [c for c in expectation.columns_used if c not in schema]
        if missing:
            results[index] = _failed(expectation, f"column(s) {missing} not in the data; columns: {list(schema)}")
        elif isinstance(expectation, RowExpectation):
            try:
                rows[index] = expectation.prepare(source)
            except _errors() as error:
                results[index] = _failed(expectation, _reason(error))
        elif isinstance(expectation, TableExpectation):
            tables[index] = expectation
    return results, rows, tables


def _groups(rows: dict[int, RowExpectation], most: int, schema: dict[str, str]) -> list[dict[int, RowExpectation]]:
    """Row checks split by the columns they read (none read twice) in at most `most` groups, costliest first.

    Threads take the groups in this order, so starting the slow scans (a
    regex over text) first keeps one from running alone at the end.
    """
    by_columns: dict[tuple[str, ...], dict[int, RowExpectation]] = {}
    for index, check in rows.items():
        by_columns.setdefault(tuple(check.columns_used), {})[index] = check
    ranked = sorted(by_columns.values(), key=lambda group: -_cost(group, schema))
    groups: list[dict[int, RowExpectation]] = [{} for _ in range(min(most, len(ranked)))]
    for group in ranked:  # each onto the cheapest so far, so that merged groups stay even
        min(groups, key=lambda merged: _cost(merged, schema)).update(group)
    return sorted(groups, key=lambda group: -_cost(group, schema))


def _cost(group: dict[int, RowExpectation], schema: dict[str, str]) -> int:
    """A rough relative cost of scanning for `group`: its checks, plus its columns (text decodes slower)."""
    columns = {column for check in group.values() for column in check.columns_used}
    return sum(check.cost for check in group.values()) + sum(2 if schema.get(c) == "VARCHAR" else 1 for c in columns)


def _in_parallel(source: Source, tasks: list[Callable[[Source], T]], workers: int) -> list[T]:
    """Run `tasks` on `workers` threads, each with its own cursor on the input; results in order.

    DuckDB releases the GIL while a query runs, so the threads' queries run
    on separate cores. Tasks are taken in order as threads free up; after
    a failure the others stop taking new ones and the error is raised here.
    """
    pending = list(enumerate(tasks))[::-1]
    done: dict[int, T] = {}

    def work(own: Source) -> None:
        while True:
            try:
                position, task = pending.pop()
            except IndexError:  # none left
                return
            try:
                done[position] = task(own)
            except BaseException:
                pending.clear()
                raise

    copies = [source.reopen() for _ in range(min(workers, len(tasks)) - 1)]
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(copies))) as pool:
            others = [pool.submit(work, copy) for copy in copies]
            work(source)
            for other in others:
                other.result()
    finally:
        for copy in copies:
            copy.close()
    return [done[position] for position in range(len(tasks))]


def _run_rows(
    rows: dict[int, RowExpectation], sample_size: int, source: Source
) -> tuple[int, dict[int, ExpectationResult]]:
    """The row count and the results of row checks: one scan counts them all, then samples of the failed ones."""
    schema = source.schema
    results: dict[int, ExpectationResult] = {}
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
    return row_count, results


def _run_table(
    tables: dict[int, TableExpectation], row_count: int, sample_size: int, source: Source
) -> tuple[int, dict[int, ExpectationResult]]:
    """Results of table checks, each its own query."""
    results: dict[int, ExpectationResult] = {}
    for index, expectation in tables.items():
        try:
            results[index] = expectation.run(source, row_count, sample_size)
        except _errors() as error:
            results[index] = _failed(expectation, _reason(error))
    return row_count, results


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
