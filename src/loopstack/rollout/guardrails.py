"""Canary analysis: when to advance, hold, roll back or promote.

A pure state machine with no clock and no I/O. An engine feeds it the
cumulative per-variant numbers since the canary started (request and error
counts, latency samples, the primary metric) after each interval; it answers
with a `Decision` holding the action and the evidence behind it as plain
records, which the engine applies to the traffic split and emits as an event
(`Decision.to_event`).

Each guardrail compares the canary with the stable variant by the always-valid
sequential test of `loopstack.rollout.stats.sequential`, so it may be checked
after every interval without inflating false rollbacks; the error budget
``alpha`` is split evenly over the guardrails the policy names (Bonferroni,
which stays valid for always-valid tests), fixed when the analysis starts so
that a guardrail whose data arrive late (labels a day after the requests) does
not enlarge the budget. A guardrail fails when the confidence sequence for
canary minus stable lies entirely on the bad side of the allowed margin. Until
both arms hold ``min_samples`` of its samples (requests, latencies or labels)
a guardrail is "insufficient": it can neither fail nor count as a look.

- error rate: errors per request. Rates use the Agresti-Caffo adjustment
  (one extra success and failure per arm) so that a handful of early errors
  against a clean stable variant is not mistaken for certainty.
- tail latency: the share of canary requests slower than the stable
  variant's p99 (or another quantile), against the stable variant's own share
  above it. A p99 that moved up shows as an excess share above the old p99,
  a proportion the sequential test handles directly.
- primary metric: the business metric, compared as a mean; the sequential
  test floors each arm's variance at the pooled one, so a few identical labels
  per arm are not mistaken for certainty either.

A step advances once the canary served ``min_requests_per_step`` requests in
it without a failed guardrail and the error-rate and tail-latency tests have
each run (both arms past ``min_samples``); after the last step the canary is
promoted once the primary metric's test has run too, on ``min_samples`` labels
per arm. A guardrail still "insufficient" holds the step, never passes it.
A sample ratio mismatch in the current step (the canary's share of requests
far from its weight) holds the rollout, since the comparison is then
untrustworthy.

By default a guardrail passes when the canary is *not proven worse*: the
interval does not lie wholly past the margin. That is a test for harm, not
evidence of safety: on a few thousand requests the interval is wide, and a
challenger 10 % worse on the primary metric passes as often as not. With
``CanaryPolicy(require_non_inferiority=True)`` the promotion needs more: every
guardrail's interval must have its bad end within its margin (``low >=
-margin`` where higher is better, ``high <= margin`` where lower is), so the
evidence shows the canary worse by no more than the margin; until then the
last step holds for more data. The steps before it still ramp up on "not
worse": a small first step would need as much data as the whole canary to
show non-inferiority on its own requests, while the promotion has all of
them. Each margin must be positive: proving "no worse at all" needs the
interval to exclude every loss, which an equal challenger never reaches.

A hold *stalls* when what it waits for did not grow since the evaluation
before: the canary's requests (a split that sends it none, at any weight,
once the stable arm's new requests make `STARVED` of them expected), its
labels, a guardrail's samples; a sample ratio mismatch stalls whatever
grows. A hold that is gathering what it waits for is progress, however long
that takes, and so is a hold for non-inferiority while requests or labels come
(``max_canary_requests`` bounds those). ``max_hold_evaluations`` rolls the canary back after that many
consecutive stalled evaluations of one kind (an evaluation on the same counts
as the one before does not count) and ``max_canary_requests`` once it served
that many requests without being promoted, with a reason that says what it
was waiting for: "not shown non-inferior within 50000 canary requests
(max_canary_requests): ...", "sample ratio mismatch persisted for 12
evaluations (max_hold_evaluations): ...", "labels never arrived ...". Both are
unbounded by default, as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from loopstack.core.errors import ConflictError, ValidationError
from loopstack.rollout.stats.sequential import SequentialTest, sequential_test, tuned_rho
from loopstack.rollout.stats.srm import SRM_THRESHOLD, srm_check
from loopstack.rollout.stats.summary import Summary, finite_or_none

Action = Literal["hold", "advance", "rollback", "promote"]
STARVED = 5.0  # canary requests expected since the last evaluation, at its weight, that none arrived for a stall
GUARDRAILS = ("error_rate", "latency_tail", "primary")


@dataclass(frozen=True)
class VariantStats:
    """Cumulative numbers for one variant since the canary started.

    Examples
    --------
    >>> VariantStats(requests=1000, errors=12, latencies_ms=[10.0, 12.5]).error_rate
    0.012
    """

    requests: int
    errors: int = 0
    latencies_ms: Sequence[float] | np.ndarray = ()
    primary: Summary | None = None
    labelled: Sequence[int] | np.ndarray | None = None
    """Which requests have a primary-metric sample, as positions among the variant's requests (0 is its first);
    None when unknown. With it, a step counts the labels of its own requests, not the late labels of the step
    before that arrived during it."""
    current_requests: int | None = None
    """Of `requests`, those routed under the step's own split (the deployment version that set it); None when
    unknown. Servers pick a step change up within a poll, so requests routed at the previous split are logged
    during the new step; with this, the sample-ratio check leaves them out instead of holding the step."""

    def __post_init__(self) -> None:
        if self.requests < 0 or not 0 <= self.errors <= self.requests:
            raise ValidationError(
                f"VariantStats needs 0 <= errors <= requests, got requests={self.requests}, errors={self.errors}."
            )

    @property
    def error_rate(self) -> float:
        """Errors per request (0 before the first request)."""
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class CanaryPolicy:
    """How a canary steps and what it guards.

    Parameters
    ----------
    steps : sequence of float
        Canary traffic weights in order; the canary is promoted after the last.
    min_requests_per_step : int
        Canary requests a step must serve before it may advance.
    min_labels_per_step : int
        Labels (samples of the primary metric) of the canary requests a step served that must have
        arrived before it may advance or promote. Labels often come a day late; without this a short
        step passes on the evidence the steps before it gathered, and the last one promotes before its
        own labels can show a regression. Stats without `VariantStats.labelled` count the labels that
        arrived during the step instead. 0 (the default) counts requests only.
    alpha : float
        Chance of a false rollback over the whole canary, split over the guardrails.
    planned_n : int
        Balanced-equivalent sample size where the sequential test is tightest.
    latency_quantile : float
        Which tail latency to guard (0.99 = p99).
    error_margin, latency_margin : float
        Tolerated absolute increase in error rate / tail share before it counts as a degradation.
    primary_margin : float
        Tolerated decrease (or increase, when lower is better) in the primary metric's mean.
    primary_higher_is_better : bool
        Direction of the primary metric.
    min_samples : int
        Samples in each arm before a guardrail may fail or count as a look: requests for the error
        rate, latency samples for the tail, labels for the primary metric (the normal approximation
        needs some data). Until then the guardrail is "insufficient" and holds the canary: the error
        rate and tail latency hold every step, the primary metric the promotion. A first step with
        ``min_requests_per_step`` below it waits for ``min_samples`` canary requests.
    guardrails : sequence of str
        The guardrails this canary checks, from ``"error_rate"`` (required), ``"latency_tail"`` and
        ``"primary"``; ``alpha`` is split evenly over them from the start, whether or not their data
        have arrived yet. Data for a guardrail not named here is refused.
    require_non_inferiority : bool
        False (the default): a guardrail passes while the canary is not proven worse than its margin.
        True: the promotion also needs every guardrail's confidence interval to have its bad end within
        the margin (``diff_ci[0] >= -margin`` where higher is better, ``diff_ci[1] <= margin`` where
        lower is), so the data show the canary worse by no more than the margin; until then the last
        step holds. The steps before it advance as by default. Every margin of a guardrail the policy
        names must then be positive: with a margin of 0 only a canary proven better or equal could
        pass, and an equal one never is, so such a policy is refused rather than left to hold until a
        limit rolls it back.
    max_canary_requests : int, optional
        Canary requests (since the canary started) within which it must be promoted; an evaluation
        that reaches it without promoting rolls the canary back, saying what it was still waiting for.
        It bounds how many requests an unproven challenger serves. At least
        ``len(steps) * min_requests_per_step`` (and ``min_samples``), or no canary could be promoted.
        None (the default): unbounded.
    max_hold_evaluations : int, optional
        Consecutive stalled evaluations after which the canary is rolled back. A hold stalls when what
        it waits for (the canary's requests, its labels, a guardrail's samples) did not grow since the
        evaluation before, and on every sample ratio mismatch; a hold of another kind, progress, or an
        advance start the count afresh, and a hold for non-inferiority stalls only on a starved canary
        (bound it with `max_canary_requests`). It counts evaluations, not time, and only those whose requests or
        labels moved since the one before: a controller polling a quiet endpoint does not use it up.
        Labels that come a day late stall every evaluation until then: allow for that. None (the
        default): unbounded.

    Examples
    --------
    >>> CanaryPolicy(steps=(0.05, 0.5)).steps
    (0.05, 0.5)
    >>> CanaryPolicy(require_non_inferiority=True, guardrails=("error_rate",), error_margin=0.002).error_margin
    0.002
    """

    steps: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5)
    min_requests_per_step: int = 2000
    min_labels_per_step: int = 0
    alpha: float = 0.05
    planned_n: int = 20_000
    latency_quantile: float = 0.99
    error_margin: float = 0.0
    latency_margin: float = 0.0
    primary_margin: float = 0.0
    primary_higher_is_better: bool = True
    min_samples: int = 200
    srm_threshold: float = SRM_THRESHOLD
    guardrails: tuple[str, ...] = GUARDRAILS
    require_non_inferiority: bool = False
    max_canary_requests: int | None = None
    max_hold_evaluations: int | None = None

    def __post_init__(self) -> None:
        steps = tuple(float(s) for s in self.steps)
        if not steps or any(not 0 < s <= 1 for s in steps) or list(steps) != sorted(steps):
            raise ValidationError(f"canary steps must be increasing weights in (0, 1], got {self.steps}.")
        if not 0.5 <= self.latency_quantile < 1:
            raise ValidationError(f"latency_quantile must be in [0.5, 1), got {self.latency_quantile}.")
        if not self.min_requests_per_step >= 1:  # 0 or less would advance every step on no traffic at all
            raise ValidationError(f"min_requests_per_step must be at least 1, got {self.min_requests_per_step}.")
        if not self.min_labels_per_step >= 0:
            raise ValidationError(f"min_labels_per_step must be 0 (requests only) or more, got "
                                  f"{self.min_labels_per_step}.")
        tuned_rho(self.alpha, self.planned_n)  # checks alpha and planned_n now, not at the first evaluation
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "guardrails", _check_guardrails(self.guardrails))
        object.__setattr__(self, "require_non_inferiority", _check_flag(self.require_non_inferiority))
        if self.require_non_inferiority:
            _check_margins(self)
        # A canary needs min_requests_per_step in every step (and min_samples in all) before its promotion.
        fewest = max(len(steps) * self.min_requests_per_step, _min_samples(self))
        object.__setattr__(self, "max_canary_requests", _check_limit(
            "max_canary_requests", self.max_canary_requests, fewest,
            f"a canary serves at least {fewest} requests before its promotion ({len(steps)} steps of "
            f"min_requests_per_step={self.min_requests_per_step}, and min_samples={self.min_samples})"))
        object.__setattr__(self, "max_hold_evaluations",
                           _check_limit("max_hold_evaluations", self.max_hold_evaluations, 1, "it counts evaluations"))

    def margin(self, metric: str) -> float:
        """The margin of guardrail `metric` (``"error_rate"``, ``"latency_tail"`` or ``"primary"``).

        Examples
        --------
        >>> CanaryPolicy(primary_margin=0.005).margin("primary")
        0.005
        """
        return float(getattr(self, _MARGIN_NAMES[metric]))


def _check_flag(value: Any) -> bool:
    """A setting that must be True or False (a stored policy's "false" string would read as true)."""
    if not isinstance(value, bool | np.bool_):
        raise ValidationError(f"require_non_inferiority must be True or False, got {value!r}.")
    return bool(value)


_MARGIN_NAMES = {"error_rate": "error_margin", "latency_tail": "latency_margin", "primary": "primary_margin"}
_MARGIN_EXAMPLES = {"error_rate": "0.002 (0.2 points of error rate)",
                    "latency_tail": "0.005 (0.5 points more requests past the stable p99)",
                    "primary": "0.005 (0.5 points of a 10 % conversion)"}


def _check_margins(policy: CanaryPolicy) -> None:
    """Non-inferiority needs a positive, finite margin for every guardrail the policy names."""
    bad = [metric for metric in policy.guardrails
           if not (math.isfinite(policy.margin(metric)) and policy.margin(metric) > 0)]
    if bad:
        given = ", ".join(f"{_MARGIN_NAMES[m]}={policy.margin(m)}" for m in bad)
        fix = ", ".join(f"{_MARGIN_NAMES[m]}={_MARGIN_EXAMPLES[m]}" for m in bad)
        raise ValidationError(
            f"require_non_inferiority=True needs a positive margin for every guardrail it checks, got {given}: "
            "with a margin of 0 only a canary proven better could pass, and an equal one never is. Give the "
            f"largest loss you accept, e.g. {fix}, or guard fewer metrics (CanaryPolicy(guardrails=...)).")


def _check_limit(name: str, value: Any, least: int, why: str) -> int | None:
    """None, or a whole number of at least `least`."""
    if value is None:
        return None
    whole = isinstance(value, int | np.integer) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or int(value) < least:
        raise ValidationError(f"{name} must be None (unbounded) or a whole number of at least {least}, got "
                              f"{value!r}: {why}.")
    return int(value)


def _check_guardrails(names: Sequence[str]) -> tuple[str, ...]:
    """The guardrail names in canonical order, refusing unknown ones and a missing error rate."""
    chosen = tuple(dict.fromkeys(str(name) for name in names))
    unknown = [name for name in chosen if name not in GUARDRAILS]
    if unknown or "error_rate" not in chosen:
        raise ValidationError(f"canary guardrails {list(names)} must include 'error_rate' and be drawn from "
                              f"{list(GUARDRAILS)}.")
    return tuple(name for name in GUARDRAILS if name in chosen)


@dataclass(frozen=True)
class Decision:
    """One canary decision and the evidence for it, as plain records.

    ``weight`` is the canary's traffic weight to apply after the decision
    (0 after a rollback, 1 after a promotion).
    """

    action: Action
    step: int
    weight: float
    reason: str
    evidence: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    canary_requests: int = 0

    def to_event(self) -> tuple[str, dict[str, Any]]:
        """Event kind and JSON-able payload, for ``project.events.emit(kind, subject, payload)``.

        Examples
        --------
        >>> Decision("hold", 0, 0.01, "collecting data").to_event()[0]
        'rollout.canary.hold'
        """
        payload = {
            "action": self.action,
            "step": self.step,
            "weight": self.weight,
            "reason": self.reason,
            "canary_requests": self.canary_requests,
            "evidence": [dict(e) for e in self.evidence],
        }
        return f"rollout.canary.{self.action}", payload


class CanaryAnalysis:
    """The canary state machine: call `evaluate` with cumulative stats after each interval.

    Examples
    --------
    >>> canary = CanaryAnalysis(CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=500, guardrails=("error_rate",)))
    >>> canary.weight
    0.1
    >>> d = canary.evaluate(VariantStats(9000, 90), VariantStats(1000, 10))
    >>> d.action, d.weight
    ('advance', 0.5)
    >>> d = canary.evaluate(VariantStats(14000, 140), VariantStats(6000, 300))
    >>> d.action, d.weight
    ('rollback', 0.0)
    """

    def __init__(self, policy: CanaryPolicy | None = None) -> None:
        self.policy = policy or CanaryPolicy()
        self.step = 0
        self.finished: Action | None = None
        self._step_start = (0, 0, 0)  # cumulative (stable, canary) requests and canary labels when the step began
        self._stalled = 0  # consecutive stalled holds (see the module docstring), for max_hold_evaluations
        self._waiting: list[Any] | None = None  # the last hold's [kind, amount awaited], to see whether it grew
        self._counts: list[int] | None = None  # requests and labels per arm at the last evaluation
        # One test per guardrail from the start: a share of alpha decided at the first look with data
        # gave 1/2 to the error rate before the first label and 1/3 to the primary after, 0.067 in all.
        alpha = self.policy.alpha / len(self.policy.guardrails)
        self._tests = {name: SequentialTest(alpha=alpha, planned_n=self.policy.planned_n)
                       for name in self.policy.guardrails}

    @property
    def weight(self) -> float:
        """The canary's current traffic weight."""
        if self.finished == "rollback":
            return 0.0
        if self.finished == "promote":
            return 1.0
        return self.policy.steps[self.step]

    @property
    def stalled_evaluations(self) -> int:
        """Consecutive stalled holds so far: the count `CanaryPolicy.max_hold_evaluations` bounds."""
        return self._stalled

    @property
    def state(self) -> dict[str, Any]:
        """JSON-able progress (step, step start, each running test), so a restarted engine can carry on.

        Examples
        --------
        >>> policy = CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=500, guardrails=("error_rate",))
        >>> canary = CanaryAnalysis(policy)
        >>> _ = canary.evaluate(VariantStats(9000, 90), VariantStats(1000, 10))
        >>> CanaryAnalysis.from_state(canary.state, canary.policy).weight
        0.5
        """
        return {"step": self.step, "finished": self.finished, "step_start": list(self._step_start),
                "stalled": self._stalled, "waiting": self._waiting, "counts": self._counts,
                "tests": {metric: _test_state(test) for metric, test in self._tests.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], policy: CanaryPolicy | None = None) -> CanaryAnalysis:
        """Rebuild an analysis from `state` under the same `policy`."""
        analysis = cls(policy)
        analysis.step = int(state.get("step", 0))
        analysis.finished = state.get("finished")
        start = [*state.get("step_start", ()), 0, 0, 0]  # a state saved before labels were counted has two
        analysis._step_start = (int(start[0]), int(start[1]), int(start[2]))
        analysis._stalled = int(state.get("stalled", 0))  # a state saved before holds were bounded has none
        waiting = state.get("waiting")
        analysis._waiting = None if waiting is None else [str(waiting[0]), waiting[1]]
        counts = state.get("counts")
        analysis._counts = None if counts is None else [int(c) for c in counts]
        analysis._tests.update({metric: _restore_test(s) for metric, s in state.get("tests", {}).items()})
        return analysis

    def evaluate(self, stable: VariantStats, canary: VariantStats) -> Decision:
        """Decide on the cumulative numbers since the canary started."""
        if self.finished is not None:
            raise ConflictError(f"this canary already ended with {self.finished!r}; start a new CanaryAnalysis.")
        evidence = [self._srm(stable, canary), *self._guardrails(stable, canary)]
        failed = [e["metric"] for e in evidence if e.get("verdict") == "worse"]
        if failed:
            return self._finish("rollback", f"guardrail failed: {', '.join(failed)}", evidence, canary)
        action, reason, hold = self._next(evidence, stable, canary)
        counts = [int(stable.requests), int(canary.requests), int(_labels(stable)), int(_labels(canary))]
        if action == "hold" and counts != self._counts:  # a look at the numbers of the last one is no new hold
            self._count_stall(hold, counts)
        self._counts = counts
        limit = self._limit(action, reason, hold, canary)
        if limit is not None:
            return self._finish("rollback", limit, evidence, canary)
        if action == "promote":
            return self._finish("promote", reason, evidence, canary)
        if action == "advance":
            self.step += 1
            self._step_start = (stable.requests, canary.requests, _labels(canary))
            self._stalled, self._waiting = 0, None
        return self._decide(action, reason, evidence, canary)

    def _next(self, evidence: list[dict[str, Any]], stable: VariantStats,
              canary: VariantStats) -> tuple[Action, str, _Hold | None]:
        """What the evidence (no guardrail failed) allows: hold, advance or promote, with the reason; for a hold,
        the `_Hold` that says what it waits for."""
        step = self._step_name(self.step)
        if evidence[0]["flagged"]:
            return "hold", "sample ratio mismatch in this step; check the traffic split", _Hold(
                "srm", None, "sample ratio mismatch persisted", f"step {step}: check the traffic split")
        served = canary.requests - self._step_start[1]
        if served < self.policy.min_requests_per_step:
            # Steps are counted from 1 in words, as `loopstack deploy` shows them ("step 1/4").
            reason = f"step {step}: {served} of {self.policy.min_requests_per_step} canary requests"
            return "hold", reason, _Hold("requests", canary.requests, "the canary got no new requests", reason)
        labelled = self._labelled_in_step(canary)
        if labelled < self.policy.min_labels_per_step:
            reason = (f"step {step}: {labelled} of {self.policy.min_labels_per_step} labelled canary requests "
                      "(waiting for feedback)")
            return "hold", reason, _Hold("labels", labelled, _no_labels(labelled), reason)
        last = self.step == len(self.policy.steps) - 1
        untested = self._untested(evidence, stable, canary, promoting=last)
        if untested:
            reason = f"step {step}: not yet tested: {'; '.join(words for _, words, _ in untested)}"
            have = min(count for _, _, count in untested)
            if all(metric == "primary" for metric, _, _ in untested):
                return "hold", reason, _Hold("labels", have, _no_labels(have), reason)
            return "hold", reason, _Hold("untested", have, "guardrails got no new samples", reason)
        if self.policy.require_non_inferiority and last:
            pending = [e for e in evidence if e["metric"] in self.policy.guardrails and not e["non_inferior"]]
            if pending:
                # No numbers here: the reason stays the same while the interval narrows, so a controller
                # records the hold again only as the canary's requests grow (see the controller).
                listed = ", ".join(f"{e['metric']} (margin {e['margin']:g})" for e in pending)
                return "hold", f"step {step}: not yet shown non-inferior: {listed}", _Hold(
                    "non_inferiority", canary.requests, "not shown non-inferior", f"step {step}: {listed}")
        if last:
            return "promote", self._promoted(canary), None
        return "advance", f"step {step} passed", None

    def _count_stall(self, hold: _Hold | None, counts: list[int]) -> None:
        """Count a hold as a stall when what it waits for did not grow since the last evaluation (a sample ratio
        mismatch always), else start the count afresh. A canary gathering its step's requests, labels or
        samples is making progress however long that takes; one whose labels stopped coming is not, nor one
        whose arm got no request while the stable arm got enough to expect `STARVED` of them at its weight.
        A hold for non-inferiority stalls only that way: its intervals narrow with every request and label."""
        previous, self._waiting = self._waiting, None if hold is None else [hold.kind, hold.awaited]
        if hold is None:
            self._stalled = 0
        elif hold.awaited is None:
            self._stalled = self._stalled + 1 if previous is not None and previous[0] == hold.kind else 1
        elif previous is None or previous[0] != hold.kind or hold.awaited > previous[1]:
            self._stalled = 0
        elif hold.kind not in ("requests", "non_inferiority") or self._starved(counts):
            self._stalled += 1
        # else: no canary request since, but too few requests in all to tell a starved canary from a quiet one
        # (or, waiting for non-inferiority, only labels came: they narrow its intervals too)

    def _starved(self, counts: list[int]) -> bool:
        """Whether the stable arm's requests since the last evaluation make the canary's none unlikely."""
        grown = counts[0] - (self._counts or counts)[0]
        weight = self.policy.steps[self.step]
        return grown > 0 and (weight >= 1 or grown * weight / (1 - weight) >= STARVED)

    def _limit(self, action: Action, reason: str, hold: _Hold | None, canary: VariantStats) -> str | None:
        """The rollback reason when this evaluation reached a limit of the policy, else None."""
        p = self.policy
        if action == "hold" and hold is not None and p.max_hold_evaluations is not None \
                and self._stalled >= p.max_hold_evaluations:
            return f"{hold.headline} for {self._stalled} evaluations (max_hold_evaluations): {hold.detail}"
        if action != "promote" and p.max_canary_requests is not None and canary.requests >= p.max_canary_requests:
            within = f"within {p.max_canary_requests} canary requests (max_canary_requests)"
            if hold is None or hold.kind == "requests":
                to_go = len(p.steps) - self.step - 1
                return f"not promoted {within}: {reason}" + (f", {to_go} more to go" if action == "advance" else "")
            headline = {"labels": "labels never arrived" if not hold.awaited else "too few labels arrived",
                        "untested": "guardrails still untested"}
            return f"{headline.get(hold.kind, hold.headline)} {within}: {hold.detail}"
        return None

    def _untested(self, evidence: list[dict[str, Any]], stable: VariantStats, canary: VariantStats,
                  promoting: bool) -> list[tuple[str, str, int]]:
        """The guardrails whose test has not yet run on ``min_samples`` per arm, each with its state in words and
        the samples its smaller arm has; they block the step.

        The error rate and the tail latency block every step; the primary metric, whose labels may come a day
        late, blocks the promotion only (``min_labels_per_step`` makes each step wait for labels too).
        """
        tested = {e["metric"] for e in evidence if e.get("verdict") not in (None, "insufficient")}
        counts = {"error_rate": (stable.requests, canary.requests),
                  "latency_tail": (len(stable.latencies_ms), len(canary.latencies_ms)),
                  "primary": (_labels(stable), _labels(canary))}
        needed = _min_samples(self.policy)
        untested = []
        for metric in self.policy.guardrails:
            if metric in tested or (metric == "primary" and not promoting):
                continue
            n_stable, n_canary = counts[metric]
            arm, have = ("canary", n_canary) if n_canary <= n_stable else ("stable", n_stable)
            words = f"{metric} has {have} of {needed} {_UNITS[metric]} in the {arm} arm"
            untested.append((metric, words + (" (waiting for labels)" if metric == "primary" else ""), have))
        return untested

    def _promoted(self, canary: VariantStats) -> str:
        """The promotion's reason: what was tested, on how much."""
        names = list(self.policy.guardrails)
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        labels = f" ({_labels(canary)} labels)" if "primary" in names else ""
        if self.policy.require_non_inferiority:
            margins = ", ".join(f"{_MARGIN_NAMES[name]} {self.policy.margin(name):g}" for name in names)
            return (f"all steps passed: {listed} non-inferior ({margins}) on {canary.requests} canary "
                    f"requests{labels}")
        return f"all steps passed: {listed} not worse on {canary.requests} canary requests{labels}"

    def _labelled_in_step(self, canary: VariantStats) -> int:
        """Labels of the requests this step served, or, where the stats do not say which requests have one,
        the labels that arrived during the step."""
        if canary.labelled is None:
            return _labels(canary) - self._step_start[2]
        return int(np.count_nonzero(np.asarray(canary.labelled) >= self._step_start[1]))

    def _step_name(self, step: int) -> str:
        return f"{step + 1}/{len(self.policy.steps)}"

    def _decide(self, action: Action, reason: str, evidence: list[dict[str, Any]], canary: VariantStats) -> Decision:
        return Decision(action, self.step, self.weight, reason, tuple(evidence), canary.requests)

    def _finish(self, action: Action, reason: str, evidence: list[dict[str, Any]], canary: VariantStats) -> Decision:
        self.finished = action
        return self._decide(action, reason, evidence, canary)

    def _srm(self, stable: VariantStats, canary: VariantStats) -> dict[str, Any]:
        w = self.policy.steps[self.step]
        if stable.current_requests is not None and canary.current_requests is not None:
            counts = [stable.current_requests, canary.current_requests]
        else:
            counts = [stable.requests - self._step_start[0], canary.requests - self._step_start[1]]
        result = srm_check(counts, [1 - w, w], self.policy.srm_threshold) if w < 1 else None
        record = result.to_dict() if result else {"flagged": False}
        return {"metric": "sample_ratio", **record}

    def _guardrails(self, stable: VariantStats, canary: VariantStats) -> list[dict[str, Any]]:
        checks = self._checks(stable, canary)
        unplanned = [check.metric for check in checks if check.metric not in self._tests]
        if unplanned:
            raise ValidationError(f"this canary got data for {unplanned} but its policy guards only "
                                  f"{list(self.policy.guardrails)}; add them to CanaryPolicy(guardrails=...), "
                                  "so that alpha is split over them from the start, or leave that data out.")
        return [self._check(check) for check in checks]

    def _checks(self, stable: VariantStats, canary: VariantStats) -> list[_Check]:
        p = self.policy
        checks = [_Check("error_rate", *_rates(stable.errors, stable.requests, canary.errors, canary.requests))]
        checks[0] = checks[0]._replace(margin=p.error_margin)
        if len(stable.latencies_ms) and len(canary.latencies_ms):
            tail = _tail(stable.latencies_ms, canary.latencies_ms, p.latency_quantile)
            checks.append(_Check("latency_tail", *tail, margin=p.latency_margin))
        if stable.primary is not None and canary.primary is not None:
            checks.append(
                _Check("primary", stable.primary, canary.primary, {}, p.primary_higher_is_better, p.primary_margin)
            )
        return checks

    def _check(self, check: _Check) -> dict[str, Any]:
        test = self._tests[check.metric]
        samples = check.info.get("samples_stable", check.stable.n), check.info.get("samples_canary", check.canary.n)
        if min(samples) < _min_samples(self.policy):  # real samples: a rate's adjusted n counts two more
            # Shown, not kept: a look on a handful of samples stayed in the running interval and decided later looks.
            r = sequential_test(check.stable, check.canary, alpha=test.alpha, planned_n=test.planned_n)
            verdict = "insufficient"
        else:
            r = test.update(check.stable, check.canary)
            verdict = _verdict(r.diff_ci, check)
        low, high = r.diff_ci
        judged = {}
        if self.policy.require_non_inferiority:  # absent otherwise: the default mode's records stay as they were
            judged["non_inferior"] = None if verdict == "insufficient" else _non_inferior(r.diff_ci, check)
        return {
            "metric": check.metric,
            "verdict": verdict,
            **judged,
            "stable": check.stable.mean,
            "canary": check.canary.mean,
            "diff": finite_or_none(r.diff),  # NaN, and an infinite interval, while an arm has under 2 units
            "diff_ci": [finite_or_none(low), finite_or_none(high)],
            "p_value": finite_or_none(r.p_value),
            "alpha": test.alpha,
            "margin": check.margin,
            "n_stable": check.stable.n,
            "n_canary": check.canary.n,
            **check.info,
        }


def _verdict(diff_ci: tuple[float, float], check: _Check) -> str:
    """The verdict: "worse" when the whole interval for canary minus stable lies past the margin on the bad side."""
    low, high = diff_ci
    bad = (high < -check.margin) if check.higher_is_better else (low > check.margin)
    good = (low > 0) if check.higher_is_better else (high < 0)
    return "worse" if bad else "better" if good else "ok"


def _non_inferior(diff_ci: tuple[float, float], check: _Check) -> bool:
    """Whether the interval's bad end lies within the margin: the canary is shown worse by no more than it.

    Stricter than "not worse" (`_verdict`), which asks only that the interval not lie wholly past the margin.
    """
    low, high = diff_ci
    bad_end = -low if check.higher_is_better else high
    return bool(math.isfinite(bad_end) and bad_end <= check.margin)


class _Hold(NamedTuple):
    """What a hold waits for: its `kind`, the amount `awaited` that must grow for it to count as progress (None:
    nothing does, a sample ratio mismatch), and in words for a rollback at a limit (`headline` + `detail`)."""

    kind: str  # "srm", "requests", "labels", "untested" or "non_inferiority"
    awaited: int | None
    headline: str
    detail: str


def _no_labels(count: int) -> str:
    """A labels hold that made no progress, in words."""
    return "labels never arrived" if count == 0 else "labels stopped arriving"


_UNITS = {"error_rate": "requests", "latency_tail": "latencies", "primary": "labels"}


def _min_samples(policy: CanaryPolicy) -> int:
    """Samples each arm needs before a guardrail's test runs (2 at least, for a variance)."""
    return max(policy.min_samples, 2)


def _labels(stats: VariantStats) -> int:
    """Samples of the primary metric so far (0 before the first label)."""
    return stats.primary.n if stats.primary is not None else 0


def _test_state(test: SequentialTest) -> dict[str, Any]:
    r = test.last
    last = None if r is None else {
        "control": r.control.to_dict(), "treatment": r.treatment.to_dict(), "diff": finite_or_none(r.diff),
        "diff_ci": [finite_or_none(x) for x in r.diff_ci], "lift": finite_or_none(r.lift),
        "lift_ci": [finite_or_none(x) for x in r.lift_ci], "statistic": finite_or_none(r.statistic),
        "p_value": finite_or_none(r.p_value),
    }
    return {"alpha": test.alpha, "planned_n": test.planned_n, "looks": test.looks, "last": last}


def _restore_test(state: dict[str, Any]) -> SequentialTest:
    from loopstack.rollout.stats.frequentist import Comparison

    test = SequentialTest(alpha=state["alpha"], planned_n=state["planned_n"])
    test.looks = int(state["looks"])
    last = state.get("last")
    if last is not None:
        nan = float("nan")

        def num(x: float | None) -> float:
            return nan if x is None else float(x)

        test.last = Comparison(
            "sequential", Summary(**last["control"]), Summary(**last["treatment"]), num(last["diff"]),
            (num(last["diff_ci"][0]), num(last["diff_ci"][1])), num(last["lift"]),
            (num(last["lift_ci"][0]), num(last["lift_ci"][1])), num(last["statistic"]), num(last["p_value"]),
            test.alpha,
        )
    return test


class _Check(NamedTuple):
    metric: str
    stable: Summary
    canary: Summary
    info: dict[str, Any]
    higher_is_better: bool = False
    margin: float = 0.0


def _rates(x_s: int, n_s: int, x_c: int, n_c: int) -> tuple[Summary, Summary, dict[str, Any]]:
    """Agresti-Caffo adjusted rates: one success and one failure added per arm."""
    info = {"observed_stable": x_s / n_s if n_s else None, "observed_canary": x_c / n_c if n_c else None,
            "samples_stable": n_s, "samples_canary": n_c}  # the adjusted summaries' n counts the two added
    return Summary.from_proportion(x_s + 1, n_s + 2), Summary.from_proportion(x_c + 1, n_c + 2), info


def _tail(stable_ms: Any, canary_ms: Any, q: float) -> tuple[Summary, Summary, dict[str, Any]]:
    s, c = np.asarray(stable_ms, dtype=float), np.asarray(canary_ms, dtype=float)
    threshold = float(np.quantile(s, q))
    summaries = _rates(int((s > threshold).sum()), s.size, int((c > threshold).sum()), c.size)
    info = {
        **summaries[2],
        "quantile": q,
        "threshold_ms": threshold,
        "stable_quantile_ms": threshold,
        "canary_quantile_ms": float(np.quantile(c, q)),
    }
    return summaries[0], summaries[1], info


__all__ = ["Action", "CanaryAnalysis", "CanaryPolicy", "Decision", "VariantStats"]
