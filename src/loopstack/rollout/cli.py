"""`loopstack deploy ...`: deployments, traffic strategies and the rollout controller (mount as ``deploy``)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from loopstack.serving.cli import batching_options, flags_named


def _project(ctx: click.Context) -> Any:
    from loopstack.core.project import Project

    return Project.open(ctx.obj.get("project_path") if ctx.obj else None)


def _show(d: Any) -> None:
    weights = ", ".join(f"{v}={round(w * 100, 2):g}%" for v, w in d.weights.items())  # a 0.5 % step shows
    extra = f"; shadow: {', '.join(d.shadow)}" if d.shadow else ""
    step = f"; step {d.step + 1}/{len(d.steps)}" if d.strategy == "canary" else ""
    click.echo(f"{d.endpoint} v{d.version} {d.strategy}: {weights}{extra}{step}")


@click.group("deploy")
def deploy() -> None:
    """Deploy models to endpoints: blue-green, canary, A/B, shadow, bandit; promote and roll back."""


@deploy.command("create")
@click.argument("endpoint")
@click.argument("model")
@click.option("--primary-metric", default=None,
              help="What judges a canary: a scoring rule of prediction and label (brier, log_loss, accuracy, "
                   "squared_error, absolute_error) or a metric carried by feedback, e.g. conversion.")
@click.option("--lower-is-better", is_flag=True,
              help="A feedback metric improves downwards (e.g. cost); scoring rules know their direction.")
@click.pass_context
def create(ctx: click.Context, endpoint: str, model: str, primary_metric: str | None, lower_is_better: bool) -> None:
    """Create ENDPOINT serving MODEL (fraud/3 or fraud@champion) to all traffic."""
    _show(_project(ctx).deployments.create(endpoint, model, primary_metric=primary_metric,
                                           higher_is_better=False if lower_is_better else None))


@deploy.command("canary")
@click.argument("endpoint")
@click.argument("model")
@click.option("--steps", default="1,5,25,50,100", show_default=True, help="Traffic percentages, comma-separated.")
@click.option("--min-requests", default=1000, show_default=True, type=int, help="Canary requests per step.")
@click.option("--min-labels", default=0, show_default=True, type=int,
              help="Primary-metric labels that must arrive in each step (needs a deployment with a primary metric).")
@click.option("--alpha", default=0.05, show_default=True, type=float, help="False rollback rate over the canary.")
@click.option("--error-margin", type=float, default=None,
              help="Tolerated rise of the error rate, absolute (0.002 = 0.2 points) [default: 0].")
@click.option("--latency-margin", type=float, default=None,
              help="Tolerated rise of the share of requests past the stable p99, absolute [default: 0].")
@click.option("--primary-margin", type=float, default=None,
              help="Tolerated loss of the primary metric's mean, absolute [default: 0].")
@click.option("--non-inferior", is_flag=True,
              help="Promote only once the data show the canary worse by no more than each margin (needs a "
                   "positive margin per guardrail), not merely not proven worse; the steps before ramp up as usual.")
@click.option("--max-requests", type=int, default=None,
              help="Roll back a canary not promoted within this many canary requests [default: unbounded].")
@click.option("--max-holds", type=int, default=None,
              help="Roll back after this many consecutive evaluations whose hold made no progress (a traffic-split "
                   "mismatch, no canary requests, labels that stopped coming) [default: unbounded].")
@click.pass_context
def canary(ctx: click.Context, endpoint: str, model: str, steps: str, min_requests: int, min_labels: int,
           alpha: float, error_margin: float | None, latency_margin: float | None, primary_margin: float | None,
           non_inferior: bool, max_requests: int | None, max_holds: int | None) -> None:
    """Start a canary of MODEL on ENDPOINT; `deploy evaluate --watch` drives it.

    The margins, --non-inferior, --max-requests and --max-holds set the CanaryPolicy fields of the same
    meaning (error_margin, latency_margin, primary_margin, require_non_inferiority, max_canary_requests,
    max_hold_evaluations).
    """
    parsed = _percentages(steps)
    given = {"error_margin": error_margin, "latency_margin": latency_margin, "primary_margin": primary_margin,
             "require_non_inferiority": non_inferior or None, "max_canary_requests": max_requests,
             "max_hold_evaluations": max_holds}
    policy = {name: value for name, value in given.items() if value is not None}
    _show(_project(ctx).deployments.canary(endpoint, model, steps=parsed, min_requests_per_step=min_requests,
                                           min_labels_per_step=min_labels, alpha=alpha, **policy))


@deploy.command("ab")
@click.argument("endpoint")
@click.argument("variants", nargs=-1, required=True)
@click.option("--weights", default=None, help="Comma-separated shares (default: equal).")
@click.option("--salt", default=None, help="Hash seed of the experiment (default: a new random one).")
@click.pass_context
def ab(ctx: click.Context, endpoint: str, variants: tuple[str, ...], weights: str | None, salt: str | None) -> None:
    """A/B test on ENDPOINT between VARIANTS (NAME=MODEL or MODEL, control first), sticky per unit id."""
    pairs = [tuple(v.split("=", 1)) if "=" in v else (v, v) for v in variants]
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # a dict kept the last of each, and the test ran on fewer variants than were named
        raise click.BadParameter(f"variant name(s) {repeated} are given more than once in {list(variants)}; "
                                 "give each variant its own NAME=MODEL", param_hint="VARIANTS")
    named = dict(pairs)
    shares = _numbers(weights, "--weights", "0.5,0.5") if weights else None
    _show(_project(ctx).deployments.ab(endpoint, named, shares, salt=salt))


@deploy.command("shadow")
@click.argument("endpoint")
@click.argument("model")
@click.pass_context
def shadow(ctx: click.Context, endpoint: str, model: str) -> None:
    """Mirror every request of ENDPOINT to MODEL; callers keep the champion's answers."""
    _show(_project(ctx).deployments.shadow(endpoint, model))


