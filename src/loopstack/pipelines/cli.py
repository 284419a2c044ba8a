"""Commands: ``loopstack pipelines run|list|show|logs`` and ``loopstack loop run|status|trigger``."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
from typing import Any

import click

from loopstack.core.cli import console, open_project, when


@click.group()
def pipelines() -> None:
    """Run pipelines and look at their runs, steps and logs."""


@pipelines.command("run")
@click.argument("reference")
@click.option("--param", "-p", "params", multiple=True,
              help="A pipeline parameter, key=value, converted to the parameter's annotated type when it has one; "
                   "else a number as Python reads it (1e-3, 010 is 10), else YAML.")
@click.option("--executor", "-e", type=click.Choice(["local", "process", "ray"]), default="local", show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None, help="Worker processes for --executor process.")
@click.option("--quiet", "-q", is_flag=True, help="Do not echo step output.")
@click.pass_context
def run_pipeline(
    ctx: click.Context, reference: str, params: tuple[str, ...], executor: str, workers: int | None, quiet: bool
) -> None:
    """Run a pipeline: MODULE:PIPELINE, FILE.py:PIPELINE, or a name from the project's definitions."""
    from loopstack.pipelines.executors import get_executor
    from loopstack.pipelines.runner import PipelineFailedError

    if workers is not None and executor != "process":
        raise click.UsageError(f"--workers sizes the process pool; add --executor process (got --executor {executor})")
    project = open_project(ctx)
    target = _find_pipeline(project, reference)
    typed = _typed_params(target, params)  # `days=abc` for `days: int` failed inside the step, with a traceback
    options = {"max_workers": workers} if executor == "process" and workers else {}
    chosen = get_executor(executor, **options)
    try:
        result = target.run(project, executor=chosen, params=typed, echo=not quiet)
    except PipelineFailedError as exc:
        _print_steps(exc.run.steps.values(), f"run {exc.run.id[:12]} of {target.name}: FAILED")
        raise
    finally:
        chosen.close()
    _print_steps(result.steps.values(), f"run {result.id[:12]} of {target.name}: {result.status}")
    skipped = len(result.cached)
    console().print(
        f"{len(result.executed)} step(s) ran, {skipped} skipped (cached). "
        f"Story: [bold]loopstack events --chain {result.event_id}[/]"
    )


@pipelines.command("list")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1), help="How many recent runs.")
@click.pass_context
def list_pipelines(ctx: click.Context, limit: int) -> None:
    """The project's pipelines (from its definitions) and recent runs."""
    from rich.table import Table

    from loopstack.pipelines.loader import discover
    from loopstack.pipelines.records import list_runs

    project = open_project(ctx)
    found, _ = discover(project)
    table = Table(title="pipelines")
    for column in ("name", "parameters", "module"):
        table.add_column(column)
    for name, item in sorted(found.items()):
        defaults = ", ".join(f"{k}={v!r}" if v is not _EMPTY else k for k, v in item.defaults().items())
        table.add_row(name, defaults, getattr(item.function, "__module__", ""))
    console().print(table)
    runs = Table(title="recent runs")
    for column in ("run", "pipeline", "status", "started", "executor", "cause"):
        runs.add_column(column)
    for record in list_runs(project, limit=limit):
        runs.add_row(record.id[:12], record.pipeline, record.status, when(record.started_at), record.executor,
                     str(record.cause or ""))
    console().print(runs)


@pipelines.command("show")
@click.argument("run_id")
@click.pass_context
def show_run(ctx: click.Context, run_id: str) -> None:
    """The steps of one run: ran or cached, attempts, time, outputs."""
    from loopstack.pipelines.records import get_run

    record = get_run(open_project(ctx), run_id)
    _print_steps(record.steps, f"run {record.id[:12]} of {record.pipeline}: {record.status}")
    if record.error:
        console().print(f"[red]error:[/] {record.error}")


@pipelines.command("logs")
@click.argument("run_id")
@click.argument("step")
@click.pass_context
def step_logs(ctx: click.Context, run_id: str, step: str) -> None:
    """The captured output of one step of a run."""
    from loopstack.core.errors import NotFoundError
    from loopstack.pipelines.records import get_run

    project = open_project(ctx)
    record = get_run(project, run_id)
    found = next((s for s in record.steps if s.step == step), None)
    if found is None or found.logs_digest is None:
        steps = [s.step for s in record.steps]
        raise NotFoundError(f"run {record.id[:12]} has no logs for step {step!r}; steps: {steps}")
    click.echo(project.artifacts.get_bytes(found.logs_digest).decode("utf-8", "replace"), nl=False)


@click.group()
def loop() -> None:
    """Run the loop scheduler and look at its state."""


