"""Value checks that judge each row alone: nulls, ranges, sets, patterns, lengths, z-scores.

Each compiles to one SQL condition. Nulls never offend a value check (they
are the business of `NotNull`), which is what Great Expectations and pandera
do too, so a column may be both nullable and range-checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from loopstack.core.errors import ConfigError
from loopstack.quality.expectations.base import RowExpectation
from loopstack.quality.source import literal, quote

if TYPE_CHECKING:
    from loopstack.quality.source import Source

FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8")


@dataclass
class NotNull(RowExpectation):
    """No nulls (NaN counts as null in float columns); ``mostly`` sets a null-ratio threshold.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> result = Suite("s", [NotNull("x", mostly=0.5)]).run({"x": [1.0, None, float("nan"), 4.0]})
    >>> result["not_null(x)"].unexpected_count, result.passed
    (2, True)
    """

    kind: ClassVar[str] = "not_null"
    counts_nulls: ClassVar[bool] = True
    column: str

    def condition(self, schema: dict[str, str]) -> str:
        col = quote(self.column)
        if schema.get(self.column, "").upper() in FLOAT_TYPES:
            return f"({col} IS NULL OR isnan({col}))"
        return f"{col} IS NULL"


@dataclass
class Between(RowExpectation):
    """Values within ``[min, max]`` (or the open interval when ``strict``); either bound may be omitted.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> Suite("s", [Between("age", min=0, max=120)]).run({"age": [5, -1, 130, None]})["between(age)"].unexpected_count
    2
    """

    kind: ClassVar[str] = "between"
    column: str
    min: Any = None
    max: Any = None
    strict: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min is None and self.max is None:
            raise ConfigError(f"{self.label}: give min, max or both")
        for name, bound in (("min", self.min), ("max", self.max)):
            if isinstance(bound, float) and bound != bound:  # NaN compares false with everything (DuckDB: largest)
                raise ConfigError(f"{self.label}: {name}=nan is no bound; give a number or leave {name} out")

    def condition(self, schema: dict[str, str]) -> str:
        col = quote(self.column)
        low, high = (">", "<") if self.strict else (">=", "<=")
        parts = []
        if self.min is not None:
            parts.append(f"{col} {low} {literal(self.min)}")
        if self.max is not None:
            parts.append(f"{col} {high} {literal(self.max)}")
        return f"NOT ({' AND '.join(parts)})"


@dataclass
class InSet(RowExpectation):
    """Values drawn from a fixed set.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> Suite("s", [InSet("c", ["a", "b"])]).run({"c": ["a", "z", None]})["in_set(c)"].unexpected_count
    1
    """

    kind: ClassVar[str] = "in_set"
    column: str
    values: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.values:
            raise ConfigError(f"{self.label}: values is empty; list the allowed values")
        self.values = list(self.values)

    def condition(self, schema: dict[str, str]) -> str:
        # A NULL in the list would make `x IN (...)` NULL, not FALSE, for every value outside it, so nothing
        # would offend; nulls never offend a value check anyway, so None in `values` is left out.
        allowed = [literal(v) for v in self.values if v is not None]
        col = quote(self.column)
        return f"NOT ({col} IN ({', '.join(allowed)}))" if allowed else f"{col} IS NOT NULL"


@dataclass
class Regex(RowExpectation):
    """Values (as text) that match a RE2 pattern: anywhere by default, the whole value with ``full_match``.

    The default matches anywhere in the value, like ``re.search`` and Great
    Expectations; anchor the pattern (``^...$``) or set ``full_match`` to
    require the whole value. RE2 has no backreferences or lookaround.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> Suite("s", [Regex("id", r"^[A-Z]{2}\\d+$")]).run({"id": ["AB12", "ab12", "XY"]})["regex(id)"].unexpected_count
    2
    """

    kind: ClassVar[str] = "regex"
    cost: ClassVar[int] = 4
    column: str
    pattern: str
    full_match: bool = False

    def condition(self, schema: dict[str, str]) -> str:
        col = quote(self.column)
        if schema.get(self.column, "VARCHAR") != "VARCHAR":
            col = f"CAST({col} AS VARCHAR)"
        function = "regexp_full_match" if self.full_match else "regexp_matches"
        return f"NOT {function}({col}, {literal(self.pattern)})"


@dataclass
class StringLength(RowExpectation):
    """Text length (in characters) within ``[min, max]``.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> result = Suite("s", [StringLength("s", min=2, max=3)]).run({"s": ["a", "ab", "abcd"]})
    >>> result["string_length(s)"].unexpected_count
    2
    """

    kind: ClassVar[str] = "string_length"
    cost: ClassVar[int] = 2
    column: str
    min: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min is None and self.max is None:
            raise ConfigError(f"{self.label}: give min, max or both")
        for name, bound in (("min", self.min), ("max", self.max)):
            if isinstance(bound, float) and bound != bound:  # NaN compares false with everything (DuckDB: largest)
                raise ConfigError(f"{self.label}: {name}=nan is no bound; give a number or leave {name} out")

    def condition(self, schema: dict[str, str]) -> str:
        length = f"length(CAST({quote(self.column)} AS VARCHAR))"
        parts = []
        if self.min is not None:
            parts.append(f"{length} >= {int(self.min)}")
        if self.max is not None:
            parts.append(f"{length} <= {int(self.max)}")
        return f"NOT ({' AND '.join(parts)})"


@dataclass
class ZScoreOutliers(RowExpectation):
    """No value more than ``threshold`` standard deviations from the mean.

    With ``mean`` and ``std`` given (`profile` takes them from the reference
    data) each row is judged alone, so serving requests can be checked too;
    left out, they are learned from the checked data in one extra query.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> check = ZScoreOutliers("x", threshold=2.0, mean=0.0, std=1.0)
    >>> Suite("s", [check]).run({"x": [0.5, -2.5, 3.0]})["zscore_outliers(x)"].unexpected_count
    2
    """

    kind: ClassVar[str] = "zscore_outliers"
    column: str
    threshold: float = 3.0
    mean: float | None = None
    std: float | None = None

    @property
    def self_contained(self) -> bool:
        return self.mean is not None and self.std is not None

    def prepare(self, source: Source) -> ZScoreOutliers:
        if self.self_contained:
            return self
        col = quote(self.column)
        mean, std = source.one(f"SELECT avg({col}), stddev_samp({col}) FROM data")
        return ZScoreOutliers(
            self.column, self.threshold, mean=mean, std=std, mostly=self.mostly, severity=self.severity
        )

    def condition(self, schema: dict[str, str]) -> str:
        if self.mean is None or not self.std:  # constant or empty column: nothing stands out
            return "FALSE"
        return f"abs(({quote(self.column)} - {literal(float(self.mean))}) / {literal(float(self.std))}) > " + literal(
            float(self.threshold)
        )
