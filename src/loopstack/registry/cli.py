"""`loopstack models`: registered models, their versions and aliases."""

from __future__ import annotations

import click

from loopstack.core.cli import confirm, console, open_project, when


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List registered models, versions and aliases."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    registry = open_project(ctx).registry
    table = Table(title="registered models")
    for column in ("name", "latest version", "aliases", "created"):
        table.add_column(column)
    for model in registry.list_models():
        aliases = ", ".join(f"{alias} -> v{version}" for alias, version in sorted(model.aliases.items()))
        table.add_row(model.name, str(model.latest_version or "-"), aliases or "-", when(model.created_at))
    console().print(table)


@models.command()
@click.argument("name")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """Every version of a model with its metrics, run, flavor and aliases."""
    from rich.table import Table

    registry = open_project(ctx).registry
    versions = registry.search_model_versions(name)
    metric_keys = sorted({k for v in versions for k in v.metrics if not k.startswith("system.")})[:5]
    table = Table(title=f"versions of {name}")
    for column in ("version", "aliases", "flavor", "run", "created", *metric_keys):
        table.add_column(column)
    for version in sorted(versions, key=lambda v: v.version):
        metrics = [f"{version.metrics[k]:.4g}" if version.metrics.get(k) is not None else "-" for k in metric_keys]
        table.add_row(
            str(version.version),
            ", ".join(version.aliases) or "-",
            version.flavor,
            (version.run_id or "-")[:8],
            when(version.created_at),
            *metrics,
        )
    console().print(table)


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
@click.pass_context
def set_alias(ctx: click.Context, name: str, alias: str, version: int) -> None:
    """Point ALIAS of model NAME at VERSION (atomically)."""
    registry = open_project(ctx).registry
    moved = registry.set_alias(name, alias, version)
    console().print(f"[green]{name}@{alias}[/] -> version {moved.version}")


@models.command("delete")
@click.argument("name")
@click.argument("version", type=click.IntRange(1), required=False)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, name: str, version: int | None, yes: bool) -> None:
    """Delete VERSION of model NAME, or the whole model without VERSION.

    Refused while an alias points at the version or a deployment serves it. A deleted
    version's number is never given again; the run that logged it keeps its files.
    """
    target = f"{name}/{version}" if version is not None else f"model {name} with every version and alias"
    if not yes:
        confirm(f"Delete {target}?")
    registry = open_project(ctx).registry
    if version is None:
        registry.delete_model(name)
    else:
        registry.delete_model_version(name, version)
    console().print(f"[red]deleted[/] {target}")
