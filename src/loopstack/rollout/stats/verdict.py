"""Verdicts per metric (better, worse, inconclusive, withheld) and their rendering.

`analyze` is the one call a report needs: it checks the sample ratio, runs
the chosen test on every metric, corrects the p-values across metrics and
turns each result into a `Verdict` that keeps the numbers behind it. A
flagged sample ratio mismatch withholds every verdict: a broken split makes
any difference uninterpretable. `Report` renders as a rich table for the
terminal and as Markdown for reports, and as plain records for events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.corrections import Method, adjust
from loopstack.rollout.stats.frequentist import Comparison, welch_ttest
from loopstack.rollout.stats.sequential import sequential_test
from loopstack.rollout.stats.srm import SRMResult, srm_check
from loopstack.rollout.stats.summary import Summary, finite_or_none

Outcome = Literal["better", "worse", "inconclusive", "withheld"]
_COLUMNS = ("metric", "control", "treatment", "lift (CI)", "diff (CI)", "p (adj.)", "verdict")
_STYLE = {"better": "bold green", "worse": "bold red", "inconclusive": "yellow", "withheld": "magenta"}


@dataclass(frozen=True)
class Verdict:
    """A metric's outcome with the comparison behind it.

    Examples
    --------
    >>> from loopstack.rollout.stats.frequentist import ztest_proportions
    >>> v = verdict("conversion", ztest_proportions(100, 1000, 140, 1000))
    >>> v.outcome
    'better'
    >>> verdict("errors", ztest_proportions(10, 1000, 30, 1000), higher_is_better=False).outcome
    'worse'
    """

    metric: str
    outcome: Outcome
    comparison: Comparison
    higher_is_better: bool
    p_adjusted: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON record; NaN and +-inf are None (see `Comparison.to_dict`)."""
        return {
            "metric": self.metric,
            "outcome": self.outcome,
            "higher_is_better": self.higher_is_better,
            "p_adjusted": finite_or_none(self.p_adjusted),
            "reason": self.reason,
            **{k: v for k, v in self.comparison.to_dict().items() if k not in ("control", "treatment")},
            "control": self.comparison.control.to_dict(),
            "treatment": self.comparison.treatment.to_dict(),
        }


def verdict(
    metric: str,
    comparison: Comparison,
    *,
    higher_is_better: bool = True,
    p_adjusted: float | None = None,
    srm: SRMResult | None = None,
) -> Verdict:
    """Turn a comparison into better / worse / inconclusive, or withheld under a sample ratio mismatch."""
    p = comparison.p_value if p_adjusted is None else p_adjusted
    if srm is not None and srm.flagged:
        return Verdict(
            metric, "withheld", comparison, higher_is_better, p, f"sample ratio mismatch (p={srm.p_value:.2g})"
        )
    if not p < comparison.alpha:
        reason = f"p={p:.3g} >= alpha={comparison.alpha:g}"
        return Verdict(metric, "inconclusive", comparison, higher_is_better, p, reason)
    up = comparison.diff > 0
    outcome: Outcome = "better" if up == higher_is_better else "worse"
    return Verdict(metric, outcome, comparison, higher_is_better, p, f"p={p:.3g} < alpha={comparison.alpha:g}")


