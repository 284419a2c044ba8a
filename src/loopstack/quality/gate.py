"""Using a suite to stop bad data: a gate for pipeline steps, and a check for serving requests.

`gate` runs a whole suite and raises `QualityGateError` when it fails, so a
pipeline step fails with the reason instead of training on broken data.
`validate_request` applies the same suite's row checks to the few rows of a
serving request, with the same SQL conditions, so a check is defined once
for batch and online use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ValidationError
from loopstack.quality.expectations.base import RowExpectation
from loopstack.quality.results import SuiteResult
from loopstack.quality.source import nan_as_null, quote, shared_database

if TYPE_CHECKING:
    from loopstack.core.project import Project
    from loopstack.quality.suite import Suite

_MAX_LISTED = 5


class QualityGateError(ValidationError):
    """A suite failed at a gate; ``result`` holds the full `SuiteResult`."""

    def __init__(self, message: str, result: SuiteResult) -> None:
        super().__init__(message)
        self.result = result


def gate(
    suite: Suite, data: Any, project: Project | None = None, sample_size: int = 5, cause: int | None = None
) -> SuiteResult:
    """Run `suite` on `data`; raise `QualityGateError` if an error-severity check fails.

    With `project` the result is recorded as a ``quality.suite`` event first
    (``cause`` links it to, e.g., the pipeline run's event), so a blocked run
    leaves its reason in the event log.

    Examples
    --------
    >>> from loopstack.quality import NotNull, Suite
    >>> try:
    ...     gate(Suite("in", [NotNull("x")]), {"x": [1, None]})
    ... except QualityGateError as error:
    ...     print(error)  # doctest: +NORMALIZE_WHITESPACE
    quality gate 'in' failed 1 of 1 checks on dict of 1 columns: not_null(x): 1 unexpected of 2 (50.00%);
    fix the data or relax the suite (see error.result)
    """
    result = suite.run(data, sample_size=sample_size)
    if project is not None:
        from loopstack.quality.store import record

        record(project, result, cause=cause)
    if not result.passed:
        failures = result.failures
        listed = "; ".join(r.describe() for r in failures[:_MAX_LISTED])
        more = f"; and {len(failures) - _MAX_LISTED} more" if len(failures) > _MAX_LISTED else ""
        raise QualityGateError(
            f"quality gate {suite.name!r} failed {len(failures)} of {len(result.results)} checks on "
            f"{result.source}: {listed}{more}; fix the data or relax the suite (see error.result)",
            result,
        )
    return result


@dataclass
class RequestValidation:
    """Problems found in a serving request: one entry per offending row and check."""

    rows: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_request(suite: Suite, rows: Any, raise_on_error: bool = False) -> RequestValidation:
    """Check request rows against the suite's row checks that judge one row alone.

    Applies checks with ``mostly=1.0`` (a check that tolerates some bad rows
    in a batch cannot reject a single one) and, for z-scores, stored mean and
    std. A column absent from the request counts as null. Table checks
    (uniqueness, row count, distributions) do not apply to a request.

    Examples
    --------
    >>> from loopstack.quality import Between, NotNull, Suite
    >>> suite = Suite("req", [NotNull("age"), Between("age", min=0, max=120)])
    >>> for error in validate_request(suite, [{"age": 30}, {"age": -4}, {}]).errors:
    ...     print(error)
    {'row': 1, 'check': 'between(age)', 'column': 'age', 'value': -4}
    {'row': 2, 'check': 'not_null(age)', 'column': 'age', 'value': None}
    """
    import pyarrow as pa

    from loopstack.quality.source import _to_arrow

    table = _request_table([rows] if isinstance(rows, dict) else rows) if _is_rows(rows) else _to_arrow(rows)
    checks = [c for c in suite if isinstance(c, RowExpectation) and c.mostly >= 1.0 and c.self_contained]
    for name in {col for check in checks for col in check.columns_used} - set(table.column_names):
        table = table.append_column(name, pa.nulls(table.num_rows))
    report = RequestValidation(rows=table.num_rows)
    if not checks or not table.num_rows:
        return report
    flags = _flags(table, checks)
    for index, check in enumerate(checks):
        column = check.columns_used[0]
        values = table.column(column)
        bucket = report.errors if check.severity == "error" else report.warnings
        bucket.extend(
            {"row": row, "check": check.label, "column": column, "value": values[row].as_py()}
            for row, bad in enumerate(flags[index])
            if bad
        )
    report.errors.sort(key=lambda e: e["row"])
    report.warnings.sort(key=lambda e: e["row"])
    if raise_on_error and report.errors:
        listed = "; ".join(f"row {e['row']}: {e['check']} got {e['value']!r}" for e in report.errors[:_MAX_LISTED])
        raise ValidationError(f"request fails suite {suite.name!r}: {listed}; send values the suite allows")
    return report


def _request_table(rows: list[dict[str, Any]]) -> Any:
    """Request rows as Arrow; a column whose values mix types is a ValidationError naming the first odd one."""
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    for column in dict.fromkeys(name for row in rows for name in row):
        values = [row.get(column) for row in rows]
        index = _first_failing_row(len(values), lambda count, v=values: _fails([], pa.array, v[:count]))
        if index is None:
            continue
        alone: list[Exception] = []
        if _fails(alone, pa.array, [values[index]]):  # e.g. an integer beyond 64 bits
            raise ValidationError(
                f"request row {index}: column {column!r} value {values[index]!r} cannot be read "
                f"({type(alone[0]).__name__}: {alone[0]}); send numbers within 64 bits, strings or booleans"
            )
        first = next(v for v in values if v is not None)
        raise ValidationError(
            f"request row {index}: column {column!r} value {values[index]!r} is not of the type of the "
            f"column's other values ({type(first).__name__}, e.g. {first!r}); send one type per column"
        )
    raise ValidationError("request rows could not be read as a table; send a list of dicts of plain values")


def _flags(table: Any, checks: list[RowExpectation]) -> list[list[bool]]:
    """One column of booleans per check; a value a check cannot compare is a ValidationError naming it."""
    import duckdb

    try:
        return _query_flags(table, checks)
    except duckdb.Error:
        pass
    for check in checks:  # the slow path, only for a bad request: find the row and check that fail
        found = _offending_row(table, check)
        if found is not None:
            row, error = found
            column = check.columns_used[0]
            raise ValidationError(
                f"request row {row}: column {column!r} value {table.column(column)[row].as_py()!r} cannot be "
                f"checked by {check.label} ({str(error).splitlines()[0]}); send a value of the type the suite expects"
            )
    raise ValidationError("request rows cannot be checked by the suite; send values of the types it expects")


def _offending_row(table: Any, check: RowExpectation) -> tuple[int, Exception] | None:
    """The row whose value `check` cannot compare, and DuckDB's error; None if every row can be checked.

    A null never offends (its column's type does, named at a value), so only
    rows with a value are tried.
    """
    import pyarrow.compute as pc

    valued = pc.indices_nonzero(pc.is_valid(table.column(check.columns_used[0])))
    errors: list[Exception] = []

    def prefix_fails(count: int) -> bool:
        return _fails(errors, _query_flags, table.take(valued.slice(0, count)), [check])

    index = _first_failing_row(len(valued), prefix_fails)
    if index is None:
        return None
    prefix_fails(index + 1)  # DuckDB's error for exactly this prefix, to quote
    return valued[index].as_py(), errors[-1]


def _fails(errors: list[Exception], function: Any, *args: Any) -> bool:
    """Whether `function(*args)` raises an Arrow, DuckDB, type or value error (appended to `errors`)."""
    import duckdb
    import pyarrow as pa

    try:
        function(*args)
    except (pa.ArrowException, duckdb.Error, TypeError, ValueError, OverflowError) as exc:
        errors.append(exc)
        return True
    return False


def _first_failing_row(count: int, prefix_fails: Any) -> int | None:
    """The row that makes a prefix of the request fail: `prefix_fails(n)` for n rows, by bisection.

    A request of thousands of rows is answered in a dozen tries instead of
    one per row. None when all `count` rows pass. The row returned is one
    whose prefix fails while the prefix before it passes; it is the first
    such row when failing, once it starts, goes on (as it does for one
    value that cannot convert or compare).
    """
    if not prefix_fails(count):
        return None
    passing, failing = 0, count
    while failing - passing > 1:
        middle = (passing + failing) // 2
        if prefix_fails(middle):
            failing = middle
        else:
            passing = middle
    return failing - 1


def _query_flags(table: Any, checks: list[RowExpectation]) -> list[list[bool]]:
    """One column of booleans per check, from one DuckDB query over the request rows."""
    cursor = shared_database().cursor()
    try:
        cursor.register("data_raw", table)
        cursor.execute(f"CREATE OR REPLACE TEMP VIEW data AS {nan_as_null(cursor, 'data_raw')}")
        schema = {row[0]: row[1] for row in cursor.execute("DESCRIBE SELECT * FROM data").fetchall()}
        select = ", ".join(f"coalesce({c.condition(schema)}, FALSE) AS {quote(f'c{i}')}" for i, c in enumerate(checks))
        return [list(col) for col in zip(*cursor.execute(f"SELECT {select} FROM data").fetchall(), strict=True)]
    finally:
        cursor.close()


def _is_rows(rows: Any) -> bool:
    return (isinstance(rows, dict) and not any(isinstance(v, list | tuple) for v in rows.values())) or (
        isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    )
