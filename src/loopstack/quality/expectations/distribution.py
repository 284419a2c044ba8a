"""A column's distribution against a baseline, judged by the drift tests.

The statistics live in `loopstack.drift` (one implementation, cross-checked
against SciPy there); this check only feeds it. Both sides are read as one
column each and reservoir-sampled in DuckDB to at most ``max_rows`` values,
so a Parquet folder larger than memory is streamed, not loaded, and the test
sees the sample sizes Evidently's defaults were chosen for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from loopstack.core.errors import ConfigError
from loopstack.quality.expectations.base import TableExpectation
from loopstack.quality.results import ExpectationResult
from loopstack.quality.source import quote

if TYPE_CHECKING:
    from loopstack.quality.source import Source


@dataclass(eq=False)
class Distribution(TableExpectation):
    """The column's distribution has not drifted from the same column of `reference`.

    Parameters
    ----------
    column : str
        The column, present in both tables.
    reference : data
        The baseline: a Parquet path or folder, a frame, an Arrow table or a
        `Query` (a path or SQL text keeps the suite writable as YAML).
    test : str, optional
        A `loopstack.drift` test name (``ks``, ``wasserstein``, ``psi``,
        ``jensenshannon``, ``chisquare``, ``z``); by default chosen by column
        kind and reference size as Evidently does.
    threshold : float, optional
        The test's threshold; by default the test's own (e.g. 0.05 for p-values, 0.1 for distances).
    max_rows : int
        Values sampled from each side (reproducibly) before testing.

    Examples
    --------
    >>> import numpy as np
    >>> from loopstack.quality import Suite
    >>> rng = np.random.default_rng(0)
    >>> reference = {"x": rng.normal(size=2000)}
    >>> suite = Suite("s", [Distribution("x", reference=reference)])
    >>> suite.run({"x": rng.normal(size=2000)}).passed, suite.run({"x": rng.normal(1.0, size=2000)}).passed
    (True, False)
    """

    kind: ClassVar[str] = "distribution"
    column: str
    reference: Any = None
    test: str | None = None
    threshold: float | None = None
    max_rows: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference is None:
            raise ConfigError(f"{self.label}: give reference=, the baseline data (a path keeps the suite as YAML)")

    def run(self, source: Source, row_count: int, sample_size: int) -> ExpectationResult:
        from loopstack.drift import EmptySampleError, compare

        ref = source.attach(self.reference)
        if self.column not in source.columns_of(ref):
            return ExpectationResult(self.spec(), False, error=f"reference has no column {self.column!r}")
        settings: dict[str, Any] = {"columns": [self.column], "histograms": False, "n_jobs": 1}
        if self.test:
            settings["tests"] = {self.column: self.test}
        if self.threshold is not None:
            settings["threshold"] = self.threshold
        try:
            verdict = compare(self._values(source, ref), self._values(source, "data"), **settings).columns[self.column]
        except EmptySampleError as empty:
            if empty.side == "reference":  # a baseline with no values: the check cannot mean anything
                error = f"reference has no values in column {self.column!r}; point reference= at the baseline data"
                return ExpectationResult(self.spec(), False, error=error)
            # no values to check, like every other check on empty data: passes, and says so
            return ExpectationResult(self.spec(), True, 0, 0, {"note": "no non-null values in the current sample"})
        observed = {
            "test": verdict.test,
            "score": verdict.score,
            "threshold": verdict.threshold,
            "n_reference": verdict.n_reference,
            "n_current": verdict.n_current,
        }
        if verdict.note:
            observed["note"] = verdict.note
        return ExpectationResult(self.spec(), not verdict.drifted, 0, verdict.n_current, observed)

    def _values(self, source: Source, view: str) -> Any:
        """The column's values as an Arrow table, reservoir-sampled past `max_rows`."""
        col = quote(self.column)
        total = int(source.one(f"SELECT count(*) FROM {view}")[0])
        sample = (
            f" USING SAMPLE reservoir({int(self.max_rows)} ROWS) REPEATABLE ({int(self.seed)})"
            if total > self.max_rows
            else ""
        )
        return source.arrow(f"SELECT {col} FROM {view}{sample}")
