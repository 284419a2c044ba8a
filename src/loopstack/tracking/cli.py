"""`loopstack runs`: list, filter, show and compare runs in the terminal."""

from __future__ import annotations

import click

from loopstack.core.cli import console, open_project, when


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


@click.group(invoke_without_command=True)
@click.option("--experiment", "-e", multiple=True, help="Only these experiments.")
@click.option("--filter", "-f", "filter_string", help="e.g. \"metrics.acc > 0.9 and params.lr = '0.01'\"")
@click.option("--order-by", "-o", multiple=True, help="e.g. 'metrics.acc desc'.")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1), help="How many runs.")
@click.option("--metric", "-m", "metrics", multiple=True, help="Metric columns to show (default: up to 4).")
@click.pass_context
def runs(
    ctx: click.Context,
    experiment: tuple[str, ...],
    filter_string: str | None,
    order_by: tuple[str, ...],
    limit: int,
    metrics: tuple[str, ...],
) -> None:
    """List, filter, show and compare runs."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from loopstack.tracking.client import Client

    client = Client(open_project(ctx))
    page = client.search_runs(filter_string, list(experiment) or None, list(order_by) or None, max_results=limit)
    shown = list(metrics) or sorted({k for r in page for k in r.metrics if not k.startswith("system.")})[:4]
    params = sorted({k for r in page for k in r.params})[:4]
    table = Table(title=f"{len(page)} runs" + (" (more: raise --limit)" if page.token else ""))
    for column in ("id", "name", "status", "started", *(f"params.{p}" for p in params), *shown):
        table.add_column(column, overflow="fold")
    colors = {"FINISHED": "green", "FAILED": "red", "KILLED": "red", "RUNNING": "yellow"}
    for run in page:
        status = f"[{colors.get(run.status, 'white')}]{run.status}[/]"
        table.add_row(
            run.id[:8],
            run.info.name,
            status,
            when(run.info.start_time),
            *(_format(run.params.get(p)) for p in params),
            *(_format(run.metrics.get(m)) for m in shown),
        )
    console().print(table)


@runs.command()
@click.argument("run_id")
@click.pass_context
def show(ctx: click.Context, run_id: str) -> None:
    """Everything a run recorded."""
    from rich.table import Table

    from loopstack.tracking.client import Client

    client = Client(open_project(ctx))
    run = client.get_run(_expand(client, run_id))
    out = console()
    info = run.info
    out.print(f"[bold]{info.name}[/] {info.id}  {info.status}  {when(info.start_time)} -> {when(info.end_time)}")
    for title, values in (("params", run.params), ("metrics", run.metrics), ("tags", run.tags)):
        table = Table(title=title, show_header=False)
        for key in sorted(values):
            table.add_row(key, _format(values[key]))
        out.print(table)
    for item in run.inputs:
        out.print(f"input [{item['context']}] {item['name']}: {item['rows']} rows, sha256 {item['digest'][:12]}")
    for artifact in client.list_artifacts(info.id):
        out.print(f"artifact {artifact['path']} ({artifact['size']} bytes, sha256 {artifact['digest'][:12]})")


@runs.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--all", "show_all", is_flag=True, help="Also show keys whose values are equal.")
@click.pass_context
def compare(ctx: click.Context, run_ids: tuple[str, ...], show_all: bool) -> None:
    """Params and metrics of runs side by side; differing keys highlighted."""
    from rich.table import Table

    from loopstack.tracking.client import Client

    client = Client(open_project(ctx))
    ids = [_expand(client, run_id) for run_id in run_ids]
    comparison = client.compare_runs(ids)
    table = Table(title="comparison")
    table.add_column("key")
    for run_id in ids:
        table.add_column(run_id[:8])
    for kind, key, values, differs in comparison.rows():
        if differs or show_all:
            style = "bold yellow" if differs else ""
            table.add_row(f"{kind}s.{key}", *(_format(v) for v in values), style=style)
    console().print(table)


def _expand(client: object, prefix: str) -> str:
    """Accept the 8-character id prefix that `loopstack runs` prints."""
    from loopstack.core.errors import NotFoundError, ValidationError

    if len(prefix) == 32:
        return prefix
    if not prefix or not all(ch in _HEX for ch in prefix.lower()):
        # a run id is 32 hex digits; anything else would be stripped to a different (or empty) prefix
        raise ValidationError(f"{prefix!r} is not a run id: give the hex id, or its first characters, that "
                              "`loopstack runs` lists")
    found = client.search_runs(f"run_id like '{prefix.lower()}%'", max_results=2)  # type: ignore[attr-defined]
    matches = [r.id for r in found]
    if not matches:
        raise NotFoundError(f"no run id starts with {prefix!r}; list runs with `loopstack runs`")
    if len(matches) > 1:
        raise ValidationError(f"run id prefix {prefix!r} is ambiguous; give more characters")
    return matches[0]


_HEX = frozenset("0123456789abcdef")
