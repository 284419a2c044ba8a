"""Gate, shadow and canary for the demo's challenger, on the deployment ``fraud-endpoint``.

The gate registers the challenger; the shadow and the canary are
`loopstack.rollout.Deployments` changes, so the server (not the demo) mirrors
and splits the traffic, and `loopstack.rollout.RolloutController` takes every
canary decision, reading the server's traffic log and the feedback (the
true labels, a day late): the primary metric is each labelled request's
Brier score, lower is better. In-process latencies mostly measure the load
of the machine, so the tail-latency guardrail gets a wide margin (25 points
of share above the stable p99). Each step also waits until labels for half
its requests have arrived during it, so a step cannot pass on the evidence of
the step before it: without that, a challenger the first day's labels could not
yet convict was promoted by a second step that had no labels of its own.

The deployment holds the canary's step and the controller's running
analysis, so a loop restarted mid-canary finds the canary where it was and
ticks on; the shadow checkpoints only whether it started and its verdict.
"""

from __future__ import annotations

from typing import Any

from loopstack.demo.config import ENDPOINT, MODEL
from loopstack.pipelines import ActionContext, StopLoop

DECISIONS = tuple(f"rollout.canary.{action}" for action in ("hold", "advance", "rollback", "promote"))

def gate(world: Any, ctx: ActionContext) -> dict[str, Any]:
    """The challenger must beat the champion's AUC on the evaluation days without a worse Brier score."""
    from loopstack.demo.training import read_output, register

    trained = ctx.results["retrain"]
    candidate = read_output(ctx.project, trained["results"]["candidate"])
    new, old = candidate["metrics"], candidate["champion"]
    passed = new["auc"] >= old["auc"] + 0.005 and new["brier"] <= old["brier"] * 1.05
    payload = {"challenger": new, "champion": old, "champion_ref": candidate["champion_ref"],
               "eval_rows": candidate["eval_rows"], "rule": "auc >= champion + 0.005 and brier <= champion * 1.05"}
    if not passed:
        ctx.emit("gate.failed", payload, subject=MODEL)
        raise StopLoop(f"challenger AUC {new['auc']:.3f} vs champion {old['auc']:.3f}: gate failed")
    version = ctx.state.get("version")
    if version is None:
        version = register(ctx.project, candidate, alias="challenger").version
        ctx.checkpoint(version=version)
    ctx.emit("gate.passed", {**payload, "version": version}, subject=MODEL)
    world.state["challenger"] = f"{MODEL}/{version}"
    world.state["reference_candidate"] = trained["results"]["frame"]
    world.save()
    return {"version": version, "challenger": new, "champion": old}


def shadow(world: Any, ctx: ActionContext) -> dict[str, Any]:
    """Mirror traffic to the challenger until it answered `shadow_requests`; fail on errors.

    Its checkpoint says whether the shadow started and how it ended, so a rerun after a kill
    neither shadows a challenger that already failed again nor judges a shadow someone ended.
    """
    deployments = ctx.project.deployments
    challenger = world.state["challenger"]
    if "report" in ctx.state:  # judged before the kill: finish what that verdict started
        return _shadow_verdict(world, ctx, ctx.state["report"])
    d = world.deployment()
    live = d.strategy == "shadow" and d.challenger == challenger
    if not live and "started" in ctx.state:
        raise StopLoop(f"the shadow of {challenger} was ended from outside (deployment {d.strategy!r})")
    if not live:
        deployments.shadow(ENDPOINT, challenger, reason="the challenger passed the gate", cause=ctx.cause)
        ctx.cause = deployments.last_event
    ctx.checkpoint(started=world.follow().state["started_at"])
    while world.state["counts"].get("stable", {}).get("requests", 0) < world.scenario.shadow_requests:
        world.advance()
    world.flush_log()
    report = shadow_report(world, since=ctx.state["started"])
    kind = "rollout.shadow.passed" if report["errors"] == 0 else "rollout.shadow.failed"
    ctx.emit(kind, report, subject=ENDPOINT)
    ctx.checkpoint(report=report)
    return _shadow_verdict(world, ctx, report)


