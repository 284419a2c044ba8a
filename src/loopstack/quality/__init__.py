"""Data quality: expectations run as DuckDB SQL over Arrow, pandas, polars, Parquet or a query.

Build a `Suite` in Python or YAML (or let `profile` propose one from reference
data), run it, and get per-check results with unexpected counts and sample
offending rows. `gate` stops a pipeline step on failure, `validate_request`
checks serving rows with the same conditions, and `history` reads back the
``quality.suite`` events that runs with a project record.

Examples
--------
>>> from loopstack.quality import Between, InSet, NotNull, Suite
>>> suite = Suite("orders", [NotNull("id"), Between("amount", min=0), InSet("status", ["new", "paid"])])
>>> data = {"id": [1, 2, None], "amount": [5.0, -1.0, 3.0], "status": ["new", "paid", "lost"]}
>>> print(suite.run(data).summary())  # doctest: +ELLIPSIS
suite 'orders' FAILED: 0/3 expectations met on dict of 3 columns (3 rows, ...s)
  FAIL not_null(id): 1 unexpected of 3 (33.33%)
  FAIL between(amount): 1 unexpected of 3 (33.33%)
  FAIL in_set(status): 1 unexpected of 3 (33.33%)
"""

from loopstack.quality.expectations import (
    Between,
    ColumnTypes,
    CompoundUnique,
    Expectation,
    ForeignKey,
    InSet,
    IsolationForestOutliers,
    NotNull,
    Regex,
    RowCount,
    RowExpectation,
    SchemaMatches,
    StringLength,
    TableExpectation,
    Unique,
    ZScoreOutliers,
)
from loopstack.quality.expectations.distribution import Distribution
from loopstack.quality.gate import QualityGateError, RequestValidation, gate, validate_request
from loopstack.quality.profile import profile
from loopstack.quality.results import ExpectationResult, SuiteResult
from loopstack.quality.source import Query, configure
from loopstack.quality.store import history, record
from loopstack.quality.suite import Suite

__all__ = [
    "Suite",
    "Query",
    "Expectation",
    "RowExpectation",
    "TableExpectation",
    "NotNull",
    "Between",
    "InSet",
    "Regex",
    "StringLength",
    "Unique",
    "CompoundUnique",
    "RowCount",
    "ForeignKey",
    "ColumnTypes",
    "SchemaMatches",
    "Distribution",
    "ZScoreOutliers",
    "IsolationForestOutliers",
    "profile",
    "ExpectationResult",
    "SuiteResult",
    "gate",
    "QualityGateError",
    "validate_request",
    "RequestValidation",
    "record",
    "history",
    "configure",
]
