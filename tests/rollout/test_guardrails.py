"""Canary decisions: roll back a worse challenger, promote an equal one, keep the evidence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loopstack.core.errors import ConflictError, ValidationError
from loopstack.rollout import CanaryAnalysis, CanaryPolicy, VariantStats
from loopstack.rollout.stats import Summary


def _simulate(
    canary_error: float,
    *,
    seed: int,
    policy: CanaryPolicy,
    canary_latency_scale: float = 1.0,
    batch: int = 2000,
    max_batches: int = 400,
):
    """Drive a canary with simulated traffic; return the final decision and every decision on the way."""
    rng = np.random.default_rng(seed)
    analysis = CanaryAnalysis(policy)
    req = {"s": 0, "c": 0}
    err = {"s": 0, "c": 0}
    lat: dict[str, list[np.ndarray]] = {"s": [], "c": []}
    decisions = []
    for _ in range(max_batches):
        n_c = rng.binomial(batch, analysis.weight)
        for arm, n, rate, scale in (("s", batch - n_c, 0.01, 1.0), ("c", n_c, canary_error, canary_latency_scale)):
            req[arm] += n
            err[arm] += rng.binomial(n, rate)
            lat[arm].append(rng.lognormal(np.log(50 * scale), 0.4, n))
        stable = VariantStats(req["s"], err["s"], np.concatenate(lat["s"]))
        canary = VariantStats(req["c"], err["c"], np.concatenate(lat["c"]))
        decisions.append(analysis.evaluate(stable, canary))
        if analysis.finished:
            break
    return decisions[-1], decisions


POLICY = CanaryPolicy(steps=(0.05, 0.25, 0.5), min_requests_per_step=1500, planned_n=20_000,
                      guardrails=("error_rate", "latency_tail"))  # what _simulate feeds


def test_doubled_error_rate_is_rolled_back_with_evidence():
    final, _ = _simulate(0.02, seed=1, policy=POLICY)
    assert final.action == "rollback"
    assert final.weight == 0.0
    assert "error_rate" in final.reason
    evidence = {e["metric"]: e for e in final.evidence}
    assert evidence["error_rate"]["verdict"] == "worse"
    assert evidence["error_rate"]["diff_ci"][0] > 0
    assert final.canary_requests < 6000
    kind, payload = final.to_event()
    assert kind == "rollout.canary.rollback"
    assert json.loads(json.dumps(payload))["evidence"][1]["metric"] == "error_rate"


def test_equal_challenger_is_promoted_after_every_step():
    final, decisions = _simulate(0.01, seed=2, policy=POLICY)
    assert final.action == "promote"
    assert final.weight == 1.0
    assert [d.action for d in decisions].count("advance") == 2


def test_better_challenger_is_promoted():
    final, _ = _simulate(0.005, seed=3, policy=POLICY)
    assert final.action == "promote"
    assert {e["metric"]: e for e in final.evidence}["error_rate"]["verdict"] in ("better", "ok")


def test_slower_challenger_is_rolled_back_on_tail_latency():
    final, _ = _simulate(0.01, seed=4, policy=POLICY, canary_latency_scale=1.3)
    assert final.action == "rollback"
    tail = {e["metric"]: e for e in final.evidence}["latency_tail"]
    assert tail["verdict"] == "worse"
    assert tail["canary_quantile_ms"] > tail["stable_quantile_ms"]


def test_false_rollbacks_are_rare_for_an_identical_challenger():
    rollbacks = sum(_simulate(0.01, seed=100 + i, policy=POLICY, batch=4000)[0].action == "rollback" for i in range(15))
    assert rollbacks <= 2


def test_worse_primary_metric_rolls_back():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5,), min_requests_per_step=10**6))
    stable = VariantStats(20_000, 200, primary=Summary.from_proportion(2000, 20_000))
    canary = VariantStats(20_000, 200, primary=Summary.from_proportion(1600, 20_000))
    decision = analysis.evaluate(stable, canary)
    assert decision.action == "rollback"
    assert "primary" in decision.reason


def _primary(stable_hits: int, canary_hits: int, labels: int, requests: tuple[int, int] = (2250, 250)):
    """Stable and canary stats with no errors and a 0/1 primary metric of `labels` samples per arm."""
    return (VariantStats(requests[0], 0, primary=Summary.from_proportion(stable_hits, labels)),
            VariantStats(requests[1], 0, primary=Summary.from_proportion(canary_hits, labels)))


def test_two_labels_per_arm_cannot_roll_back_a_canary():
    # 2/2 against 0/2 labels, 250 canary requests: variance 0 in both arms made the interval [-1, -1]
    # and rolled the canary back; the gate counted requests, not labels
    decision = CanaryAnalysis(CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=2000)).evaluate(*_primary(2, 0, 2))
    assert decision.action == "hold"
    assert {e["metric"]: e for e in decision.evidence}["primary"]["verdict"] == "insufficient"


def test_an_insufficient_look_does_not_decide_later_looks():
    # a look on 2 labels per arm was kept in the running interval, and a later look with plenty of labels
    # and no difference at all rolled back on it
    policy = CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=10**6)
    peeked, fresh = CanaryAnalysis(policy), CanaryAnalysis(policy)
    assert peeked.evaluate(*_primary(2, 0, 2, requests=(180, 20))).action == "hold"
    later = _primary(60, 58, 300, requests=(9000, 1000))
    after_peek, alone = peeked.evaluate(*later), fresh.evaluate(*later)
    assert after_peek.action == alone.action == "hold"
    assert after_peek.evidence == alone.evidence


def test_alpha_is_split_over_the_planned_guardrails_when_labels_arrive_late():
    # the split was decided at each guardrail's first look: 1/2 each for error rate and latency before the
    # first label, then 1/3 for the primary metric, 0.067 in all for a canary promised alpha = 0.05
    policy = CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=10**6, alpha=0.05)
    analysis = CanaryAnalysis(policy)
    latencies = [10.0] * 100
    analysis.evaluate(VariantStats(1800, 18, latencies), VariantStats(200, 2, latencies))
    labelled = analysis.evaluate(VariantStats(3600, 36, latencies, Summary.from_proportion(50, 500)),
                                 VariantStats(400, 4, latencies, Summary.from_proportion(5, 50)))
    running = json.loads(json.dumps(analysis.state))["tests"]
    assert sum(test["alpha"] for test in running.values()) == pytest.approx(policy.alpha)
    reported = {e["metric"]: e["alpha"] for e in labelled.evidence if "alpha" in e}
    assert reported == {metric: test["alpha"] for metric, test in running.items()}


def test_data_for_a_guardrail_the_policy_leaves_out_is_refused():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5,), guardrails=("error_rate",)))
    with pytest.raises(ValidationError, match=r"data for \['primary'\].*CanaryPolicy\(guardrails="):
        analysis.evaluate(*_primary(50, 50, 500))


def test_sample_ratio_mismatch_holds_the_rollout():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=100))
    decision = analysis.evaluate(VariantStats(10_000, 100), VariantStats(8_000, 80))
    assert decision.action == "hold"
    assert decision.evidence[0]["flagged"] is True
    assert "sample ratio" in decision.reason


def test_hold_until_the_step_has_enough_requests_then_advance():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=1000, guardrails=("error_rate",)))
    assert analysis.evaluate(VariantStats(4500, 45), VariantStats(500, 5)).action == "hold"
    advanced = analysis.evaluate(VariantStats(9000, 90), VariantStats(1000, 10))
    assert (advanced.action, advanced.weight, analysis.step) == ("advance", 0.5, 1)
    # the new step counts its own requests from here
    assert analysis.evaluate(VariantStats(9500, 95), VariantStats(1500, 15)).action == "hold"


def _labelled(requests: int, labels: int) -> VariantStats:
    """A variant whose primary metric (a 0/1 outcome, 10 % positive) has `labels` samples so far."""
    primary = Summary.from_proportion(labels // 10, labels) if labels else None
    return VariantStats(requests, 0, primary=primary)


def test_a_step_waits_for_its_own_labels_before_it_passes():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.2, 0.5), min_requests_per_step=100, min_labels_per_step=50,
                                           min_samples=10, guardrails=("error_rate", "primary")))
    held = analysis.evaluate(_labelled(400, 0), _labelled(100, 0))  # enough requests, no label yet
    assert held.action == "hold" and "0 of 50 labelled" in held.reason
    assert analysis.evaluate(_labelled(600, 200), _labelled(150, 50)).action == "advance"
    # step 2 has its requests at once, but the labels that counted for step 1 do not count again
    held = analysis.evaluate(_labelled(750, 200), _labelled(300, 50))
    assert held.action == "hold" and "step 2/2: 0 of 50 labelled" in held.reason
    restored = CanaryAnalysis.from_state(json.loads(json.dumps(analysis.state)), analysis.policy)
    assert restored.evaluate(_labelled(800, 260), _labelled(350, 99)).action == "hold"
    assert restored.evaluate(_labelled(800, 260), _labelled(350, 100)).action == "promote"


def test_late_labels_of_the_step_before_do_not_pass_a_step():
    """Step 1's requests get their labels only while step 2 runs; with `labelled` positions they count for step 1.

    Counted by arrival, the 60 late labels of step 1's requests would pass step 2 (min 50) before a single
    request of its own was labelled, and promote the canary on the first step's evidence.
    """

    def canary(requests: int, labelled: list[int]) -> VariantStats:
        primary = Summary.from_proportion(len(labelled) // 10, len(labelled)) if labelled else None
        return VariantStats(requests, 0, primary=primary, labelled=np.asarray(labelled, dtype=np.int64))

    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.2, 0.5), min_requests_per_step=100, min_labels_per_step=50,
                                           min_samples=10, guardrails=("error_rate", "primary")))
    step_one = list(range(50))  # 50 of step 1's 100 requests labelled
    assert analysis.evaluate(_labelled(400, 200), canary(100, step_one)).action == "advance"
    late = step_one + list(range(50, 100))  # the rest of step 1's labels arrive during step 2
    held = analysis.evaluate(_labelled(550, 300), canary(250, late))
    assert held.action == "hold" and "step 2/2: 0 of 50 labelled" in held.reason
    own = late + list(range(100, 150))  # step 2's own requests (100 onwards) get labels
    assert analysis.evaluate(_labelled(600, 350), canary(300, own)).action == "promote"


def test_a_state_saved_before_labels_were_counted_still_loads():
    policy = CanaryPolicy(steps=(0.2, 0.5), min_requests_per_step=100, min_labels_per_step=10, min_samples=10,
                          guardrails=("error_rate", "primary"))
    old = {"step": 1, "finished": None, "step_start": [400, 100], "tests": {}}
    analysis = CanaryAnalysis.from_state(old, policy)
    assert analysis.evaluate(_labelled(500, 100), _labelled(200, 10)).action == "promote"


def test_ended_canary_refuses_more_evaluations():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5,), min_requests_per_step=10, guardrails=("error_rate",)))
    assert analysis.evaluate(VariantStats(1000, 10), VariantStats(1000, 10)).action == "promote"
    with pytest.raises(ConflictError, match="already ended with 'promote'"):
        analysis.evaluate(VariantStats(1000, 10), VariantStats(1000, 10))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": (0.5, 0.1)}, "increasing"), ({"steps": ()}, "increasing"), ({"latency_quantile": 1.0}, "quantile"),
     ({"min_labels_per_step": -1}, "min_labels_per_step"), ({"guardrails": ("primary",)}, "must include 'error_rate'"),
     ({"guardrails": ("error_rate", "latency_p99")}, r"\['error_rate', 'latency_p99'\]")],
)
def test_bad_policies_are_rejected(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        CanaryPolicy(**kwargs)


def test_bad_counts_are_rejected():
    with pytest.raises(ValidationError, match="errors <= requests"):
        VariantStats(10, 11)


def test_a_guardrail_without_enough_samples_blocks_the_promotion():
    # docs' settings: one step, 100 requests per step, min_samples 200; 113 canary requests, every one an
    # error, promoted with "all steps passed" while the error rate was still "insufficient"
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5,), min_requests_per_step=100, guardrails=("error_rate",)))
    held = analysis.evaluate(VariantStats(120, 0), VariantStats(113, 113))
    assert held.action == "hold"
    assert "error_rate has 113 of 200 requests in the canary arm" in held.reason
    assert {e["metric"]: e for e in held.evidence}["error_rate"]["verdict"] == "insufficient"
    assert analysis.evaluate(VariantStats(230, 0), VariantStats(220, 220)).action == "rollback"


def test_a_guardrail_without_data_blocks_advancing():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=500,
                                           guardrails=("error_rate", "latency_tail")))
    few = analysis.evaluate(VariantStats(9000, 90, [10.0] * 5000), VariantStats(1000, 10, [10.0] * 150))
    assert few.action == "hold" and "latency_tail has 150 of 200 latencies in the canary arm" in few.reason
    none = analysis.evaluate(VariantStats(9000, 90), VariantStats(1000, 10))  # no latency at all: never tested
    assert none.action == "hold" and "latency_tail has 0 of 200 latencies" in none.reason
    advanced = analysis.evaluate(VariantStats(9000, 90, [10.0] * 5000), VariantStats(1000, 10, [10.0] * 900))
    assert advanced.action == "advance"


def test_the_primary_metric_blocks_only_the_promotion_until_its_labels_arrive():
    # with a primary metric and no labels at all the canary was promoted: its test never ran
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.2, 0.5), min_requests_per_step=100,
                                           guardrails=("error_rate", "primary")))
    assert analysis.evaluate(VariantStats(800, 0), VariantStats(200, 0)).action == "advance"  # labels may be late
    held = analysis.evaluate(VariantStats(1100, 0), VariantStats(500, 0))
    assert held.action == "hold"
    assert "primary has 0 of 200 labels in the canary arm (waiting for labels)" in held.reason
    held = analysis.evaluate(_labelled(1150, 1000), _labelled(550, 150))
    assert held.action == "hold" and "primary has 150 of 200 labels" in held.reason
    promoted = analysis.evaluate(_labelled(1200, 1000), _labelled(600, 300))
    assert promoted.action == "promote"
    assert promoted.reason == "all steps passed: error_rate and primary not worse on 600 canary requests (300 labels)"
