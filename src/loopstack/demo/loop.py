"""The loop policies of the demo: drift -> fresh labels -> retrain -> gate -> shadow -> canary -> promote.

Two policies share the same actions. ``retrain-on-drift`` fires on the
monitor's ``drift.detected``; ``weekly-retrain`` is the team's scheduled
retrain, fired by hand (``loopstack loop trigger``) on the demo's day 50.
Every action records events chained to the signal, so
``loopstack events --chain <id>`` reads as the story of one retraining.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from loopstack.demo import rollout
from loopstack.demo.config import MODEL, MONITOR
from loopstack.pipelines import ActionContext, Hook, Loop, Policy, drift_detected

DRIFT_POLICY = "retrain-on-drift"
WEEKLY_POLICY = "weekly-retrain"


def collect_labels(world: Any, fresh_days: int, ctx: ActionContext) -> dict[str, Any]:
    """Wait (let the world run) until `fresh_days` days since the signal have true labels."""
    first = ctx.state.get("first_day")
    if first is None:
        first = world.day - 1 if ctx.policy == DRIFT_POLICY else world.day - 7
        ctx.checkpoint(first_day=first)
    last = first + fresh_days - 1
    while world.day - 1 - world.scenario.label_delay_days < last:
        world.advance()
    ctx.emit("labels.collected", {"first_day": first, "last_day": last, "days": fresh_days}, subject=MODEL)
    return {"first_day": first, "last_day": last}


def retrain(world: Any, ctx: ActionContext) -> dict[str, Any]:
    """Run the training pipeline on the collected days, caused by the signal's chain."""
    from loopstack.demo.training import train_fraud

    window = ctx.results["collect-labels"]
    params = {"root": str(world.root), "first_day": window["first_day"], "last_day": window["last_day"],
              "eval_days": 1, "champion": world.state["champion"]}
    run = train_fraud.run(ctx.project, params=params, cause=ctx.cause)
    ctx.cause = run.event_id
    return {"pipeline_run": run.id, "tracking_run_id": run.tracking_run_id, "cached": run.cached,
            "results": {name: ref.digest for name, ref in run.results.items()}}


def actions(world: Any, fresh_days: int) -> list[Hook]:
    return [
        Hook(partial(collect_labels, world, fresh_days), name="collect-labels"),
        Hook(partial(retrain, world), name="retrain"),
        Hook(partial(rollout.gate, world), name="gate"),
        Hook(partial(rollout.shadow, world), name="shadow"),
        Hook(partial(rollout.canary, world), name="canary"),
    ]


def make_loop(project: Any, world: Any) -> Loop:
    """The loop with both policies, bound to this process's world."""
    drift = Policy(DRIFT_POLICY, when=[drift_detected(MONITOR)], then=actions(world, fresh_days=4), cooldown_s=3600)
    weekly = Policy(WEEKLY_POLICY, then=actions(world, fresh_days=7), cooldown_s=0)
    return Loop(project, [drift, weekly], poll_s=0.5, lease_ttl_s=20)
