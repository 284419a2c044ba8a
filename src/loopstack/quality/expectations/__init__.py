"""Expectations: one class per check, each compiled to DuckDB SQL."""

from loopstack.quality.expectations.base import KINDS, Expectation, RowExpectation, TableExpectation
from loopstack.quality.expectations.distribution import Distribution
from loopstack.quality.expectations.outliers import IsolationForestOutliers
from loopstack.quality.expectations.schema import ColumnTypes, SchemaMatches
from loopstack.quality.expectations.table import CompoundUnique, ForeignKey, RowCount, Unique
from loopstack.quality.expectations.values import Between, InSet, NotNull, Regex, StringLength, ZScoreOutliers

__all__ = [
    "KINDS",
    "Expectation",
    "RowExpectation",
    "TableExpectation",
    "NotNull",
    "Between",
    "InSet",
    "Regex",
    "StringLength",
    "ZScoreOutliers",
    "Unique",
    "CompoundUnique",
    "RowCount",
    "ForeignKey",
    "ColumnTypes",
    "SchemaMatches",
    "Distribution",
    "IsolationForestOutliers",
]
