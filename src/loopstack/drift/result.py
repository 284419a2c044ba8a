"""What a drift comparison returns: one verdict per column and one for the data set."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Histogram:
    """Shares of each sample per bin (numerical) or per category, for plots and reports."""

    labels: list[str]
    reference: list[float]
    current: list[float]
    edges: list[float] | None = None


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one column.

    `score` is the test's p-value or distance; for p-value tests under a
    multiple-testing correction, `adjusted` holds the corrected p-value and
    the verdict compares that one with the threshold.
    """

    column: str
    kind: str
    test: str
    score: float
    threshold: float
    drifted: bool
    p_value: bool
    n_reference: int
    n_current: int
    adjusted: float | None = None
    note: str = ""
    histogram: Histogram | None = field(default=None, compare=False)

    def to_dict(self, histogram: bool = False) -> dict[str, Any]:
        """Plain JSON-ready values; NaN scores become None."""
        data = asdict(self)
        if not histogram:
            data.pop("histogram")
        data["score"] = _finite(self.score)
        data["adjusted"] = _finite(self.adjusted)
        return data


@dataclass(frozen=True)
class DriftResult:
    """Column verdicts and the data-set verdict: drift when the drifted share reaches `drift_share`.

    `missing_columns` are reference columns the current data lacks and `new_columns` current columns
    the reference lacks (both empty when `compare` was given ``columns=``); neither is tested, nor
    counts towards `dataset_drift`.

    Examples
    --------
    >>> import numpy as np
    >>> from loopstack.drift import compare
    >>> rng = np.random.default_rng(0)
    >>> result = compare({"x": rng.normal(size=2000)}, {"x": rng.normal(1, size=2000)})
    >>> result.dataset_drift, result.drifted_columns
    (True, ['x'])
    """

    columns: dict[str, ColumnDrift]
    drift_share: float
    correction: str | None = None
    multivariate: dict[str, Any] = field(default_factory=dict)
    missing_columns: list[str] = field(default_factory=list)
    new_columns: list[str] = field(default_factory=list)

    @property
    def n_drifted(self) -> int:
        """How many columns drifted."""
        return sum(c.drifted for c in self.columns.values())

    @property
    def share(self) -> float:
        """The share of tested columns that drifted."""
        return self.n_drifted / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Whether at least `drift_share` of the columns drifted."""
        return bool(self.columns) and self.share >= self.drift_share

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, in column order."""
        return [name for name, c in self.columns.items() if c.drifted]

    @property
    def scores(self) -> dict[str, float]:
        """Each column's score."""
        return {name: c.score for name, c in self.columns.items()}

    def to_dict(self, histograms: bool = False) -> dict[str, Any]:
        """A JSON-ready summary: the data-set verdict and every column's score."""
        return {
            "dataset_drift": self.dataset_drift,
            "share": self.share,
            "n_drifted": self.n_drifted,
            "n_columns": len(self.columns),
            "drift_share": self.drift_share,
            "correction": self.correction,
            "columns": {name: c.to_dict(histograms) for name, c in self.columns.items()},
            "missing_columns": list(self.missing_columns),
            "new_columns": list(self.new_columns),
            "multivariate": self.multivariate,
        }

    def to_pandas(self) -> Any:
        """One row per column: kind, test, score, threshold, drifted."""
        import pandas as pd

        return pd.DataFrame([c.to_dict() for c in self.columns.values()]).set_index("column")

    def report(self, path: str | None = None, json_path: str | None = None, title: str = "Drift report") -> str:
        """Render the self-contained HTML report; write it (and the JSON) when paths are given."""
        from loopstack.drift.report import write_report

        return write_report(self, path, json_path, title)


def _finite(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)
