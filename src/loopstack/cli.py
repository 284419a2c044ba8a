"""The `loopstack` command: one command group per capability, loaded when used.

Each subcommand lives in its subpackage and is imported only when invoked,
so `loopstack --help` and quick commands stay fast. A `LoopstackError`
prints one line and exits 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

import click

# name -> "module:attribute" of a click command or group
COMMANDS = {
    "init": "loopstack.core.cli:init",
    "runs": "loopstack.tracking.cli:runs",
    "models": "loopstack.registry.cli:models",
    "events": "loopstack.core.cli:events",
    "demo": "loopstack.demo:demo",
    "apply": "loopstack.features.cli:apply",
    "features": "loopstack.features.cli:features",
    "serve": "loopstack.serving.cli:serve",
    "predict": "loopstack.serving.cli:predict",
    "quality": "loopstack.quality.cli:quality",
    "gpu": "loopstack.economics.cli:gpu",
    "drift": "loopstack.drift.cli:drift",
    "pipelines": "loopstack.pipelines.cli:pipelines",
    "loop": "loopstack.pipelines.cli:loop",
    "train": "loopstack.training.cli:train",
    "deploy": "loopstack.rollout.cli:deploy",
}
HELP = {
    "init": "Create a project folder with a loopstack.yaml.",
    "runs": "List, filter, show and compare runs.",
    "models": "List registered models, versions and aliases.",
    "events": "Show the event log: what happened, and why.",
    "demo": "Run the whole loop on generated data.",
    "apply": "Validate feature definitions and store them, showing the plan.",
    "features": "List, materialize and check feature views for skew.",
    "serve": "Serve registered models over HTTP (native JSON and Open Inference v2).",
    "predict": "Batch inference over Parquet, streaming and resumable.",
    "quality": "Run data-quality suites and profile data sets.",
    "gpu": "GPU memory estimates, job cost and cloud-vs-buy break-even.",
    "drift": "Drift reports comparing current data with a reference.",
    "pipelines": "Run pipelines; show their runs, steps and logs.",
    "loop": "Run the loop scheduler and show its state.",
    "train": "Launch a training script on N processes (torch.distributed).",
    "deploy": "Deployments: blue-green, canary, A/B, shadow and bandit rollouts.",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command: click.Command = getattr(import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP.get(name, "")) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--project", "-p", "project_path", type=click.Path(), default=None, help="Project folder (default: cwd).")
@click.version_option(package_name="loopstack")
@click.pass_context
def cli(ctx: click.Context, debug: bool, project_path: str | None) -> None:
    """loopstack: the closed-loop MLOps platform."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["project_path"] = project_path


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, turning loopstack errors into one clean line."""
    from loopstack.core.errors import LoopstackError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except LoopstackError as exc:
        if debug:
            raise
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except OSError as exc:  # a path the command cannot read or write: the OS's own words name it
        if debug:
            raise
        click.secho(f"error: {_os_failure(exc)}", fg="red", err=True)
        sys.exit(1)
    except Exception as exc:
        if debug or not _is_database_error(exc):
            raise
        click.secho(f"error: {_database_failure(exc)}", fg="red", err=True)
        sys.exit(1)


def _os_failure(exc: OSError) -> str:
    """``cannot write /nope/x.yaml: No such file or directory; ...``: the path, the reason, what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    return (f"cannot use{where}: {reason}; check that the path exists and is writable (or pass another), "
            "or rerun with --debug for the traceback")


def _is_database_error(exc: Exception) -> bool:
    """A driver error that SQLAlchemy wrapped (locked, connection lost, not a database file).

    Told by module and attribute, so a failure that has nothing to do with the
    database does not import SQLAlchemy just to be re-raised.
    """
    return type(exc).__module__ == "sqlalchemy.exc" and getattr(exc, "orig", None) is not None


def _database_failure(exc: Exception) -> str:
    cause = getattr(exc, "orig", exc)
    first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return (
        f"the metadata database failed: {first_line} ({type(cause).__name__}); check that its server runs "
        "and no other process holds it locked, then retry (--debug shows the traceback)"
    )


if __name__ == "__main__":
    main()
