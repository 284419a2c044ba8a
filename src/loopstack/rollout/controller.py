"""The rollout controller: read the logs, decide, apply, record.

``RolloutController(project, endpoint).evaluate()`` is one tick of a
progressive rollout. For a canary it reads the endpoint's traffic log (every
request with its variant, outcome and latency) and the feedback since the
canary started, feeds the cumulative per-variant numbers to `CanaryAnalysis`
(error rate, tail latency and the primary metric against the stable variant,
each by the always-valid sequential test) and applies the decision: advance
to the next step, roll back, or promote after the last step. Each decision
is recorded as an event (``rollout.canary.hold|advance|rollback|promote``)
with its evidence, and the traffic change it causes points back at it. A
tick that finds no new request or feedback since the last recorded hold
records nothing: a quiet endpoint does not fill the event log with holds.

Each log segment is written once and never changed, so a controller keeps
what it read (`loopstack.rollout.segments`) and a tick reads only the
segments written since the last one. That is all it keeps, and nothing worth
losing: the analysis' progress (step, running confidence sequences) is
stored with the deployment in the same transaction as the change it causes,
so a controller started after a crash, in another process, reads the logs
once and carries on where the last one stopped. A decision taken on a
deployment that changed meanwhile (someone rolled it back by hand) fails
with `ConflictError` instead of overwriting the change.

For a bandit, a tick turns the feedback into per-arm rewards and stores the
new posterior; the servers pick it up with the next deployment version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConflictError, ValidationError
from loopstack.rollout.deployment import Deployment
from loopstack.rollout.guardrails import CanaryAnalysis, CanaryPolicy, Decision, VariantStats
from loopstack.rollout.segments import ControllerLogs

if TYPE_CHECKING:
    import pyarrow as pa

    from loopstack.core.project import Project


@dataclass(frozen=True)
class VariantTraffic:
    """Live traffic of one variant since the rollout started, as read from the logs."""

    variant: str
    requests: int
    errors: int
    latencies_ms: Any
    rewards: Any

    def stats(self, with_latency: bool = True, with_primary: bool = True) -> VariantStats:
        from loopstack.rollout.stats import Summary

        primary = Summary.from_values(self.rewards) if with_primary and len(self.rewards) else None
        return VariantStats(self.requests, self.errors, self.latencies_ms if with_latency else (), primary)

    def to_dict(self) -> dict[str, Any]:
        import numpy as np

        lat = np.asarray(self.latencies_ms, dtype=float)
        rewards = np.asarray(self.rewards, dtype=float)
        return {
            "variant": self.variant, "requests": self.requests, "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "p50_ms": float(np.quantile(lat, 0.5)) if lat.size else None,
            "p99_ms": float(np.quantile(lat, 0.99)) if lat.size else None,
            "feedback": int(rewards.size), "primary_mean": float(rewards.mean()) if rewards.size else None,
        }


class RolloutController:
    """One endpoint's rollout automation; call `evaluate` periodically (or from the loop engine).

    Parameters
    ----------
    project : Project
        Where the deployment and events live.
    endpoint : str
        The deployment to drive.
    log_dir : str, optional
        The server's log folder (``ServerSettings.log_dir``); default ``<project>/.loopstack/logs``,
        where ``loopstack serve`` and ``loopstack deploy serve`` write.

    Examples
    --------
    >>> # controller = RolloutController(project, "fraud-api")
    >>> # decision = controller.evaluate()      # hold / advance / rollback / promote, recorded as an event
    >>> RolloutController.__name__
    'RolloutController'
    """

    def __init__(self, project: Project, endpoint: str, log_dir: str | os.PathLike[str] | None = None) -> None:
        self.project = project
        self.endpoint = endpoint
        self.log_dir = os.fspath(log_dir) if log_dir is not None else str(project.root / ".loopstack" / "logs")
        self.last_event: int | None = None
        self.logs = ControllerLogs(self.log_dir)  # segments read by earlier ticks; a new controller reads all once

    @property
    def deployments(self) -> Any:
        return self.project.deployments

    def traffic(self, deployment: Deployment | None = None) -> dict[str, VariantTraffic]:
        """Per-variant live requests, errors, latencies and feedback rewards since the rollout started."""
        d = deployment or self.deployments.get(self.endpoint)
        return variant_traffic(self.log_dir, d, self.logs)

    def evaluate(self, cause: int | None = None) -> Decision:
        """One tick: decide on the data so far, apply the decision, record it; returns the decision."""
        d = self.deployments.get(self.endpoint)
        if d.strategy == "bandit":
            return self._bandit(d, cause)
        if d.strategy != "canary" or d.challenger is None:
            raise ConflictError(f"deployment {self.endpoint!r} runs no canary or bandit (strategy {d.strategy!r}); "
                                f"start one with deployments.canary({self.endpoint!r}, 'model/2')")
        policy = canary_policy(d)
        saved = d.state.get("analysis")
        analysis = CanaryAnalysis.from_state(saved, policy) if saved else CanaryAnalysis(policy)
        traffic = self.traffic(d)
        latency = any(g.startswith("latency") for g in d.guardrails)
        primary = d.primary_metric is not None
        stable = traffic[d.champion].stats(latency, primary)
        canary = traffic[d.challenger].stats(latency, primary)
        decision = analysis.evaluate(stable, canary)
        seen = {name: [t.requests, len(t.rewards)] for name, t in traffic.items()}
        if decision.action == "hold" and d.state.get("last_decision") == "hold" and d.state.get("seen") == seen:
            return decision  # nothing arrived since the last recorded hold: a look at the same data, not a new one
        kind, payload = decision.to_event()
        payload["variants"] = [t.to_dict() for t in traffic.values()]
        event = self.project.events.emit(kind, self.endpoint, payload, cause=cause)
        self.last_event = event
        state = {**d.state, "analysis": analysis.state, "last_decision": decision.action, "last_event": event,
                 "seen": seen}
        self._apply(d, decision, event, state)
        return decision

    def _apply(self, d: Deployment, decision: Decision, event: int, state: dict[str, Any]) -> None:
        common = {"reason": decision.reason, "cause": event, "expected_version": d.version, "state": state}
        evidence = list(decision.evidence)
        if decision.action == "advance":
            self.deployments.set_step(self.endpoint, decision.step, evidence=evidence, **common)
        elif decision.action == "rollback":
            self.deployments.rollback(self.endpoint, evidence=evidence, **common)
        elif decision.action == "promote":
            self.deployments.promote(self.endpoint, d.challenger, evidence=evidence, **common)
        else:
            self.deployments.save_state(self.endpoint, state, expected_version=d.version)

    def _bandit(self, d: Deployment, cause: int | None) -> Decision:
        from loopstack.rollout.bandit import ThompsonBandit

        traffic = self.traffic(d)
        bandit = ThompsonBandit(list(d.weights), min_share=d.policy.get("min_share", 0.05),
                                model=d.policy.get("model", "bernoulli"))
        for name, t in traffic.items():
            rewards = [float(r) for r in t.rewards]
            if bandit.model == "bernoulli":
                rewards = [min(max(r, 0.0), 1.0) for r in rewards]
            bandit.pulls[name] = len(rewards)
            bandit.reward_sum[name] = float(sum(rewards))
            bandit.reward_sq[name] = float(sum(r * r for r in rewards))
        weights = {arm: float(w) for arm, w in bandit.allocation().items()}
        evidence = tuple({**t.to_dict(), "allocation": weights[n]} for n, t in traffic.items())
        best = max(weights, key=lambda n: weights[n])
        decision = Decision("hold", 0, weights[best], f"bandit re-allocated; {best!r} leads", evidence,
                            sum(t.requests for t in traffic.values()))
        kind, payload = decision.to_event()
        event = self.project.events.emit(kind.replace("canary", "bandit"), self.endpoint, payload, cause=cause)
        self.last_event = event
        state = {**d.state, "bandit": bandit.state}
        self.deployments.set_weights(self.endpoint, weights, state=state, reason=decision.reason, cause=event)
        return decision


def canary_policy(d: Deployment) -> CanaryPolicy:
    """The `CanaryPolicy` a canary deployment runs under."""
    quantile = next((_quantile(g) for g in d.guardrails if g.startswith("latency_p")), 0.99)
    settings = {"latency_quantile": quantile, **d.policy}
    return CanaryPolicy(steps=d.steps, primary_higher_is_better=d.higher_is_better, **settings)


def _quantile(name: str) -> float:
    """``latency_p99`` -> 0.99, ``latency_p95`` -> 0.95."""
    digits = name.removeprefix("latency_p")
    return float(f"0.{digits}") if digits.isdigit() else 0.99


def variant_traffic(log_dir: str | os.PathLike[str], d: Deployment,
                    logs: ControllerLogs | None = None) -> dict[str, VariantTraffic]:
    """Per live variant: requests, errors, latencies of successes, and feedback rewards, since the rollout began.

    `logs` holds the segments earlier calls read (a controller's own); without it every segment is read.
    """
    import numpy as np

    logs = logs if logs is not None else ControllerLogs(log_dir)
    table = logs.requests(d.endpoint, d.state.get("started_at"))
    rewards = _rewards(logs, d, table) if d.primary_metric or d.strategy == "bandit" else {}
    names = [d.champion, *(v for v in d.weights if v != d.champion)]
    variants = np.asarray(table["variant"].to_numpy(zero_copy_only=False), dtype=object)
    ok = table["ok"].to_numpy(zero_copy_only=False).astype(bool)
    latency = table["latency_ms"].to_numpy(zero_copy_only=False)
    request_ids = table["request_id"].to_numpy(zero_copy_only=False)
    out = {}
    for name in names:
        mine = variants == name
        ids = request_ids[mine]
        values = [rewards[(r, name)] for r in ids if (r, name) in rewards]
        out[name] = VariantTraffic(name, int(mine.sum()), int((mine & ~ok).sum()), latency[mine & ok],
                                   np.asarray(values, dtype=float))
    return out


def _rewards(logs: ControllerLogs, d: Deployment, traffic: pa.Table) -> dict[tuple[str, str], float]:
    """Per (request id, variant) of `traffic`: its primary-metric value, for requests with numeric feedback.

    The feedback's value itself, or, for a scoring rule (`loopstack.rollout.rewards`), the rule
    applied to the output the variant logged for the request and the label.
    """
    from loopstack.rollout.rewards import SCORING_RULES

    feedback = logs.labels()
    if feedback.num_rows == 0:
        return {}
    served = dict(zip(traffic["request_id"].to_pylist(), traffic["variant"].to_pylist(), strict=True))
    labels = {r: float(v) for r, v in zip(feedback["request_id"].to_pylist(), feedback["label_value"].to_pylist(),
                                          strict=True) if v is not None and r in served}  # the latest one wins
    if d.primary_metric not in SCORING_RULES or d.strategy == "bandit":
        return {(r, served[r]): v for r, v in labels.items()}
    return _scored(logs, d.endpoint, d.primary_metric, served, labels)


def _scored(logs: ControllerLogs, endpoint: str, rule: str, served: dict[str, str],
            labels: dict[str, float]) -> dict[tuple[str, str], float]:
    """`rule` of each labelled request's logged output (row 0 of the request, by the variant that answered it)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from loopstack.rollout.rewards import score

    log = logs.outputs(endpoint) if labels else None  # row 0 of each request
    if log is None:  # no label, or nothing logged yet
        return {}
    log = log.filter(pc.is_in(log["request_id"], pa.array(list(labels))))
    ids, variants = log["request_id"].to_pylist(), log["variant"].to_pylist()
    keep = [i for i, (r, v) in enumerate(zip(ids, variants, strict=True)) if served[r] == v]  # not the shadow's copy
    if not keep:
        return {}
    output = log["outputs"].combine_chunks().field(0).take(pa.array(keep))
    if pa.types.is_list(output.type) or pa.types.is_large_list(output.type):
        widths = pc.unique(pc.list_value_length(output)).to_pylist()
        if len(widths) != 1:
            raise ValidationError(f"the variants of {endpoint!r} logged outputs of different widths {widths}; "
                                  f"{rule} needs one output form, or judge the canary on a feedback metric")
        outputs = np.asarray(output.flatten().to_numpy(zero_copy_only=False), dtype=float).reshape(len(output), -1)
    else:
        outputs = np.asarray(output.to_numpy(zero_copy_only=False), dtype=float)
    kept = [ids[i] for i in keep]
    values = score(rule, outputs, np.array([labels[r] for r in kept]))
    return {(r, served[r]): float(v) for r, v in zip(kept, values, strict=True)}


__all__ = ["RolloutController", "VariantTraffic", "canary_policy", "variant_traffic"]
