"""Gate, shadow and canary for the demo's challenger, driven through the server's model routes.

The champion serves as ``fraud``, the challenger as ``fraud-challenger``;
the world routes each request by the current split (mirror for a shadow, a
split by transaction id for a canary; by card would make request counts
clustered and trip the sample-ratio check). The canary decisions are
`loopstack.rollout.CanaryAnalysis`'s, fed after every chunk of traffic with
the cumulative numbers since the canary started, read from the server's
prediction log (latency, score) and feedback (true labels): the primary
metric is each labelled request's Brier score, lower is better. In-process
latencies mostly measure the load of the machine, so the tail-latency guardrail
gets a wide margin (25 points of share above the stable p99).

Every evaluation's inputs are checkpointed (compactly) with the loop
action, so a loop restarted mid-canary rebuilds the analysis by replaying
them and carries on at the same step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopstack.demo.config import CHALLENGER_SLOT, MODEL
from loopstack.pipelines import ActionContext, StopLoop

ENDPOINT = "fraud-endpoint"
LATENCY_SAMPLE = 400


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
    world.swap(CHALLENGER_SLOT, world.state["challenger"])
    return {"version": version, "challenger": new, "champion": old}


def shadow(world: Any, ctx: ActionContext) -> dict[str, Any]:
    """Mirror traffic to the challenger until it answered `shadow_requests`; fail on errors."""
    import time

    if not ctx.resumed or world.state["routing"]["mode"] != "shadow":
        world.set_routing("shadow")
        world.state["shadow_started"] = time.time()
        world.save()
        ctx.emit("rollout.shadow.started", {"challenger": world.state["challenger"]}, subject=ENDPOINT)
    while world.state["counts"].get("shadow", {}).get("requests", 0) < world.scenario.shadow_requests:
        world.advance()
    world.flush_log()
    report = shadow_report(world)
    kind = "rollout.shadow.passed" if report["errors"] == 0 else "rollout.shadow.failed"
    ctx.emit(kind, report, subject=ENDPOINT)
    if report["errors"]:
        world.set_routing("stable")
        raise StopLoop(f"the challenger failed {report['errors']} shadow requests")
    return report


def shadow_report(world: Any) -> dict[str, Any]:
    """Champion vs challenger on the same mirrored requests: agreement, score shift, latency, errors."""
    from loopstack.drift import ks

    log = world.read_log("predictions", world.state["shadow_started"] - 1.0)
    mirrored = log[log.variant == "shadow"]
    pairs = log[log.variant == "stable"].merge(
        mirrored.assign(request_id=mirrored.request_id.str.removesuffix("-shadow")), on="request_id",
        suffixes=("_champion", "_challenger"))
    a = np.array([p[1] for p in pairs["outputs.predict_proba_champion"]])
    b = np.array([p[1] for p in pairs["outputs.predict_proba_challenger"]])
    counts = world.state["counts"].get("shadow", {"requests": 0, "errors": 0})
    return {
        "requests": int(counts["requests"]),
        "errors": int(counts["errors"]),
        "paired": len(pairs),
        "agreement_at_0.5": float(np.mean((a > 0.5) == (b > 0.5))) if len(pairs) else None,
        "mean_score_champion": float(a.mean()) if len(a) else None,
        "mean_score_challenger": float(b.mean()) if len(b) else None,
        "ks_p_value": float(ks(a, b)) if len(a) > 1 else None,
        "p99_ms_champion": float(np.percentile(pairs.latency_ms_champion, 99)) if len(pairs) else None,
        "p99_ms_challenger": float(np.percentile(pairs.latency_ms_challenger, 99)) if len(pairs) else None,
    }


def canary(world: Any, ctx: ActionContext) -> dict[str, Any]:
    """Canary steps with guardrails: advance, hold, promote, or roll back; each decision is an event."""
    import time

    from loopstack.rollout import CanaryAnalysis

    analysis = CanaryAnalysis(canary_policy(world))
    history = list(ctx.state.get("evaluations", []))
    for record in history:  # a restarted loop replays what it decided before
        analysis.evaluate(*(_stats(record[v]) for v in ("stable", "canary")))
    started = ctx.state.get("started")
    if started is None:
        started = time.time()
        world.set_routing("canary", analysis.weight)
        ctx.checkpoint(started=started, evaluations=[])
        ctx.emit("rollout.canary.started", {"challenger": world.state["challenger"], "weight": analysis.weight,
                                             "steps": list(analysis.policy.steps)}, subject=ENDPOINT)
    while analysis.finished is None:
        if world.finished:
            raise StopLoop("the replay ended before the canary finished")
        world.advance()
        world.flush_log()
        record = canary_numbers(world, started)
        decision = analysis.evaluate(*(_stats(record[v]) for v in ("stable", "canary")))
        history.append(record)
        kind, payload = decision.to_event()
        payload["day"] = world.day
        ctx.emit(kind, payload, subject=ENDPOINT)
        if decision.action == "advance":
            world.state["routing"]["weight"] = decision.weight
            world.save()
        ctx.checkpoint(evaluations=history)
    return finish(world, ctx, analysis.finished, len(history))


def finish(world: Any, ctx: ActionContext, outcome: str, evaluations: int) -> dict[str, Any]:
    """Promote (move the champion alias, hot-swap, new drift reference) or roll back."""
    import loopstack as ls
    from loopstack import registry

    challenger = world.state["challenger"]
    version = int(challenger.split("/")[1])
    world.set_routing("stable")
    if outcome == "promote":
        previous = world.state["champion"]
        ls.set_alias(MODEL, "champion", version, project=ctx.project)
        world.swap(MODEL, challenger)
        world.state.update(champion=challenger, reference=world.state["reference_candidate"])
        world.state.setdefault("promotions", []).append({"version": challenger, "day": world.day})
        world.save()
        ctx.emit("rollout.promoted", {"from": previous, "to": challenger, "day": world.day,
                                      "evaluations": evaluations}, subject=ENDPOINT)
    else:
        world.swap(CHALLENGER_SLOT, world.state["champion"])
        world.state.setdefault("rollbacks", []).append({"version": challenger, "day": world.day})
        world.save()
        ctx.emit("rollout.rolled_back", {"version": challenger, "kept": world.state["champion"], "day": world.day,
                                         "evaluations": evaluations}, subject=ENDPOINT)
    try:
        registry.delete_alias(MODEL, "challenger", project=ctx.project)
    except ls.NotFoundError:
        pass
    return {"outcome": outcome, "challenger": challenger, "champion": world.state["champion"]}


def canary_policy(world: Any) -> Any:
    from loopstack.rollout import CanaryPolicy

    per_step = world.scenario.canary_requests_per_step
    return CanaryPolicy(steps=world.scenario.canary_steps, min_requests_per_step=per_step, planned_n=4 * per_step,
                        min_samples=min(100, per_step), primary_higher_is_better=False, latency_margin=0.25)


def canary_numbers(world: Any, since: float) -> dict[str, Any]:
    """Cumulative per-variant numbers since the canary started, from the prediction log and the feedback."""
    import pandas as pd

    log = world.read_log("predictions", since - 1.0)
    log = log[(log.time >= pd.Timestamp(since, unit="s", tz="UTC")) & log.variant.isin(["stable", "canary"])]
    labels = world.read_log("feedback", since - 1.0)[["request_id", "label_value"]].drop_duplicates("request_id")
    joined = log.merge(labels, on="request_id", how="left")
    counts = world.state["counts"]
    out = {}
    for variant in ("stable", "canary"):
        rows = joined[joined.variant == variant]
        score = np.array([p[1] for p in rows["outputs.predict_proba"]]) if len(rows) else np.zeros(0)
        known = rows.label_value.notna().to_numpy()
        brier = (score[known] - rows.label_value.to_numpy()[known]) ** 2
        latency = rows.latency_ms.to_numpy()
        sample = latency[np.linspace(0, len(latency) - 1, min(len(latency), LATENCY_SAMPLE)).astype(int)] \
            if len(latency) else latency
        errors = int(counts.get(variant, {}).get("errors", 0))
        out[variant] = {
            "requests": len(rows) + errors, "errors": errors, "latencies_ms": [round(float(x), 3) for x in sample],
            "primary": [int(brier.size), float(brier.mean()) if brier.size else 0.0,
                        float(brier.var(ddof=1)) if brier.size > 1 else 0.0],
        }
    return out


def _stats(record: dict[str, Any]) -> Any:
    from loopstack.rollout import VariantStats
    from loopstack.rollout.stats import Summary

    n, mean, var = record["primary"]
    primary = Summary(n, mean, var) if n >= 2 else None
    return VariantStats(record["requests"], record["errors"], np.asarray(record["latencies_ms"]), primary)
