"""What a check found: one result per expectation and one per suite run.

Results are plain data so that they round-trip through JSON: a run is stored
as a ``quality.suite`` event and read back with `history` as the same objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ExpectationResult:
    """The outcome of one expectation.

    Attributes
    ----------
    expectation : dict
        The expectation as ``to_dict()`` gives it (``kind`` and parameters).
    passed : bool
        Whether the data met it.
    unexpected_count : int
        Offending rows (or values, for set-level checks such as ``unique``).
    element_count : int
        Rows the ratio is taken over (non-null rows for value checks).
    observed : dict
        What was measured, e.g. ``{"null_ratio": 0.02}`` or the columns added.
    sample : list of dict
        Up to ``sample_size`` offending rows, as column-to-value dicts.
    error : str or None
        Why the check could not run (a missing column, a bad pattern); it then fails.
    """

    expectation: dict[str, Any]
    passed: bool
    unexpected_count: int = 0
    element_count: int = 0
    observed: dict[str, Any] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def kind(self) -> str:
        return str(self.expectation.get("kind"))

    @property
    def severity(self) -> str:
        return str(self.expectation.get("severity", "error"))

    @property
    def unexpected_ratio(self) -> float:
        return self.unexpected_count / self.element_count if self.element_count else 0.0

    @property
    def label(self) -> str:
        """``kind(column)``, the short name used in messages."""
        target = self.expectation.get("column") or self.expectation.get("columns")
        if isinstance(target, list):
            target = ", ".join(map(str, target))
        return f"{self.kind}({target})" if target else self.kind

    def describe(self) -> str:
        """One line: what failed and by how much."""
        if self.error:
            return f"{self.label}: {self.error}"
        if self.unexpected_count:
            return (
                f"{self.label}: {self.unexpected_count} unexpected of {self.element_count} "
                f"({self.unexpected_ratio:.2%})"
            )
        shown = ", ".join(f"{k}={_short(v)}" for k, v in self.observed.items())
        return f"{self.label}: {shown}" if shown else self.label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SuiteResult:
    """The outcome of running a suite over one input.

    ``passed`` is true when every expectation of severity ``error`` passed;
    failed ``warning`` expectations are reported but do not fail the run.
    """

    suite: str
    results: list[ExpectationResult]
    row_count: int
    source: str
    started_at: float
    duration_s: float
    event_id: int | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results if r.severity == "error")

    @property
    def failures(self) -> list[ExpectationResult]:
        """Failed expectations of severity ``error``."""
        return [r for r in self.results if not r.passed and r.severity == "error"]

    @property
    def warnings(self) -> list[ExpectationResult]:
        """Failed expectations of severity ``warning``."""
        return [r for r in self.results if not r.passed and r.severity != "error"]

    def __getitem__(self, label: str) -> ExpectationResult:
        """The result whose label (``kind(column)``) is `label`."""
        for result in self.results:
            if result.label == label:
                return result
        raise KeyError(f"{label!r}; labels: {[r.label for r in self.results]}")

    def summary(self) -> str:
        """A few lines for logs and the CLI."""
        status = "passed" if self.passed else "FAILED"
        head = (
            f"suite {self.suite!r} {status}: {len(self.results) - len(self.failures)}/{len(self.results)} "
            f"expectations met on {self.source} ({self.row_count} rows, {self.duration_s:.3f}s)"
        )
        lines = [head]
        for result in self.results:
            mark = "ok  " if result.passed else ("FAIL" if result.severity == "error" else "warn")
            lines.append(f"  {mark} {result.describe()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "passed": self.passed,
            "row_count": self.row_count,
            "source": self.source,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any], event_id: int | None = None) -> SuiteResult:
        return cls(
            suite=payload["suite"],
            results=[ExpectationResult(**r) for r in payload["results"]],
            row_count=payload["row_count"],
            source=payload["source"],
            started_at=payload["started_at"],
            duration_s=payload["duration_s"],
            event_id=event_id,
        )

    def to_pandas(self) -> Any:
        """One row per expectation: label, passed, counts, ratio, error."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "expectation": r.label,
                    "severity": r.severity,
                    "passed": r.passed,
                    "unexpected_count": r.unexpected_count,
                    "element_count": r.element_count,
                    "unexpected_ratio": r.unexpected_ratio,
                    "error": r.error,
                }
                for r in self.results
            ]
        )


def _short(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
