"""Feature value types: what a `Field` declares, and how each maps to Arrow and DuckDB.

A declared type is a promise to the model that reads the feature, so every
path casts to it: offline retrieval returns exactly this Arrow type, the
online store decodes to the matching Python type, and `apply` rejects a
source column whose type cannot be cast without loss (a float column declared
``Int64``, a string declared ``Float64``).

Examples
--------
>>> from loopstack.features.types import Float64, from_name
>>> Float64.duckdb
'DOUBLE'
>>> from_name("int64").name
'Int64'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loopstack.core.errors import ValidationError


@dataclass(frozen=True)
class DType:
    """One feature value type.

    Parameters
    ----------
    name
        The public name, as in ``Field(name="trips", dtype=Int64)``.
    duckdb
        The DuckDB type a source column is cast to.
    accepts
        DuckDB source column types that cast to this one without loss.
    """

    name: str
    duckdb: str
    accepts: frozenset[str]

    def arrow(self) -> Any:
        """The Arrow type of this dtype (imports pyarrow on first use)."""
        import pyarrow as pa

        return {
            "Int32": pa.int32(), "Int64": pa.int64(), "Float32": pa.float32(), "Float64": pa.float64(),
            "String": pa.string(), "Bool": pa.bool_(), "Bytes": pa.binary(), "UnixTimestamp": pa.timestamp("us"),
        }[self.name]

    def encode_sql(self, column: str) -> str:
        """SQL that turns `column` into a JSON-safe value for the online store."""
        if self.name == "UnixTimestamp":
            return f"epoch_us(CAST({column} AS TIMESTAMP))"
        if self.name == "Bytes":
            return f"base64(CAST({column} AS BLOB))"
        return f"CAST({column} AS {self.duckdb})"

    def decode(self, value: Any) -> Any:
        """A JSON value read from the online store as the Python value of this type."""
        if value is None:
            return None
        if self.name == "UnixTimestamp":
            return datetime.fromtimestamp(value / 1e6, tz=UTC)
        if self.name == "Bytes":
            import base64

            return base64.b64decode(value)
        return value

    def __repr__(self) -> str:
        return self.name


_INTS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT"})
Int32 = DType("Int32", "INTEGER", _INTS)
Int64 = DType("Int64", "BIGINT", _INTS | {"BIGINT", "UINTEGER"})
Float32 = DType("Float32", "FLOAT", frozenset({"FLOAT"}))
Float64 = DType("Float64", "DOUBLE", frozenset({"FLOAT", "DOUBLE", "DECIMAL", "BIGINT"}) | _INTS)
String = DType("String", "VARCHAR", frozenset({"VARCHAR"}))
Bool = DType("Bool", "BOOLEAN", frozenset({"BOOLEAN"}))
Bytes = DType("Bytes", "BLOB", frozenset({"BLOB"}))
UnixTimestamp = DType(
    "UnixTimestamp", "TIMESTAMP",
    frozenset({"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMPTZ_NS", "TIMESTAMP_MS",
               "TIMESTAMP_S", "DATE"}),  # TIMESTAMPTZ_NS: a zoned nanosecond column (pandas 2's default)
)

ALL = (Int32, Int64, Float32, Float64, String, Bool, Bytes, UnixTimestamp)
_BY_NAME = {dtype.name.lower(): dtype for dtype in ALL}
TIMESTAMP_TYPES = UnixTimestamp.accepts
KEY_TYPES = Int64.accepts | {"VARCHAR"}


def from_name(name: str) -> DType:
    """The dtype called `name` (case-insensitive), for specs read back from the metadata DB."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(dtype.name for dtype in ALL)
        raise ValidationError(f"unknown feature type {name!r}; use one of {known}") from None


def is_compatible(dtype: DType, source_type: str) -> bool:
    """Whether a source column of DuckDB type `source_type` may be declared as `dtype`."""
    base = source_type.upper().split("(")[0].strip()
    return base == dtype.duckdb or base in dtype.accepts


__all__ = [
    "ALL",
    "Bool",
    "Bytes",
    "DType",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "String",
    "UnixTimestamp",
    "from_name",
    "is_compatible",
]