@deploy.command("blue-green")
@click.argument("endpoint")
@click.argument("model")
@click.pass_context
def blue_green(ctx: click.Context, endpoint: str, model: str) -> None:
    """Switch all of ENDPOINT's traffic to MODEL at once; `deploy rollback` switches back instantly."""
    _show(_project(ctx).deployments.blue_green(endpoint, model))


@deploy.command("bandit")
@click.argument("endpoint")
@click.argument("models", nargs=-1, required=True)
@click.option("--min-share", default=0.05, show_default=True, type=float, help="Least traffic share per arm.")
@click.pass_context
def bandit(ctx: click.Context, endpoint: str, models: tuple[str, ...], min_share: float) -> None:
    """Route ENDPOINT by Thompson sampling over MODELS on the feedback reward."""
    _show(_project(ctx).deployments.bandit(endpoint, list(models), min_share=min_share))


@deploy.command("promote")
@click.argument("endpoint")
@click.option("--variant", default=None, help="Variant to promote (default: the challenger).")
@click.option("--reason", default="manual", show_default=True)
@click.pass_context
def promote(ctx: click.Context, endpoint: str, variant: str | None, reason: str) -> None:
    """Make the challenger (or --variant) ENDPOINT's only live variant."""
    _show(_project(ctx).deployments.promote(endpoint, variant, reason=reason))


@deploy.command("rollback")
@click.argument("endpoint")
@click.option("--reason", default="manual", show_default=True)
@click.pass_context
def rollback(ctx: click.Context, endpoint: str, reason: str) -> None:
    """Send all of ENDPOINT's traffic back to the stable variant now."""
    _show(_project(ctx).deployments.rollback(endpoint, reason=reason))


@deploy.command("delete")
@click.argument("endpoint")
@click.option("--reason", default="manual", show_default=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, endpoint: str, reason: str, yes: bool) -> None:
    """Remove ENDPOINT's deployment: servers stop serving it at their next poll."""
    from loopstack.core.cli import confirm

    deployments = _project(ctx).deployments
    deployments.get(endpoint)  # an unknown endpoint is named before anything is asked
    if not yes:
        confirm(f"Delete deployment {endpoint!r}? Servers stop serving it at their next poll")
    deployments.delete(endpoint, reason=reason)
    click.echo(f"deleted deployment {endpoint} (event {deployments.last_event})")


