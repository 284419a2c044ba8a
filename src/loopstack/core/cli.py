"""Core commands: `loopstack init` and `loopstack events`."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path

import click


def open_project(ctx: click.Context):  # type: ignore[no-untyped-def]
    """The project named by --project, or found from the working directory."""
    from loopstack.core.project import Project

    return Project.open(ctx.obj.get("project_path") if ctx.obj else None)


def console():  # type: ignore[no-untyped-def]
    """Rich output that never breaks a line of text: piped into a log, a command stays copyable whole."""
    from rich.console import Console

    return Console(soft_wrap=True)


def stdin_is_terminal() -> bool:
    import sys

    return sys.stdin.isatty()


def confirm(question: str, action: str = "delete") -> None:
    """Ask `question`; stop unless answered yes.

    With stdin not a terminal (a script, CI, a pipe) nobody can answer: click read the end of input and
    printed a bare "Aborted." with exit 130, so refuse in one line that names the flag instead.
    """
    from loopstack.core.errors import ConfigError

    if not stdin_is_terminal():
        raise ConfigError(f"refusing to {action} without confirmation; pass --yes")
    click.confirm(question, abort=True)


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.argument("path", type=click.Path(file_okay=False), default=".")
@click.option("--name", help="Project name (default: the folder name).")
@click.option("--metadata", help="Metadata DB URL (default: SQLite in .loopstack/).")
@click.option("--artifacts", help="Artifact store location (default: .loopstack/artifacts).")
def init(path: str, name: str | None, metadata: str | None, artifacts: str | None) -> None:
    """Create a project folder with a loopstack.yaml."""
    from loopstack.core.errors import ConflictError
    from loopstack.core.project import CONFIG_FILE, Project

    settings = {k: v for k, v in {"metadata": metadata, "artifacts": artifacts}.items() if v}
    try:
        project = Project.init(path, name=name, **settings)
    except ConflictError:  # its hint, Project.open(...), is Python: a shell user needs the commands
        folder = shlex.quote(path)
        config = Path(path).resolve() / CONFIG_FILE
        if Path(path).resolve() == Path.cwd().resolve():  # "work in that project with `cd .`" said nothing
            raise ConflictError(f"this folder is already a loopstack project ({config} exists); run loopstack "
                                "commands here, or choose an empty folder for a new project") from None
        raise ConflictError(f"{config} already exists; work in that project with "
                            f"`cd {folder}` or `loopstack -p {folder} ...`, or choose an empty folder") from None
    console().print(
        f"[green]Created project[/] [bold]{project.config.name}[/] in {project.root}\n"
        f"  metadata:  {project.config.metadata}\n  artifacts: {project.config.artifacts}\n"
        "Next: [bold]import loopstack as ls; ls.start_run()[/] in a script in this folder."
    )
    project.close()


@click.command()
@click.option("--kind", help="Event kind, or a family ending in '.', e.g. 'run.'.")
@click.option("--subject", help="Only events about this subject (a run id, model/version...).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="How many events.")
@click.option("--chain", "chain_id", type=click.IntRange(1), help="Show the cause chain that led to this event id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.pass_context
def events(
    ctx: click.Context, kind: str | None, subject: str | None, limit: int, chain_id: int | None, as_json: bool
) -> None:
    """Show the event log: what happened, and why."""
    from rich.table import Table

    from loopstack.core.errors import NotFoundError

    project = open_project(ctx)
    if chain_id is None:
        rows = project.events.list(kind=kind, subject=subject, limit=limit)
    else:
        rows = project.events.chain(chain_id)
        if not rows:
            raise NotFoundError(f"no event with id {chain_id}; list event ids with `loopstack events`")
    if as_json:
        for event in rows:
            click.echo(json.dumps(event.__dict__))
        return
    out = console()
    table = Table(title=f"events of {project.config.name}")
    # id, time and cause never shrink: `loopstack events --chain ID` needs the id whole on any terminal width.
    # subject and payload (and kind on a narrow terminal) are the columns rich may narrow: cells cut with '…'.
    id_width = max(2, len(str(max((e.id for e in rows), default=1))))  # never narrower than its header
    table.add_column("id", justify="right", no_wrap=True, min_width=id_width)
    table.add_column("time", no_wrap=True, min_width=19)
    kind_width = max((len(e.kind) for e in rows), default=4)
    # kept whole while subject and payload still get a few columns (19: the borders and padding of 6 columns)
    whole_kind = id_width + 19 + kind_width + 5 + 19 + 12 <= out.width
    table.add_column("kind", style="bold", no_wrap=whole_kind, min_width=kind_width if whole_kind else None)
    table.add_column("subject", max_width=20)
    table.add_column("cause", justify="right", no_wrap=True, min_width=5)
    table.add_column("payload")
    for event in rows:
        table.add_row(
            str(event.id), when(event.time), _cell(event.kind), _cell(event.subject), str(event.cause or ""),
            _cell(json.dumps(event.payload, separators=(",", ":"))),
        )
    out.print(table)


def _cell(value: str):  # type: ignore[no-untyped-def]
    """One line cut with '…': the column can still be narrowed (not no_wrap), the row never grows taller."""
    from rich.text import Text

    return Text(value, no_wrap=True, overflow="ellipsis")


__all__ = ["confirm", "console", "events", "init", "open_project", "when"]
