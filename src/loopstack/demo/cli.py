"""The ``loopstack demo`` command: the runner with a live progress display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

MIN_ROWS = 3_000


@click.command()
@click.option(
    "--path", type=click.Path(file_okay=False, path_type=Path), default=Path("loopstack-demo"), show_default=True
)
@click.option("--fresh", is_flag=True, help="Start from an empty demo folder (else continue where it stopped).")
@click.option(
    "--backend",
    type=click.Choice(["embedded", "services"]),
    default="embedded",
    show_default=True,
    help="embedded: SQLite and local files; services: the local PostgreSQL (metadata) and Redis (online store).",
)
@click.option("--rows", default=36_000, show_default=True, type=click.IntRange(min=MIN_ROWS),
              help=f"Transactions over the 60 simulated days (at least {MIN_ROWS:,}: fewer leave a retraining "
                   "window too few labelled rows to pass its checks).")
def demo(path: Path, fresh: bool, backend: str, rows: int) -> None:
    """Run the closed loop on generated card transactions: drift, retrain, shadow, canary, promote, roll back."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loopstack.core.errors import LoopstackError
    from loopstack.demo.runner import run_demo

    console = Console(soft_wrap=True)  # the commands printed at the end stay whole in a piped log
    progress = Progress(TextColumn("[bold]day[/]"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.description}"),
                        TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task("starting", total=60)

    def on_day(day: int, info: dict[str, Any]) -> None:
        perf = info.get("performance") or {}
        auc = f"  AUC(day {day - 1}) {perf['auc']:.3f}" if perf.get("auc") == perf.get("auc") and perf else ""
        flag = " [red]drift[/]" if info.get("dataset_drift") else ""
        progress.update(task, completed=day + 1,
                        description=f"drift share {info.get('drift_share', 0):.2f}{flag}{auc}")

    with progress:
        try:
            run_demo(path, fresh, backend, rows, progress.console.print, on_day=on_day)
        except LoopstackError as error:
            raise click.ClickException(str(error)) from None
