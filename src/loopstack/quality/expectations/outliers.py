"""Multivariate outliers by IsolationForest, fitted and scored on samples.

A forest on millions of rows costs minutes and tells little more than one on
ten thousand, so both the fit (on the reference, or on the checked data when
there is none) and the scoring draw a reproducible reservoir sample in DuckDB.
The outlier share is therefore an estimate; `element_count` says how many rows
it was measured on. (Z-score outliers are a row check: `ZScoreOutliers`.)
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


@dataclass(eq=False)
class IsolationForestOutliers(TableExpectation):
    """At most ``max_ratio`` of rows are IsolationForest outliers over the numeric `columns`.

    A row is an outlier when its anomaly score (the paper's ``s``, that is
    ``-score_samples``; about 0.5 for ordinary rows, towards 1 for isolated
    ones) exceeds ``threshold``. scikit-learn's own ``contamination="auto"``
    cut at 0.5 flags 10-20% of clean Gaussian rows, far too many for a data
    check; 0.7 flags about 0.1% in two dimensions and fewer in more. Nulls are
    filled with the fit sample's medians.

    Examples
    --------
    >>> import numpy as np
    >>> from loopstack.quality import Suite
    >>> rng = np.random.default_rng(0)
    >>> data = {"a": np.r_[rng.normal(size=990), np.full(10, 50.0)], "b": rng.normal(size=1000)}
    >>> check = IsolationForestOutliers(["a", "b"], max_ratio=0.05, n_estimators=50)
    >>> result = Suite("s", [check]).run(data)["isolation_forest(a, b)"]
    >>> result.passed, min(row["a"] for row in result.sample) == 50.0
    (True, True)
    """

    kind: ClassVar[str] = "isolation_forest"
    columns: list[str] = field(default_factory=list)
    max_ratio: float = 0.01
    threshold: float = 0.7
    reference: Any = None
    max_rows: int = 10_000
    n_estimators: int = 100
    random_state: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.columns:
            raise ConfigError("isolation_forest: columns is empty; name the numeric columns to model")
        self.columns = list(self.columns)

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        import numpy as np
        from sklearn.ensemble import IsolationForest

        fit_view = source.attach(self.reference) if self.reference is not None else "data"
        fit = self._sample(source, fit_view)
        medians = np.nan_to_num(np.nanmedian(fit, axis=0)) if len(fit) else np.zeros(len(self.columns))
        scored = fit if fit_view == "data" else self._sample(source, "data")
        if len(fit) < 2 or len(scored) == 0:
            return ExpectationResult(self.spec(), True, 0, len(scored), {"scored_rows": len(scored)})
        model = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state)
        model.fit(_fill(fit, medians))
        scores = -model.score_samples(_fill(scored, medians))
        count = int((scores > self.threshold).sum())
        order = np.argsort(-scores)[: min(count, sample_size)]
        sample = [
            {**dict(zip(self.columns, map(_plain, scored[i]), strict=True)), "anomaly_score": float(scores[i])}
            for i in order
        ]
        passed = count <= self.max_ratio * len(scored)
        observed = {
            "scored_rows": len(scored),
            "sampled": len(scored) < row_count,
            "outlier_ratio": count / len(scored),
        }
        return ExpectationResult(self.spec(), passed, count, len(scored), observed, sample)

    def _sample(self, source: Source, view: str) -> Any:
        import numpy as np

        cols = ", ".join(f"CAST({quote(c)} AS DOUBLE)" for c in self.columns)
        query = (
            f"SELECT {cols} FROM {view} USING SAMPLE reservoir({int(self.max_rows)} ROWS) "
            f"REPEATABLE ({int(self.random_state)})"
        )
        rows = source.sql(query).fetchnumpy()
        return (
            np.column_stack([np.ma.filled(np.ma.asarray(v, dtype=float), np.nan) for v in rows.values()])
            if rows
            else np.empty((0, 0))
        )


def _fill(matrix: Any, medians: Any) -> Any:
    import numpy as np

    return np.where(np.isnan(matrix), medians, matrix)


def _plain(value: Any) -> Any:
    return None if value != value else float(value)
