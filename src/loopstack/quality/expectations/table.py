"""Checks over the table as a whole: uniqueness, row count, foreign keys.

Each runs its own DuckDB query over the view ``data``; none loads the data
into Python, so they work on Parquet folders larger than memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from loopstack.core.errors import ConfigError
from loopstack.quality.expectations.base import TableExpectation
from loopstack.quality.results import ExpectationResult
from loopstack.quality.source import quote

if TYPE_CHECKING:
    from loopstack.quality.source import Source


def fetch_dicts(cursor: Any) -> list[dict[str, Any]]:
    """Rows of a DuckDB cursor as dicts (small results only: samples)."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _duplicates(source: Source, columns: list[str], sample_size: int) -> tuple[int, int, int, list[dict[str, Any]]]:
    """Rows in duplicated key groups, such groups, non-null rows, and the biggest groups, in one query.

    Rows with a null in any key column are left out, as a SQL UNIQUE
    constraint leaves them out; every row of a duplicated group offends
    (Great Expectations and pandera count them so). The sample is the
    biggest groups, equal sizes in key order, so it does not depend on
    how DuckDB's hash table or threads happened to order the groups.
    """
    keys = ", ".join(quote(c) for c in columns)
    present = " AND ".join(f"{quote(c)} IS NOT NULL" for c in columns)
    packed = ", ".join(f"{quote(c)} := {quote(c)}" for c in columns)
    top = (
        f", min_by(struct_pack({packed}, count := n), row(-n, {keys}), {int(sample_size)}) FILTER (WHERE n > 1)"
        if sample_size
        else ""
    )
    rows, groups, elements, *sample = source.one(
        f"SELECT coalesce(sum(n) FILTER (WHERE n > 1), 0), count(*) FILTER (WHERE n > 1), coalesce(sum(n), 0){top} "
        f"FROM (SELECT {keys}, count(*) AS n FROM data WHERE {present} GROUP BY {keys}) AS groups"
    )
    return int(rows), int(groups), int(elements), list(sample[0] or []) if sample else []


@dataclass
class Unique(TableExpectation):
    """Every non-null value occurs once; all rows of a repeated value offend.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> Suite("s", [Unique("id")]).run({"id": [1, 2, 2, 3, 3, 3, None]})["unique(id)"].unexpected_count
    5
    """

    kind: ClassVar[str] = "unique"
    column: str

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        rows, groups, elements, sample = _duplicates(source, [self.column], sample_size)
        return ExpectationResult(self.spec(), rows == 0, rows, elements, {"duplicated_values": groups}, sample)


@dataclass
class CompoundUnique(TableExpectation):
    """Every combination of the columns occurs once (rows with a null key are skipped).

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> data = {"a": [1, 1, 1], "b": ["x", "y", "x"]}
    >>> Suite("s", [CompoundUnique(["a", "b"])]).run(data)["compound_unique(a, b)"].unexpected_count
    2
    """

    kind: ClassVar[str] = "compound_unique"
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.columns) < 2:
            raise ConfigError(f"compound_unique needs two or more columns, got {self.columns!r}; use unique for one")
        self.columns = list(self.columns)

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        rows, groups, elements, sample = _duplicates(source, self.columns, sample_size)
        return ExpectationResult(self.spec(), rows == 0, rows, elements, {"duplicated_keys": groups}, sample)


@dataclass
class RowCount(TableExpectation):
    """The number of rows lies within ``[min, max]``.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> Suite("s", [RowCount(min=3)]).run({"x": [1, 2]}).passed
    False
    """

    kind: ClassVar[str] = "row_count"
    min: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min is None and self.max is None:
            raise ConfigError("row_count: give min, max or both")
        for name, bound in (("min", self.min), ("max", self.max)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
                raise ConfigError(f"row_count: {name}={bound!r} is not a number of rows; write e.g. {name}: 100")

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        passed = (self.min is None or row_count >= self.min) and (self.max is None or row_count <= self.max)
        return ExpectationResult(self.spec(), passed, 0, row_count, {"row_count": row_count})


@dataclass(eq=False)
class ForeignKey(TableExpectation):
    """Every non-null value of `column` exists in `reference_column` of another table.

    `reference` is any input a suite accepts: a Parquet path or folder, a
    frame, an Arrow table or a `Query`. A path or SQL text keeps the suite
    writable as YAML.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> users = {"id": [1, 2]}
    >>> check = ForeignKey("user_id", reference=users, reference_column="id")
    >>> Suite("s", [check]).run({"user_id": [1, 2, 9, None]})["foreign_key(user_id)"].unexpected_count
    1
    """

    kind: ClassVar[str] = "foreign_key"
    column: str
    reference: Any = None
    reference_column: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference is None:
            raise ConfigError(f"{self.label}: give reference=, the table the keys must exist in")

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        ref = source.attach(self.reference)
        target = self.reference_column or self.column
        if target not in source.columns_of(ref):
            return ExpectationResult(
                self.spec(), False, error=f"reference has no column {target!r}; set reference_column="
            )
        col = quote(self.column)
        orphans = (
            f"SELECT {source.sample_select([self.column])} FROM data d WHERE d.{col} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {ref} r WHERE r.{quote(target)} = d.{col})"
        )
        missing, keys = source.one(f"SELECT count(*), count(DISTINCT {col}) FROM ({orphans})")
        elements = int(source.one(f"SELECT count({col}) FROM data")[0])
        sample = fetch_dicts(source.sql(f"{orphans} LIMIT {int(sample_size)}")) if missing and sample_size else []
        return ExpectationResult(self.spec(), missing == 0, int(missing), elements, {"missing_keys": int(keys)}, sample)