@loop.command("run")
@click.option("--once", is_flag=True, help="One tick (resume, check every trigger), then exit.")
@click.option("--poll", "poll_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds between ticks (default: loop.poll_s).")
@click.option("--max-ticks", type=click.IntRange(1), default=None, help="Stop after this many ticks.")
@click.pass_context
def loop_run(ctx: click.Context, once: bool, poll_s: float | None, max_ticks: int | None) -> None:
    """Run the scheduler in the foreground; Ctrl-C or SIGTERM stops it after the current action."""
    from loopstack.pipelines.config import parse_section
    from loopstack.pipelines.engine import Loop
    from loopstack.pipelines.loader import discover

    if once and max_ticks is not None:
        raise click.UsageError("--once is one tick; drop it or --max-ticks")
    project = open_project(ctx)
    _, policies = discover(project)
    section = parse_section(project.config.loop)
    engine = Loop(project, policies, poll_s=poll_s or section.poll_s, lease_ttl_s=section.lease_ttl_s)
    out = console()
    out.print(f"loop scheduler {engine.owner}: {len(policies)} polic{'y' if len(policies) == 1 else 'ies'} "
              f"({', '.join(p.name for p in policies) or 'none'}), polling every {engine.poll_s:g}s")
    previous = {sig: signal.signal(sig, lambda *_: engine.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ticks = engine.run_forever(max_ticks=1 if once else max_ticks)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.print(f"stopped after {ticks} tick(s); runs in flight resume on the next `loopstack loop run`")


@loop.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def loop_status(ctx: click.Context, as_json: bool) -> None:
    """The scheduler lease, each trigger's state, runs in flight and recent runs."""
    from loopstack.pipelines.status import collect

    project = open_project(ctx)
    report = collect(project)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    _print_status(report)


@loop.command("trigger")
@click.argument("policy")
@click.option("--reason", default="", help="Why, for the event log.")
@click.pass_context
def loop_trigger(ctx: click.Context, policy: str, reason: str) -> None:
    """Ask for a run of POLICY; the running scheduler picks it up on its next tick."""
    import time

    from loopstack.core.errors import NotFoundError
    from loopstack.pipelines.engine import cooldown_end, trigger
    from loopstack.pipelines.loader import discover

    project = open_project(ctx)
    _, policies = discover(project)
    names = [p.name for p in policies]
    if policy not in names:
        raise NotFoundError(f"no loop policy {policy!r}; policies: {names}. Declare it under loop.policies in "
                            "loopstack.yaml, or as a module-level Policy in a definitions file")
    event = trigger(project, policy, reason)
    chosen = next(p for p in policies if p.name == policy)
    if _say_run_in_progress(project, chosen, event):
        return
    ends = cooldown_end(project, chosen, time.time())  # wall clock, as `loop run` ticks
    if ends is None:
        console().print(f"event {event}: loop.manual for {policy!r}; `loopstack loop run --once` to run it now")
        return
    # a manual trigger is a signal like any other: inside the cooldown the scheduler records it as
    # loop.suppressed, and this used to say "run it now" all the same
    console().print(
        f"event {event}: loop.manual for {policy!r}, but {policy!r} is in its {chosen.cooldown_s:g}s cooldown "
        f"until {when(ends)} (its last run started at {when(ends - chosen.cooldown_s)}): a scheduler that "
        f"picks this up before then records it as loop.suppressed and starts no run. Trigger it again after "
        f"{when(ends)}, or lower cooldown_s"
    )


# -- helpers -------------------------------------------------------------------------------------
_EMPTY = __import__("inspect").Parameter.empty


def _say_run_in_progress(project: Any, policy: Any, event: int) -> bool:
    """Say so if `event` was recorded during a run of the policy, which makes the scheduler suppress it."""
    from loopstack.pipelines.engine import run_in_progress_at
    from loopstack.pipelines.state import runs

    span = run_in_progress_at(project, policy, event)  # as the engine judges it
    if span is None:
        return False
    started = next((r.started_at for r in runs(project, policy=policy.name, limit=1000) if r.id == span.run), None)
    since = f", started at {when(started)}" if started is not None else ""
    console().print(
        f"event {event}: loop.manual for {policy.name!r}, but run {span.run[:12]} of {policy.name!r} is in "
        f"progress{since}: a signal recorded during a run starts no run after it (that run is already answering "
        f"it), so the scheduler records this as loop.suppressed. Trigger it again after the run ends "
        f"(`loopstack loop status` shows it), or set ignore_signals_during_run: false"
    )
    return True


def _find_pipeline(project: Any, reference: str) -> Any:
    from loopstack.core.errors import NotFoundError
    from loopstack.pipelines.dags import Pipeline
    from loopstack.pipelines.loader import discover, load_module, load_reference

    if ":" in reference:
        module_ref, _, attribute = reference.rpartition(":")
        module = load_module(module_ref, project.root) if module_ref else None
        if module is not None and not hasattr(module, attribute.split(".")[0]):  # imports are no pipelines
            pipelines = sorted(n for n, v in vars(module).items() if isinstance(v, Pipeline))
            raise NotFoundError(f"{module_ref} has no pipeline {attribute!r}; its pipelines: {pipelines}")
        target = load_reference(reference, project.root)
        if not isinstance(target, Pipeline):
            raise NotFoundError(f"{reference} is a {type(target).__name__}, not a @pipeline")
        return target
    found, _ = discover(project)
    if reference not in found:
        raise NotFoundError(f"no pipeline {reference!r} in the project's definitions; known: {sorted(found)}")
    return found[reference]


def _parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    from loopstack.core.errors import ConfigError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"parameter {item!r} must look like key=value")
        try:
            params[key] = _param_value(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"parameter {item!r}: {value!r} is not valid YAML ({error.problem}); fix it, "
                              f"or pass it as text in YAML quotes: -p '{key}=\"{value}\"'") from error
    return params


def _typed_params(target: Any, items: tuple[str, ...]) -> dict[str, Any]:
    """The ``-p`` values checked against the pipeline's names and converted to its annotated types.

    An ``int``, ``float`` or ``bool`` parameter takes a value that reads as one (``1e3`` is 1000 for an
    ``int``; ``true``/``false`` for a ``bool``); a ``str`` one takes the text as typed (``-p tag=007``
    is ``'007'``). Other annotations get the value as read.
    """
    from loopstack.core.errors import ConfigError

    params = _parse_params(items)
    raw = {key: text for key, _, text in (item.partition("=") for item in items)}
    target.check_names(params)
    annotations = target.annotations()
    typed: dict[str, Any] = {}
    for key, value in params.items():
        expected, optional = _unwrap_optional(annotations.get(key))
        if value is None and optional:
            typed[key] = None
            continue
        converted = _convert(value, raw[key], expected)
        if converted is _REFUSED:
            kind, example = _EXPECTED[expected]
            raise ConfigError(
                f"parameter {key}={raw[key]!r} is not {kind}{' (or null)' if optional else ''}: pipeline "
                f"{target.name!r} declares {key}: {expected.__name__}; pass e.g. -p {key}={example}"
            )
        typed[key] = converted
    return typed


_REFUSED = object()
_EXPECTED: dict[Any, tuple[str, str]] = {
    int: ("an int", "30"), float: ("a number", "0.5"), bool: ("true or false", "true"),
}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``int | None`` or ``Optional[int]`` as (int, True); anything else as (annotation, False)."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1 and len(typing.get_args(annotation)) == 2:
            return members[0], True
    return annotation, False


def _convert(value: Any, text: str, expected: Any) -> Any:
    if expected is bool:
        return value if isinstance(value, bool) else _REFUSED
    if expected is int:
        if isinstance(value, bool):
            return _REFUSED
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else _REFUSED
    if expected is float:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else _REFUSED
    if expected is str:
        return value if isinstance(value, str) else text
    return value


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _param_value(text: str) -> Any:
    """A number as Python reads it, else YAML (lists, mappings, booleans, quoted text).

    YAML 1.1, which PyYAML speaks, reads 1e-3 as text, 010 as 8 and 12:30 as 750.
    """
    import yaml

    stripped = text.strip()
    if _DECIMAL.fullmatch(stripped):
        return int(stripped) if stripped.lstrip("+-").isdigit() else float(stripped)
    value = yaml.safe_load(text)
    if type(value) in (int, float) and ":" in stripped:  # YAML 1.1's base 60: a time or a ratio, as text
        return stripped
    return value


def _print_steps(steps: Any, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("step", "status", "attempts", "seconds", "outputs"):
        table.add_column(column)
    for step in steps:
        status = "skipped (cached)" if step.status == "cached" else step.status
        seconds = "" if step.duration_s is None else f"{step.duration_s:.3f}"
        outputs = ", ".join(f"{o['name']}={o['digest'][:10]}" for o in step.outputs)
        table.add_row(step.step, status, str(step.attempts), seconds, outputs)
    console().print(table)


def _print_status(report: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    lease = report["lease"]
    holder = f"{lease['owner']} (heartbeat {when(lease['heartbeat'])})" if lease else "not running"
    out.print(f"scheduler: {holder}")
    triggers = Table(title="triggers")
    for column in ("policy", "trigger", "last fire", "next fire", "cursor"):
        triggers.add_column(column)
    for row in report["triggers"]:
        upcoming = row.get("next_fire")
        next_fire = dt.datetime.fromtimestamp(upcoming).isoformat(" ", "seconds") if upcoming else ""
        triggers.add_row(row["policy"], row["trigger"], when(row["last_fire"]), next_fire, str(row["cursor"] or ""))
    out.print(triggers)
    runs = Table(title="loop runs (in flight first)")
    for column in ("run", "policy", "status", "step", "started", "last event", "error"):
        runs.add_column(column)
    for run in report["runs"]:
        runs.add_row(run["id"][:12], run["policy"], run["status"], str(run["step"]), when(run["started_at"]),
                     str(run["last_event"] or ""), (run["error"] or "")[:60])
    out.print(runs)
    if report.get("suppressed"):
        skipped = Table(title="signals that started no run (newest first)")
        for column in ("event", "policy", "when", "why"):
            skipped.add_column(column)
        for row in report["suppressed"]:
            skipped.add_row(str(row["event"]), row["policy"], when(row["time"]), row["reason"])
        out.print(skipped)


__all__ = ["loop", "pipelines"]
