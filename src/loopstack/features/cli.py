"""Feature store commands: ``loopstack apply`` and ``loopstack features list|materialize|skew|compact``.

``apply`` prints the plan before applying it (``--dry-run`` stops there), so
removing a view from the definitions files is seen before it happens.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from loopstack.core.cli import confirm, console, open_project


@click.command()
@click.option("--dry-run", is_flag=True, help="Show the plan, change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Apply removals without asking.")
@click.pass_context
def apply(ctx: click.Context, dry_run: bool, yes: bool) -> None:
    """Validate the project's definitions, show the plan, and store it."""
    project = open_project(ctx)
    store = project.feature_store
    plan = store.plan()
    out = console()
    if not plan.changes and not project.config.definitions:  # what `loopstack init` writes: nothing to match
        out.print("no definition files are listed; add `definitions: [features.py]` to loopstack.yaml",
                  markup=False, highlight=False)
        return
    for change in plan.changes:
        colour = {"add": "green", "change": "yellow", "remove": "red"}[change.action]
        out.print(f"[{colour}]{change}[/]", highlight=False)
    out.print(plan.render().splitlines()[-1], highlight=False)
    if dry_run or not plan.changes:
        return
    if plan.removed and not yes:
        confirm(f"remove {len(plan.removed)} definition(s)?", action=f"remove {len(plan.removed)} definition(s)")
    store.apply()
    out.print("[green]applied[/]")


@click.group()
def features() -> None:
    """Feature views, materialization and the skew check."""


@features.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List applied entities, feature views, on-demand views and services."""
    from rich.table import Table

    from loopstack.features.materialize import watermark

    store = open_project(ctx).feature_store
    catalog = store.catalog
    rows = []
    for obj in catalog.all():
        if obj.kind == "feature_service":  # what it serves, as view:feature references
            features = obj.refs()
        else:
            features = [f.name for f in getattr(obj, "schema", [])] or getattr(obj, "join_keys", None) or []
        mark = watermark(store, obj) if obj.kind == "feature_view" else None
        rows.append({"kind": obj.kind, "name": obj.name, "origin": catalog.origin(obj), "version": obj.digest()[:12],
                     "fields": features, "watermark": _iso(mark)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("kind", "name", "fields", "version", "materialized to", "file")
    for row in rows:
        table.add_row(row["kind"], row["name"], ", ".join(row["fields"]), row["version"], row["watermark"] or "-",
                      row["origin"])
    console().print(table)


@features.command()
@click.option("--start", help="Window start (ISO 8601); omit for incremental from each view's watermark.")
@click.option("--end", help="Window end (ISO 8601, default: now).")
@click.option("--view", "views", multiple=True, help="Only these views (repeatable).")
@click.option("--chunk-size", type=int, default=None, help="Rows per write (default 5000).")
@click.pass_context
def materialize(ctx: click.Context, start: str | None, end: str | None, views: tuple[str, ...],
                chunk_size: int | None) -> None:
    """Load the latest feature values into the online store (resumes an interrupted run)."""
    store = open_project(ctx).feature_store
    end_value = end or datetime.now(UTC).isoformat()
    if start:
        done = store.materialize(start, end_value, list(views) or None, chunk_size=chunk_size)
    else:
        done = store.materialize_incremental(end_value, list(views) or None, chunk_size=chunk_size)
    if not done:  # saying nothing read as success with nothing to say
        console().print("no feature views to materialize: define them and run `loopstack apply` first",
                        highlight=False)
    for name, rows in done.items():
        console().print(f"{name}: {rows} entities", highlight=False)


@features.command()
@click.argument("log")
@click.option("--since", help="Only requests at or after this time (ISO 8601).")
@click.option("--until", help="Only requests at or before this time (ISO 8601).")
@click.option("--fail-above", type=click.FloatRange(0, 1), default=None,
              help="Exit 1 if any feature's mismatch rate (0-1) exceeds this.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def skew(ctx: click.Context, log: str, since: str | None, until: str | None, fail_above: float | None,
         as_json: bool) -> None:
    """Recompute the served rows of feature log LOG offline and report mismatches per feature."""
    from rich.table import Table

    report = open_project(ctx).feature_store.skew(log, since=since, until=until)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        table = Table("feature", "rows", "mismatches", "rate", "example (served -> offline)")
        for item in report.features:
            example = item.examples[0] if item.examples else None
            shown = f"{example['served']!r} -> {example['offline']!r}" if example else "-"
            table.add_row(item.ref, str(item.rows), str(item.mismatches), f"{item.rate:.2%}", shown)
        console().print(table)
    if fail_above is not None and report.rows == 0:  # a gate that checked nothing must not pass
        window = f" between {since or 'the start'} and {until or 'now'}" if since or until else ""
        raise click.ClickException(f"no served rows of {log}{window} to check, so --fail-above cannot pass; "
                                   "widen --since/--until or check that the service logs its features")
    if fail_above is not None and report.max_rate > fail_above:
        raise click.ClickException(f"skew {report.max_rate:.2%} exceeds --fail-above {fail_above:.2%}")


@features.command()
@click.argument("log")
@click.option("--older-than", "older_than_s", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Only merge segments written at least this many seconds ago.")
@click.pass_context
def compact(ctx: click.Context, log: str, older_than_s: float) -> None:
    """Merge the small Parquet segments of feature log LOG (safe while serving, and after a crash)."""
    merged = open_project(ctx).feature_store.feature_log.compact(log, older_than_s)
    console().print(f"{log}: merged {merged} segments", highlight=False)


def _iso(micros: int | None) -> str | None:
    if micros is None:
        return None
    return datetime.fromtimestamp(micros / 1e6, tz=UTC).isoformat()


__all__ = ["apply", "features"]
