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
records nothing: a quiet endpoint does not fill the event log with holds. Nor
does a hold that persists on new data: a hold whose reason is the one last
recorded (a sample ratio mismatch, labels that do not come, "not yet shown
non-inferior") updates the stored progress without a new event, until the
canary's requests have doubled since that record (so its evidence, which
`loopstack deploy status` shows, stays recent); a hold is recorded when its
reason changes (a step's request count moving on counts as a change), and
every advance, rollback and promotion is recorded. The policy's
``max_hold_evaluations`` and ``max_canary_requests`` end a hold that would
otherwise last forever with a recorded rollback.

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

import logging
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

logger = logging.getLogger("loopstack.rollout")
TIMEOUT_STATUS = 504  # the server's answer to a request past its model's timeout_s (serving.app.error_reply)


@dataclass(frozen=True)
class VariantTraffic:
    """Live traffic of one variant since the rollout started, as read from the logs."""

    variant: str
    requests: int
    errors: int
    latencies_ms: Any
    rewards: Any
    rewarded_at: Any = None  # positions of the rewarded requests among this variant's requests (None: unknown)
    current: int | None = None  # requests routed by the deployment's current version (this step's weights)

    def stats(self, with_latency: bool = True, with_primary: bool = True) -> VariantStats:
        from loopstack.rollout.stats import Summary

        primary = Summary.from_values(self.rewards) if with_primary and len(self.rewards) else None
        latencies = self.latencies_ms if with_latency else ()
        return VariantStats(self.requests, self.errors, latencies, primary, self.rewarded_at if with_primary else None,
                            self.current)

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
        """One tick: decide on the data so far, apply the decision, record it; returns the decision.

        The recorded decision's `cause` defaults to the event that started the rollout (the
        ``deployment.changed`` of the canary or bandit start), so ``loopstack events --chain`` of a
        promotion reaches it without the caller passing one.
        """
        d = self.deployments.get(self.endpoint)
        if cause is None:
            cause = self._started_by(d)
        if d.strategy == "bandit":
            return self._bandit(d, cause)
        if d.strategy != "canary" or d.challenger is None:
            ended = {"rollback": "was rolled back", "promote": "was promoted"}.get(d.state.get("last_decision", ""))
            last = f"; its last canary {ended}" if ended else ""
            raise ConflictError(f"deployment {self.endpoint!r} runs no canary or bandit (strategy {d.strategy!r}"
                                f"{last}); start one with `loopstack deploy canary {self.endpoint} MODEL` "
                                f"(deployments.canary({self.endpoint!r}, 'model/2') in Python)")
        try:
            policy = canary_policy(d)
        except ValidationError as error:  # stored before its settings were checked at start
            raise ValidationError(f"{error}; the canary of {self.endpoint!r} was started with this setting: roll it "
                                  f"back (`loopstack deploy rollback {self.endpoint}`) and start it again") from None
        saved = d.state.get("analysis")
        analysis = CanaryAnalysis.from_state(saved, policy) if saved else CanaryAnalysis(policy)
        traffic = self.traffic(d)
        latency, primary = ("latency_tail" in policy.guardrails), ("primary" in policy.guardrails)
        stable = traffic[d.champion].stats(latency, primary)
        canary = traffic[d.challenger].stats(latency, primary)
        decision = analysis.evaluate(stable, canary)
        seen = {name: [t.requests, len(t.rewards)] for name, t in traffic.items()}
        if decision.action == "hold" and d.state.get("last_decision") == "hold":
            if d.state.get("seen") == seen:
                return decision  # nothing arrived since the last hold: a look at the same data, not a new one
            recorded = max(d.state.get("recorded_at", 0), 1)  # a canary starved at 0 requests: recorded once
            if d.state.get("last_reason") == decision.reason and canary.requests < 2 * recorded:
                # The same hold on more data (a persisting sample ratio mismatch, labels that do not come): its
                # progress is kept, for the next tick and the policy's hold limits, but recorded again only once
                # the canary's requests doubled, so that its evidence (what `deploy status` shows) stays recent
                # at a cost of a few events per canary.
                state = {**d.state, "analysis": analysis.state, "seen": seen}
                self.deployments.save_state(self.endpoint, state, expected_version=d.version)
                return decision
        kind, payload = decision.to_event()
        payload["variants"] = [t.to_dict() for t in traffic.values()]
        state = {**d.state, "analysis": analysis.state, "last_decision": decision.action,
                 "last_reason": decision.reason, "recorded_at": canary.requests, "seen": seen}
        self._apply(d, decision, (kind, payload), state, cause)
        self.last_event = self.deployments.last_decision
        return decision

    def _started_by(self, d: Deployment) -> int | None:
        """The event that started `d`'s rollout: recorded in its state, or for a rollout started before it was
        recorded, the endpoint's latest ``deployment.changed`` (a canary's steps are ``rollout.canary.step``)."""
        started = d.state.get("started_by")
        if started is not None:
            return int(started)
        latest = self.project.events.list(kind="deployment.changed", subject=self.endpoint, limit=1)
        return latest[0].id if latest else None

    def _apply(self, d: Deployment, decision: Decision, recorded: tuple[str, dict[str, Any]], state: dict[str, Any],
               cause: int | None) -> None:
        """Apply `decision` and record it in one transaction: a deployment changed meanwhile refuses both."""
        common = {"reason": decision.reason, "cause": cause, "expected_version": d.version, "state": state,
                  "decision": recorded}
        evidence = list(decision.evidence)
        if decision.action == "advance":
            self.deployments.set_step(self.endpoint, decision.step, evidence=evidence, **common)
        elif decision.action == "rollback":
            self.deployments.rollback(self.endpoint, evidence=evidence, **common)
        elif decision.action == "promote":
            self.deployments.promote(self.endpoint, d.challenger, evidence=evidence, **common)
        else:
            self.deployments.save_state(self.endpoint, state, expected_version=d.version, cause=cause,
                                        decision=recorded)

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
        state = {**d.state, "bandit": bandit.state}
        # against the version read: a promotion or rollback made meanwhile must not get the bandit's split back
        self.deployments.set_weights(self.endpoint, weights, state=state, reason=decision.reason, cause=cause,
                                     expected_version=d.version, decision=(kind.replace("canary", "bandit"), payload))
        self.last_event = self.deployments.last_decision
        return decision


def canary_policy(d: Deployment) -> CanaryPolicy:
    """The `CanaryPolicy` a canary deployment runs under.

    Its guardrails, over which alpha is split, come from the deployment, not from whichever data a
    tick happens to hold: the primary metric counts from the first tick even though labels come later.
    """
    quantile = next((_quantile(g) for g in d.guardrails if g.startswith("latency_p")), 0.99)
    latency = any(g.startswith("latency") for g in d.guardrails)
    guardrails = ("error_rate", *(["latency_tail"] if latency else []), *(["primary"] if d.primary_metric else []))
    settings = {"latency_quantile": quantile, "guardrails": guardrails, **d.policy}
    return CanaryPolicy(steps=d.steps, primary_higher_is_better=d.higher_is_better, **settings)


def _quantile(name: str) -> float:
    """``latency_p99`` -> 0.99, ``latency_p95`` -> 0.95."""
    digits = name.removeprefix("latency_p")
    return float(f"0.{digits}") if digits.isdigit() else 0.99


def variant_traffic(log_dir: str | os.PathLike[str], d: Deployment,
                    logs: ControllerLogs | None = None) -> dict[str, VariantTraffic]:
    """Per live variant: requests, errors, latencies, and feedback rewards, since the rollout began.

    The latencies are those of the successes and of the timeouts (504): a timed-out request is an error and
    a slow one, and leaving it out of the tail made a canary that times out look faster than one that answers
    slowly. Other errors (a 400, a model failure) answer fast and would only flatter the tail.
    `logs` holds the segments earlier calls read (a controller's own); without it every segment is read.
    """
    import numpy as np

    logs = logs if logs is not None else ControllerLogs(log_dir)
    table = logs.requests(d.endpoint, d.state.get("started_at"))
    names = [d.champion, *(v for v in d.weights if v != d.champion)]
    requests = _Requests(table)
    ok = table["ok"].to_numpy(zero_copy_only=False).astype(bool)
    latency = table["latency_ms"].to_numpy(zero_copy_only=False)
    timed = ok | _timed_out(table)
    # routed by this version, so under the step's own split (None: a table from elsewhere without the column)
    current = (table["deployment_version"].to_numpy(zero_copy_only=False) == d.version
               if "deployment_version" in table.column_names else None)
    if d.primary_metric or d.strategy == "bandit":
        reward, rewarded = _rewards(logs, d, requests)
    else:
        reward, rewarded = np.zeros(table.num_rows), np.zeros(table.num_rows, dtype=bool)
    out = {}
    for name in names:
        mine = requests.is_variant(name)
        out[name] = VariantTraffic(name, int(mine.sum()), int((mine & ~ok).sum()), latency[mine & timed],
                                   reward[mine & rewarded], np.flatnonzero(rewarded[mine]),
                                   None if current is None else int((mine & current).sum()))
    return out


def _timed_out(table: pa.Table) -> Any:
    """Which requests were answered 504 (their deadline passed); none where the table has no status column."""
    import numpy as np

    if "status" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return table["status"].to_numpy(zero_copy_only=False) == TIMEOUT_STATUS


class _Requests:
    """The requests of a rollout as integer codes, so joining them with labels and outputs is array work.

    ``request`` is each row's code into the distinct request ids, ``variant`` its code into the
    distinct variants; ``answered_by`` is, per distinct request id, the variant of its latest row
    (the one a label for that id is credited to, as a client retrying with the same id would see).
    """

    def __init__(self, table: pa.Table) -> None:
        ids, variants = _encoded(table["request_id"]), _encoded(table["variant"])
        self.ids, self.variants = ids.dictionary, variants.dictionary
        self.request, self.variant = ids.indices.to_numpy(), variants.indices.to_numpy()
        self.answered_by = self.variant[_last_positions(self.request, len(self.ids))]

    def is_variant(self, name: str) -> Any:
        return self.variant == self.variants.index(name).as_py()  # -1 when absent: matches no row

    def codes(self, ids: Any) -> Any:
        """Codes of `ids` among these requests; -1 for an id no request has."""
        return _codes(ids, self.ids)

    def variant_codes(self, names: Any) -> Any:
        return _codes(names, self.variants)


def _codes(values: Any, among: pa.Array) -> Any:
    """The position of each of `values` in `among` (large strings), -1 where it is not there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(values.cast(pa.large_string()), value_set=among.cast(pa.large_string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False)


def _encoded(column: pa.ChunkedArray) -> pa.DictionaryArray:
    """One dictionary over all chunks; as large strings, since a long rollout's ids pass 2 GiB of text."""
    import pyarrow as pa

    return column.cast(pa.large_string()).combine_chunks().dictionary_encode()


def _last_positions(codes: Any, size: int, where: Any = None) -> Any:
    """Per code in ``range(size)``: the position of its last occurrence in `codes` (among `where`), else -1."""
    import numpy as np

    positions = np.arange(len(codes))
    if where is not None:
        codes, positions = codes[where], positions[where]
    last = np.full(size, -1, dtype=np.int64)
    np.maximum.at(last, codes, positions)
    return last


def _rewards(logs: ControllerLogs, d: Deployment, requests: _Requests) -> tuple[Any, Any]:
    """Each request row's primary-metric value (in traffic order) and whether it has one.

    A request id's label (its latest numeric feedback) counts for the variant of its latest
    answer. The value is the label itself, or, for a scoring rule (`loopstack.rollout.rewards`),
    the rule applied to the output that variant logged for the request (its latest row 0, never a
    shadow's copy) and the label.
    """
    import numpy as np

    from loopstack.rollout.rewards import SCORING_RULES

    n, size = len(requests.request), len(requests.ids)
    none = np.zeros(n), np.zeros(n, dtype=bool)
    feedback = logs.labels()
    if feedback.num_rows == 0 or n == 0:
        return none
    label_codes = requests.codes(feedback["request_id"])
    latest = _last_positions(label_codes, size, label_codes >= 0)  # the latest label of each request wins
    values = feedback["label_value"].to_numpy(zero_copy_only=False)
    label = np.where(latest >= 0, values[np.maximum(latest, 0)], np.nan)
    has = latest >= 0
    if d.primary_metric in SCORING_RULES and d.strategy != "bandit":
        label, has = _scored(logs, d.endpoint, d.primary_metric, requests, label, has)
    credited = has[requests.request] & (requests.variant == requests.answered_by[requests.request])
    return label[requests.request], credited


def _scored(logs: ControllerLogs, endpoint: str, rule: str, requests: _Requests, label: Any,
            has: Any) -> tuple[Any, Any]:
    """Per distinct request: `rule` of the output its answering variant logged and its label, and whether scored."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from loopstack.rollout.rewards import scorable, score

    size = len(requests.ids)
    log = logs.outputs(endpoint) if has.any() else None  # row 0 of each request
    if log is None:  # no label, or nothing logged yet
        return np.full(size, np.nan), np.zeros(size, dtype=bool)
    codes = requests.codes(log["request_id"])
    variant = requests.variant_codes(log["variant"])
    matched = (codes >= 0) & has[np.maximum(codes, 0)] & (variant == requests.answered_by[np.maximum(codes, 0)])
    latest = _last_positions(codes, size, matched)  # a request logged twice by its variant: the last output
    scored = latest >= 0
    if not scored.any():
        return np.full(size, np.nan), scored
    output = log["outputs"].take(pa.array(latest[scored])).combine_chunks().field(0)  # only the scored rows
    if pa.types.is_list(output.type) or pa.types.is_large_list(output.type):
        widths = pc.unique(pc.list_value_length(output)).to_pylist()
        if len(widths) != 1:
            raise ValidationError(f"the variants of {endpoint!r} logged outputs of different widths {widths}; "
                                  f"{rule} needs one output form, or judge the canary on a feedback metric")
        outputs = np.asarray(output.flatten().to_numpy(zero_copy_only=False), dtype=float).reshape(len(output), -1)
    else:
        outputs = np.asarray(output.to_numpy(zero_copy_only=False), dtype=float)
    usable = scorable(outputs, label[scored])
    if not usable.all():  # one bad label must not stall the rollout: it is left out, and said so
        logger.warning("%s: %d labels cannot be scored by %s (not finite, or not a class index of the output); "
                       "they are left out", endpoint, int((~usable).sum()), rule)
        outputs = outputs[usable]
        scored[np.flatnonzero(scored)[~usable]] = False
    values = np.full(size, np.nan)
    values[scored] = score(rule, outputs, label[scored])
    return values, scored


__all__ = ["RolloutController", "VariantTraffic", "canary_policy", "variant_traffic"]