@deploy.command("evaluate")
@click.argument("endpoint")
@click.option("--log-dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="The server's log folder (default: .loopstack/logs).")
@click.option("--watch", "interval", default=None, type=click.FloatRange(0, min_open=True),
              help="Repeat every N seconds until the end.")
@click.pass_context
def evaluate(ctx: click.Context, endpoint: str, log_dir: str | None, interval: float | None) -> None:
    """Run the rollout controller on ENDPOINT: hold, advance, roll back or promote."""
    from loopstack.rollout.controller import RolloutController

    controller = RolloutController(_project(ctx), endpoint, log_dir)
    while True:
        decision = controller.evaluate()
        click.echo(f"{decision.action}: {decision.reason} (canary weight {decision.weight:.0%}, "
                   f"{decision.canary_requests} canary requests)")
        if interval is None or decision.action in ("promote", "rollback"):
            return
        time.sleep(interval)


@deploy.command("status")
@click.argument("endpoint", required=False)
@click.option("--log-dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="The server's log folder (default: .loopstack/logs).")
@click.option("--json", "as_json", is_flag=True, help="Print the deployment, traffic and verdicts as JSON.")
@click.pass_context
def status(ctx: click.Context, endpoint: str | None, log_dir: str | None, as_json: bool) -> None:
    """Deployments; with ENDPOINT, per-variant traffic and the latest canary verdicts."""
    project = _project(ctx)
    if endpoint is None:
        for d in project.deployments.list():
            _show(d)
        return
    from loopstack.rollout.controller import RolloutController

    controller = RolloutController(project, endpoint, log_dir)
    d = project.deployments.get(endpoint)
    traffic = [t.to_dict() for t in controller.traffic(d).values()]
    recent = project.events.list(kind="rollout.canary.", subject=endpoint, limit=20)
    decisions = [e for e in recent if "action" in e.payload][:1]  # decisions, not the step changes they caused
    evidence = decisions[0].payload.get("evidence", []) if decisions else []
    if as_json:
        click.echo(json.dumps({"deployment": d.to_dict(), "traffic": traffic, "evidence": evidence}, indent=2))
        return
    _show(d)
    if decisions and d.strategy != "canary":  # an earlier canary's numbers are not this deployment's state
        last = decisions[0]
        click.echo(f"last canary decision: {last.payload['action']}: {last.payload.get('reason', '')} "
                   f"(event {last.id}); `loopstack events --chain {last.id}` shows it")
        decisions, evidence = [], []
    _render(traffic, evidence, decisions[0].payload if decisions else None, decisions[0].id if decisions else None)


def _render(
    traffic: list[dict[str, Any]], evidence: list[dict[str, Any]], last: dict[str, Any] | None,
    event: int | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("variant", "requests", "errors", "error rate", "p50 ms", "p99 ms", "feedback", "primary")
    for t in traffic:
        table.add_row(t["variant"], str(t["requests"]), str(t["errors"]), f"{t['error_rate']:.2%}", _num(t["p50_ms"]),
                      _num(t["p99_ms"]), str(t["feedback"]), _num(t["primary_mean"], 4))
    console.print(table)
    if last is None:
        return
    # the traffic table above is now; the verdicts are those of the latest decision, on the data it had
    at = f" (latest decision, event {event}, at {last.get('canary_requests', 0)} canary requests)" if event else ""
    verdicts = Table("metric", "verdict", "stable", "canary", "diff", "interval",
                     title=f"{last['action']}: {last['reason']}{at}")
    for e in evidence:
        if "verdict" in e:
            verdicts.add_row(e["metric"], *_verdict_cells(e))
    console.print(verdicts)


def _verdict_cells(e: dict[str, Any]) -> tuple[str, ...]:
    """A guardrail's verdict, values, difference and interval, with "-" where it has no data or too little.

    A guardrail without enough data used to show the prior's numbers: an error rate of 0.5 for a stable
    variant with no requests yet (Agresti-Caffo's added success and failure) and an interval of +-44.
    """
    insufficient = e["verdict"] == "insufficient"

    def value(arm: str) -> str:
        samples = e.get(f"samples_{arm}", e.get(f"n_{arm}"))
        if samples is not None and samples <= 0:
            return "-"
        return _num(e.get(f"observed_{arm}", e.get(arm)) if insufficient else e.get(arm), 4)

    if insufficient:
        return "not enough data", value("stable"), value("canary"), "-", "-"
    ci = e.get("diff_ci") or [None, None]
    interval = "-" if ci[0] is None and ci[1] is None else f"[{_num(ci[0], 4)}, {_num(ci[1], 4)}]"
    # under require_non_inferiority an "ok" that has not yet shown non-inferiority still holds the step
    verdict = e["verdict"] + (" (not yet non-inferior)" if e.get("non_inferior") is False else "")
    return verdict, value("stable"), value("canary"), _num(e.get("diff"), 4), interval


def _numbers(text: str, option: str, example: str) -> list[float]:
    """Comma-separated numbers, or a usage error that names the option and the value."""
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers, e.g. {example}",
                                 param_hint=option) from None


def _percentages(text: str) -> list[float]:
    """--steps as `normalize_steps` reads them: "1" is 1 % here, never all of the traffic."""
    values = _numbers(text, "--steps", "1,5,25,50,100")
    outside = [v for v in values if not 0 < v <= 100]
    if outside:
        raise click.BadParameter(f"{text!r}: steps are percentages in (0, 100]; {outside} are not",
                                 param_hint="--steps")
    # a list with no value above 1 would be read as fractions: hand those over instead
    return values if any(v > 1 for v in values) else [v / 100 for v in values]


def _num(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@deploy.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--log-dir", default=None, help="Prediction and traffic log folder (default: .loopstack/logs).")
@batching_options
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, log_dir: str | None, **batching: Any) -> None:
    """Serve every deployment at POST /v1/endpoints/{endpoint}:predict, following changes live.

    The batching flags apply to every variant of every endpoint."""
    from loopstack.serving import ServerSettings
    from loopstack.serving import serve as serve_http

    project = _project(ctx)
    with flags_named():
        settings = ServerSettings(log_dir=log_dir or str(project.root / ".loopstack" / "logs"),
                                  variant_batching=batching)
    banner = f"serving deployments {project.deployments.names()} on http://{host}:{port}"
    # the same server as `loopstack serve`: math thread pools sized, SIGTERM drains, one uvicorn configuration
    serve_http([], host=host, port=port, settings=settings, deployments=project.deployments,
               feature_store=project.feature_store,  # variants logged with features take entity keys
               on_started=lambda: click.echo(banner, err=True))  # once bound: no start-up error follows it