def _shadow_verdict(world: Any, ctx: ActionContext, report: dict[str, Any]) -> dict[str, Any]:
    """A failed shadow rolls the deployment back (once) and stops the run; a passed one hands on to the canary."""
    if not report["errors"]:
        return report
    d = world.deployment()
    if d.strategy == "shadow" and d.challenger == world.state["challenger"]:
        ctx.project.deployments.rollback(ENDPOINT, reason=f"the challenger failed {report['errors']} shadow "
                                                          "requests", cause=ctx.cause)
    world.follow()
    raise StopLoop(f"the challenger failed {report['errors']} shadow requests")


def shadow_report(world: Any, since: float | None = None) -> dict[str, Any]:
    """Champion vs challenger on the same mirrored requests since the shadow began (`compare_shadow`).

    Without `since`, an earlier shadow's requests and errors in the same log would count too.
    """
    from loopstack.rollout import compare_shadow

    report = compare_shadow(world.log_dir, ENDPOINT, world.state["routing"]["champion"],
                            world.state["challenger"], since=since).to_dict()
    report["errors"] = report.pop("shadow_errors")
    return report


def canary(world: Any, ctx: ActionContext) -> dict[str, Any]:
    """Start the canary, then let the rollout controller judge each chunk of traffic until it promotes or rolls back."""
    from loopstack.rollout import RolloutController

    deployments = ctx.project.deployments
    challenger = world.state["challenger"]
    if world.deployment().strategy == "shadow":
        per_step = world.scenario.canary_requests_per_step
        deployments.canary(ENDPOINT, challenger, steps=world.scenario.canary_steps, min_requests_per_step=per_step,
                           min_labels_per_step=per_step // 2, planned_n=4 * per_step,
                           min_samples=min(100, per_step), latency_margin=0.25,
                           reason="the shadow passed", cause=ctx.cause)
        ctx.cause = deployments.last_event
        ctx.checkpoint(evaluations=0)
    controller = RolloutController(ctx.project, ENDPOINT, log_dir=world.log_dir)
    evaluations = int(ctx.state.get("evaluations", 0))
    while world.follow().strategy == "canary":
        if world.finished:
            raise StopLoop("the replay ended before the canary finished")
        day = world.advance()["day"]  # the day of the traffic the controller is about to judge
        world.flush_log()
        controller.evaluate(cause=ctx.cause)
        evaluations += 1
        if controller.last_event is not None and controller.last_event != ctx.cause:
            ctx.cause = controller.last_event  # the next decision (or the promotion) follows from this one
            world.state.setdefault("decision_days", {})[str(ctx.cause)] = day
            world.save()
        ctx.checkpoint(evaluations=evaluations)
    return finish(world, ctx, evaluations)


def finish(world: Any, ctx: ActionContext, evaluations: int) -> dict[str, Any]:
    """After the controller's verdict: a promoted challenger takes the champion alias and the drift reference."""
    import loopstack as ls
    from loopstack import registry

    challenger = world.state["challenger"]
    d = world.deployment()
    promoted = d.champion == challenger
    if promoted and world.state["champion"] != challenger:
        ls.set_alias(MODEL, "champion", int(challenger.split("/")[1]), project=ctx.project)
        world.state.update(champion=challenger, reference=world.state["reference_candidate"])
        world.state.setdefault("promotions", []).append({"version": challenger, "day": world.day})
    elif not promoted and not any(r["version"] == challenger for r in world.state.get("rollbacks", [])):
        world.state.setdefault("rollbacks", []).append({"version": challenger, "day": world.day})
    world.save()
    try:
        registry.delete_alias(MODEL, "challenger", project=ctx.project)
    except ls.NotFoundError:
        pass
    return {"outcome": "promote" if promoted else "rollback", "challenger": challenger,
            "champion": world.state["champion"], "evaluations": evaluations}

