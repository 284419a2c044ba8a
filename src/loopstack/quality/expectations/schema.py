"""Schema checks: declared column types, and changes against a baseline schema.

Types are DuckDB type names as ``DESCRIBE`` prints them (``BIGINT``,
``DOUBLE``, ``VARCHAR``, ``TIMESTAMP``...). A declared type may also be a
family, so that ``integer`` accepts INTEGER and BIGINT alike: reading the same
data through pandas, polars or Parquet can change the width, and a check
should not fail on that unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from loopstack.core.errors import ConfigError
from loopstack.quality.expectations.base import TableExpectation
from loopstack.quality.results import ExpectationResult

if TYPE_CHECKING:
    from loopstack.quality.source import Source

_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_FLOATS = ("FLOAT", "DOUBLE")
_TIMESTAMPS = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S")
FAMILIES: dict[str, tuple[str, ...]] = {
    "integer": _INTEGERS,
    "float": _FLOATS,
    "numeric": (*_INTEGERS, *_FLOATS, "DECIMAL"),
    "string": ("VARCHAR",),
    "boolean": ("BOOLEAN",),
    "date": ("DATE",),
    "timestamp": _TIMESTAMPS,
    "temporal": ("DATE", "TIME", "TIME WITH TIME ZONE", *_TIMESTAMPS),
}


def type_matches(expected: str, actual: str) -> bool:
    """Whether a DuckDB type satisfies a declared type or family (case-insensitive).

    Examples
    --------
    >>> type_matches("integer", "BIGINT"), type_matches("numeric", "DECIMAL(10,2)"), type_matches("DOUBLE", "FLOAT")
    (True, True, False)
    """
    wanted, got = expected.strip(), actual.strip().upper()
    family = FAMILIES.get(wanted.lower())
    if family is not None:
        return got in family or got.split("(")[0] in family
    return got == wanted.upper()


@dataclass
class ColumnTypes(TableExpectation):
    """The listed columns exist with the given types (other columns are ignored).

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> result = Suite("s", [ColumnTypes({"x": "integer", "y": "string"})]).run({"x": [1.5]})
    >>> result["column_types"].observed
    {'missing': ['y'], 'mismatched': {'x': {'expected': 'integer', 'actual': 'DOUBLE'}}}
    """

    kind: ClassVar[str] = "column_types"
    types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.types or not isinstance(self.types, dict):
            raise ConfigError(f"column_types: types={self.types!r}; map column names to types, e.g. {{id: integer}}")
        for name, wanted in self.types.items():
            if not isinstance(wanted, str) or (wanted.lower() not in FAMILIES and not wanted[:1].isalpha()):
                raise ConfigError(f"column_types: type {wanted!r} of {name!r} is not a DuckDB type or a family")

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        schema = source.schema
        missing = [name for name in self.types if name not in schema]
        wrong = {
            name: {"expected": wanted, "actual": schema[name]}
            for name, wanted in self.types.items()
            if name in schema and not type_matches(wanted, schema[name])
        }
        bad = len(missing) + len(wrong)
        return ExpectationResult(self.spec(), bad == 0, bad, len(self.types), {"missing": missing, "mismatched": wrong})


@dataclass
class SchemaMatches(TableExpectation):
    """Columns and types equal a baseline schema; reports added, removed and retyped columns.

    Each kind of change can be allowed on its own, e.g. ``allow_added=True``
    for a table that may grow new columns. `profile` records the baseline.

    Examples
    --------
    >>> from loopstack.quality import Suite
    >>> check = SchemaMatches({"id": "BIGINT", "name": "VARCHAR"})
    >>> Suite("s", [check]).run({"id": [1.0], "age": [3]})["schema_matches"].observed
    {'added': {'age': 'BIGINT'}, 'removed': {'name': 'VARCHAR'}, 'retyped': {'id': {'from': 'BIGINT', 'to': 'DOUBLE'}}}
    """

    kind: ClassVar[str] = "schema_matches"
    baseline: dict[str, str] = field(default_factory=dict)
    allow_added: bool = False
    allow_removed: bool = False
    allow_retyped: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.baseline:
            raise ConfigError("schema_matches: baseline is empty; pass {column: type}, e.g. from profile()")

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        changes = schema_changes(self.baseline, source.schema)
        bad = sum(
            len(changes[name])
            for name, allowed in (
                ("added", self.allow_added),
                ("removed", self.allow_removed),
                ("retyped", self.allow_retyped),
            )
            if not allowed
        )
        return ExpectationResult(self.spec(), bad == 0, bad, len(self.baseline), changes)


def schema_changes(baseline: dict[str, str], current: dict[str, str]) -> dict[str, Any]:
    """Columns added, removed and retyped going from `baseline` to `current`."""
    return {
        "added": {name: kind for name, kind in current.items() if name not in baseline},
        "removed": {name: kind for name, kind in baseline.items() if name not in current},
        "retyped": {
            name: {"from": kind, "to": current[name]}
            for name, kind in baseline.items()
            if name in current and current[name].upper() != kind.upper()
        },
    }