@dataclass(frozen=True)
class Report:
    """Verdicts for all metrics of one experiment, with the SRM check and the correction used."""

    verdicts: tuple[Verdict, ...]
    srm: SRMResult | None
    correction: str
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able record (an event payload)."""
        return {
            "method": self.method,
            "correction": self.correction,
            "srm": self.srm.to_dict() if self.srm else None,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    def to_markdown(self) -> str:
        """A Markdown table, one row per metric."""
        head = "| " + " | ".join(_COLUMNS) + " |\n" + "|---" * len(_COLUMNS) + "|"
        rows = ["| " + " | ".join(_row(v)) + " |" for v in self.verdicts]
        return "\n".join([_srm_line(self.srm), "", head, *rows])

    def to_table(self) -> Any:
        """A `rich.table.Table` for the terminal."""
        from rich.table import Table

        table = Table(
            title=f"Experiment results ({self.method}, {self.correction} correction)", caption=_srm_line(self.srm)
        )
        for name in ("metric", "control", "treatment", "lift (CI)", "diff (CI)", "p (adj.)", "verdict"):
            table.add_column(name, justify="left" if name == "metric" else "right")
        for v in self.verdicts:
            cells = _row(v)
            cells[-1] = f"[{_STYLE[v.outcome]}]{v.outcome}[/]"
            table.add_row(*cells)
        return table

    def __rich__(self) -> Any:
        return self.to_table()


def analyze(
    metrics: Mapping[str, Comparison | tuple[Summary, Summary]],
    *,
    counts: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    method: Literal["fixed", "sequential"] = "fixed",
    alpha: float = 0.05,
    correction: Method = "holm",
    planned_n: float | None = None,
) -> Report:
    """Check the split, test every metric, correct across metrics and give each a verdict.

    Parameters
    ----------
    metrics : mapping
        Metric name to a `Comparison` already computed, or to (control, treatment) `Summary` objects,
        tested by Welch's t-test (``method="fixed"``) or the always-valid test (``"sequential"``).
    counts, weights : sequences, optional
        Units per variant and configured weights, for the sample ratio mismatch check.
    higher_is_better : mapping, optional
        Direction per metric (default: higher is better).

    Examples
    --------
    >>> report = analyze(
    ...     {"conversion": (Summary.from_proportion(1000, 10_000), Summary.from_proportion(1120, 10_000)),
    ...      "latency_ms": (Summary(10_000, 120.0, 400.0), Summary(10_000, 120.2, 410.0))},
    ...     counts=[10_000, 10_000], weights=[0.5, 0.5], higher_is_better={"latency_ms": False})
    >>> [(v.metric, v.outcome) for v in report.verdicts]
    [('conversion', 'better'), ('latency_ms', 'inconclusive')]
    """
    directions = dict(higher_is_better or {})
    srm = srm_check(counts, weights) if counts is not None and weights is not None else None
    comparisons = {name: _comparison(name, value, method, alpha, planned_n) for name, value in metrics.items()}
    adjusted = adjust([c.p_value for c in comparisons.values()], correction) if comparisons else []
    verdicts = tuple(
        verdict(name, c, higher_is_better=directions.get(name, True), p_adjusted=p, srm=srm)
        for (name, c), p in zip(comparisons.items(), adjusted, strict=True)
    )
    return Report(verdicts, srm, correction, method)


def _comparison(name: str, value: Any, method: str, alpha: float, planned_n: float | None) -> Comparison:
    if isinstance(value, Comparison):
        return value
    control, treatment = value
    if method == "fixed":
        return welch_ttest(control, treatment, alpha=alpha)
    if method == "sequential":
        n = _planned_n(name, control, treatment, planned_n)
        return sequential_test(control, treatment, alpha=alpha, planned_n=n)
    raise ValidationError(f"method must be 'fixed' or 'sequential', got {method!r}.")


def _planned_n(name: str, control: Summary, treatment: Summary, planned_n: float | None) -> float:
    """The given `planned_n`, else the units seen so far; with none seen there is nothing to tune the test to."""
    if planned_n is not None:
        return planned_n
    if control.n + treatment.n == 0:
        raise ValidationError(f"metric {name!r} has no data yet (n=0 in both variants); analyze once units have "
                              "arrived, or pass planned_n to get an inconclusive look now")
    return control.n + treatment.n


def _row(v: Verdict) -> list[str]:
    c = v.comparison
    return [
        v.metric,
        f"{c.control.mean:.4g} (n={c.control.n})",
        f"{c.treatment.mean:.4g} (n={c.treatment.n})",
        f"{c.lift:+.2%} [{c.lift_ci[0]:+.2%}, {c.lift_ci[1]:+.2%}]",
        f"{c.diff:+.4g} [{c.diff_ci[0]:+.4g}, {c.diff_ci[1]:+.4g}]",
        f"{v.p_adjusted:.3g}",
        v.outcome,
    ]


def _srm_line(srm: SRMResult | None) -> str:
    if srm is None:
        return "Sample ratio: not checked."
    state = "MISMATCH, verdicts withheld" if srm.flagged else "ok"
    return f"Sample ratio: {state} (observed {list(srm.observed)}, chi2={srm.chi2:.3g}, p={srm.p_value:.3g})."


__all__ = ["Outcome", "Report", "Verdict", "analyze", "verdict"]
