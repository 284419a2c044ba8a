"""The two shapes of an expectation, and the kind registry that YAML suites use.

A `RowExpectation` is a SQL condition that is true on an offending row. The
row expectations of a suite are counted together, each column read once,
and the same conditions validate single serving requests, so a check is
defined once for batch and online use. A `TableExpectation` needs its own query (a
``GROUP BY`` for uniqueness, an anti-join for foreign keys, a model for
outliers) and returns its result itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from loopstack.core.errors import ConfigError
from loopstack.quality.source import Query, describe

if TYPE_CHECKING:
    from loopstack.quality.results import ExpectationResult
    from loopstack.quality.source import Source

KINDS: dict[str, type[Expectation]] = {}
SEVERITIES = ("error", "warning")


@dataclass
class Expectation:
    """Base of every expectation: a kind name, a severity, and its parameters as fields."""

    kind: ClassVar[str] = ""
    severity: str = field(default="error", kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            KINDS[cls.kind] = cls

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ConfigError(f"{self.label}: severity={self.severity!r}; use one of {SEVERITIES}")

    @property
    def columns_used(self) -> list[str]:
        """Columns of the checked data this expectation reads (checked before it runs)."""
        names: list[str] = []
        for name in ("column", "columns"):
            value = getattr(self, name, None)
            if isinstance(value, str):
                names.append(value)
            elif isinstance(value, list | tuple):
                names.extend(value)
        return names

    @property
    def label(self) -> str:
        """``kind(column)``, matching `ExpectationResult.label`."""
        used = ", ".join(self.columns_used)
        return f"{self.kind}({used})" if used else self.kind

    def to_dict(self, describe_data: bool = False) -> dict[str, Any]:
        """``kind`` plus every parameter that differs from its default (the YAML form).

        In-memory data held as a parameter (a reference frame) stays as the
        object, or with `describe_data` becomes a short description, which is
        how results and events record it.
        """
        out: dict[str, Any] = {"kind": self.kind}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.default is not dataclasses.MISSING and value == item.default:
                continue
            if item.default_factory is not dataclasses.MISSING and value == item.default_factory():
                continue
            out[item.name] = _plain(value, describe_data)
        return out

    def spec(self) -> dict[str, Any]:
        """``to_dict`` with in-memory data described, as results and events record it."""
        return self.to_dict(describe_data=True)

    @staticmethod
    def from_dict(spec: dict[str, Any]) -> Expectation:
        """Build an expectation from its ``to_dict()`` form.

        Examples
        --------
        >>> Expectation.from_dict({"kind": "between", "column": "age", "min": 0})
        Between(severity='error', mostly=1.0, column='age', min=0, max=None, strict=False)
        """
        if not isinstance(spec, dict):
            raise ConfigError(f"expectation {spec!r} is not a mapping; write it as {{kind: not_null, column: x}}")
        params = dict(spec)
        kind = params.pop("kind", None)
        cls = KINDS.get(str(kind))
        if cls is None and kind is None:
            raise ConfigError(f"expectation {dict(spec)} has no 'kind'; add one of {sorted(KINDS)}")
        if cls is None:
            raise ConfigError(f"unknown expectation kind {kind!r}; known kinds: {sorted(KINDS)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"expectation {kind!r} has no parameter(s) {unknown}; it takes {sorted(known)}")
        try:
            return cls(**params)
        except TypeError as error:
            raise ConfigError(f"expectation {kind!r}: {error}; it takes {sorted(known)}") from error


@dataclass
class RowExpectation(Expectation):
    """An expectation met row by row: a SQL condition true on offending rows.

    ``mostly`` is the share of rows (non-null rows for value checks) that
    must meet it, as in Great Expectations; 1.0 means every row.
    """

    mostly: float = field(default=1.0, kw_only=True)
    counts_nulls: ClassVar[bool] = False  # True: the ratio is over all rows, not non-null ones
    cost: ClassVar[int] = 1  # rough CPU per row relative to a comparison; slow scans start first

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.mostly <= 1.0:
            raise ConfigError(f"{self.label}: mostly={self.mostly!r} must be between 0 and 1")

    def condition(self, schema: dict[str, str]) -> str:
        """SQL that is TRUE for an offending row; NULL or FALSE means the row is fine."""
        raise NotImplementedError

    def prepare(self, source: Source) -> RowExpectation:
        """Learn what the condition needs from the data (e.g. a mean); return self if nothing."""
        return self

    @property
    def self_contained(self) -> bool:
        """Whether the condition can judge one row alone (serving requests need this)."""
        return True

    def judge(self, unexpected: int, elements: int) -> bool:
        """Pass when the offending share is within ``1 - mostly``."""
        if elements == 0:
            return True
        return (elements - unexpected) / elements >= self.mostly - 1e-12


class TableExpectation(Expectation):
    """An expectation that needs its own query over the whole table."""

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        """Evaluate against `source` (the view ``data``) and return the result."""
        raise NotImplementedError


def _plain(value: Any, describe_data: bool = False) -> Any:
    """Tuples and sets as lists and NumPy scalars as numbers, so that YAML and JSON hold them."""
    if isinstance(value, tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_plain(v, describe_data) for v in items]
    if isinstance(value, list):
        return [_plain(v, describe_data) for v in value]
    if isinstance(value, Query) and value.connection is None:
        return value.sql  # SQL text reads back as the same query
    if hasattr(value, "item") and getattr(value, "size", 1) == 1 and not hasattr(value, "columns"):
        return value.item()  # a NumPy scalar, even one that subclasses float or str (YAML cannot write those)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict) and not _holds_arrays(value):
        return {k: _plain(v, describe_data) for k, v in value.items()}
    if hasattr(value, "isoformat"):  # a date or time bound
        return value if _yaml_date(value) and not describe_data else value.isoformat()
    return describe(value) if describe_data else value


def _yaml_date(value: Any) -> bool:
    """A plain date or datetime, which YAML writes and reads back as itself (a time or pandas Timestamp is not)."""
    import datetime

    return type(value) in (datetime.date, datetime.datetime)


def _holds_arrays(value: dict[str, Any]) -> bool:
    """A dict of columns (data) rather than a mapping of parameters."""
    return any(isinstance(v, list | tuple) or hasattr(v, "__array__") for v in value.values())
