"""`loopstack drift ...`: drift reports from the command line (mounted by loopstack.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from loopstack.drift.result import DriftResult


@click.group("drift")
def drift() -> None:
    """Compare data sets for drift and write reports."""


@drift.command("report")
@click.option("--reference", "reference", required=True, type=click.Path(exists=True), help="Reference Parquet/CSV.")
@click.option("--current", "current", required=True, type=click.Path(exists=True), help="Current Parquet/CSV.")
@click.option("--output", default="drift_report.html", show_default=True, type=click.Path(), help="HTML report.")
@click.option("--json", "json_path", default=None, type=click.Path(), help="Also write the report as JSON.")
@click.option("--column", "columns", multiple=True, help="Test only these columns (repeatable).")
@click.option("--test", "test", default=None,
              help="Run this test on every column it applies to (ks, psi, wasserstein, ...); the others keep "
                   "their default test.")
@click.option("--threshold", type=float, default=None, help="Threshold for every column's test.")
@click.option("--drift-share", type=float, default=0.5, show_default=True,
              help="Share of drifted columns for data set drift.")
@click.option("--correction", type=click.Choice(["bonferroni", "bh"]), default=None,
              help="Multiple-testing correction.")
@click.option("--fail-on-drift", is_flag=True,
              help="Exit with status 1 when the data set drifted or a reference column is missing from --current "
                   "(name the columns to test with --column to compare only those).")
def report(reference: str, current: str, output: str, json_path: str | None, columns: tuple[str, ...],
           test: str | None, threshold: float | None, drift_share: float, correction: str | None,
           fail_on_drift: bool) -> None:
    """Compare --current with --reference column by column and write an HTML (and JSON) report.

    A file with no rows (or no value in any column tested) is an error. Columns only one file has are
    listed as warnings and in the report; a reference column missing from --current fails --fail-on-drift.
    """
    from loopstack.drift.compare import compare

    _check_outputs((reference, current), (output, json_path))
    num_test, cat_test = _tests_per_kind(test)
    result = compare(reference, current, columns=list(columns) or None, num_test=num_test, cat_test=cat_test,
                     threshold=threshold, drift_share=drift_share, correction=correction)
    result.report(output, json_path, title=f"Drift: {current} vs {reference}")
    click.echo(_verdict(result))
    if result.missing_columns:
        click.echo(f"warning: reference columns missing from the current data, not tested: "
                   f"{', '.join(result.missing_columns)}", err=True)
    if result.new_columns:
        click.echo(f"warning: current columns not in the reference, not tested: {', '.join(result.new_columns)}",
                   err=True)
    click.echo(f"wrote {', '.join(p for p in (output, json_path) if p)}")
    if fail_on_drift and (result.dataset_drift or result.missing_columns):
        if result.missing_columns:
            click.echo(f"failing --fail-on-drift: {', '.join(result.missing_columns)} missing from {current}; "
                       "fix the export, or pass --column NAME for each column to test", err=True)
        raise SystemExit(1)


def _verdict(result: DriftResult) -> str:
    """The data-set verdict with what it rests on: "no drift: 1 of 3 columns drifted" read as a contradiction."""
    names = f": {', '.join(result.drifted_columns)}" if result.drifted_columns else ""
    verdict = "data-set drift" if result.dataset_drift else "no data-set drift"
    return (f"{verdict} ({result.n_drifted} of {len(result.columns)} columns drifted{names}; "
            f"share threshold {result.drift_share * 100:g}%)")


def _tests_per_kind(test: str | None) -> tuple[str | None, str | None]:
    """`test` for the kinds of column it can run on, None (the default test) for the others.

    ``--test ks`` on data with a text column would otherwise fail the whole
    report, since a KS test cannot run on categories.
    """
    from loopstack.drift.data import CATEGORICAL, NUMERICAL
    from loopstack.drift.select import TESTS, get_test

    if test is None:
        return None, None
    if test not in TESTS:
        get_test(test, NUMERICAL)  # raises the unknown-test error, listing the known tests
    kinds = TESTS[test].kinds
    return (test if NUMERICAL in kinds else None), (test if CATEGORICAL in kinds else None)


def _check_outputs(inputs: tuple[str, ...], outputs: tuple[str | None, ...]) -> None:
    """Refuse report paths that would overwrite the data (or land inside a data folder), or each other."""
    from loopstack.core.errors import ConfigError
    from loopstack.core.paths import refuse_overwrite

    written = [out for out in outputs if out is not None]
    for out in written:
        refuse_overwrite(out, inputs, label="report path", fix="write the report to another path")
    if len(written) == 2 and Path(written[0]).resolve() == Path(written[1]).resolve():
        raise ConfigError(f"--output and --json are both {written[0]!r}; give the JSON its own path")
