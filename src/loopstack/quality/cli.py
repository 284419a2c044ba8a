"""`loopstack quality`: check data against a YAML suite, propose a suite, list past results.

DATA is a Parquet/CSV file, a glob, a folder of Parquet files (streamed, not
loaded) or a DuckDB query in quotes (``"SELECT * FROM read_csv('x.csv')"``).
``check`` exits 1 when the suite fails, so it can guard a shell pipeline.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from loopstack.core.cli import console, open_project, when

if TYPE_CHECKING:
    from loopstack.quality.results import SuiteResult


@click.group()
def quality() -> None:
    """Data quality: check data against suites, propose suites, show past results."""


@quality.command()
@click.argument("suite_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("data")
@click.option("--record", is_flag=True, help="Store the result as a quality.suite event in the project.")
@click.option("--sample-size", default=5, show_default=True, type=click.IntRange(0),
              help="Offending rows kept per failed check.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def check(ctx: click.Context, suite_file: str, data: str, record: bool, sample_size: int, as_json: bool) -> None:
    """Run the suite in SUITE_FILE (YAML) over DATA; exit 1 if it fails."""
    from loopstack.quality.suite import Suite

    suite = Suite.load(suite_file)
    result = suite.run(data, project=open_project(ctx) if record else None, sample_size=sample_size)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _print(result)
    if not result.passed:
        ctx.exit(1)


@quality.command()
@click.argument("data")
@click.option("--name", default="profile", show_default=True, help="Name of the proposed suite.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the YAML here instead of printing it.")
@click.option("--max-categories", default=20, show_default=True, type=click.IntRange(0),
              help="Value sets up to this size become in_set.")
@click.option("--distribution/--no-distribution", default=None, help="Add distribution checks (default: yes).")
@click.option("--outliers", is_flag=True, help="Add z-score outlier checks for numeric columns.")
def profile(
    data: str, name: str, output: str | None, max_categories: int, distribution: bool | None, outliers: bool
) -> None:
    """Propose a suite from reference DATA and print it as YAML."""
    from loopstack.quality.profile import profile as propose

    if output:
        _check_output(data, output)
    suite = propose(data, name=name, max_categories=max_categories, distribution=distribution, outliers=outliers)
    text = suite.to_yaml(output)
    if output:
        click.echo(f"wrote {len(suite)} expectations to {output}")
    else:
        click.echo(text, nl=False)


@quality.command()
@click.argument("suite", required=False)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1), help="How many results.")
@click.pass_context
def history(ctx: click.Context, suite: str | None, limit: int) -> None:
    """Past suite results recorded in the project, newest first (of SUITE only, when given).

    A SUITE with no recorded results exits 1, naming the suites that have some.
    """
    from rich.markup import escape
    from rich.table import Table

    from loopstack.core.errors import NotFoundError
    from loopstack.quality.store import history as past
    from loopstack.quality.store import suites

    project = open_project(ctx)
    results = past(project, suite, limit=limit)
    if not results:
        known = suites(project)
        hint = (f"suites with history: {', '.join(known)}" if known else
                "no suite has run yet; record one with `loopstack quality check --record SUITE.yaml DATA`")
        if suite is None:
            click.echo(hint)
            return
        raise NotFoundError(f"no recorded results of suite {suite!r}; {hint}")
    table = Table(title="quality results")
    for column in ("event", "when", "suite", "status", "failed", "rows", "source"):
        table.add_column(column, overflow="fold")
    for result in results:
        status = "[green]passed[/]" if result.passed else "[red]FAILED[/]"
        failed = ", ".join(r.label for r in result.failures) or "-"
        table.add_row(
            str(result.event_id),
            when(result.started_at),
            escape(result.suite),
            status,
            escape(failed),
            str(result.row_count),
            escape(result.source),
        )
    console().print(table)


def _check_output(data: str, output: str) -> None:
    """Refuse to write the suite over the data it profiles, or into the data's folder (a later scan would read it)."""
    from loopstack.core.paths import refuse_overwrite

    refuse_overwrite(output, [data], label="--output", fix="write the suite to another path, e.g. suite.yaml")


def _print(result: SuiteResult) -> None:
    """The result as a table; names and values are escaped, as rich would read '[/]' in them as markup."""
    from rich.markup import escape
    from rich.table import Table

    status = "[green]passed[/]" if result.passed else "[red]FAILED[/]"
    table = Table(
        title=f"suite {escape(repr(result.suite))} {status} on {escape(result.source)} ({result.row_count} rows, "
        f"{result.duration_s:.2f}s)"
    )
    for column in ("check", "status", "unexpected", "of", "detail"):
        table.add_column(column, overflow="fold")
    for item in result.results:
        mark = "[green]ok[/]" if item.passed else ("[red]FAIL[/]" if item.severity == "error" else "[yellow]warn[/]")
        detail = item.error or (str(item.sample[:2]) if item.sample else item.describe().split(": ", 1)[-1])
        table.add_row(escape(item.label), mark, str(item.unexpected_count), str(item.element_count),
                      escape(detail[:200]))
    console().print(table)
