"""Non-inferiority mode and the hold limits of a canary: a moderately worse challenger is not promoted, and no
canary holds forever."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.core.errors import ValidationError
from loopstack.rollout import CanaryAnalysis, CanaryPolicy, VariantStats
from loopstack.rollout.stats import Summary

# The review's canary: conversion is the primary metric, the error rate a guardrail; 3 steps of 1,000 requests.
REVIEW = CanaryPolicy(steps=(0.05, 0.25, 0.5), min_requests_per_step=1000, planned_n=20_000,
                      guardrails=("error_rate", "primary"))
# What the review should have run: a 0.5 point loss of a 10 % conversion and 0.2 points of errors tolerated.
NON_INFERIOR = replace(REVIEW, require_non_inferiority=True, primary_margin=0.005, error_margin=0.002)


def _simulate(policy: CanaryPolicy, seed: int, conversion: tuple[float, float] = (0.10, 0.09),
              errors: tuple[float, float] = (0.01, 0.015), batch: int = 2000, max_batches: int = 400):
    """Binomial traffic for (stable, canary): each request fails at its arm's error rate, and each answered one
    converts at its arm's conversion rate (its label, at once). Returns every decision until the canary ends."""
    rng = np.random.default_rng(seed)
    analysis = CanaryAnalysis(policy)
    requests, failed, converted = [0, 0], [0, 0], [0, 0]
    decisions = []
    for _ in range(max_batches):
        n_canary = rng.binomial(batch, analysis.weight)
        for arm, n in enumerate((batch - n_canary, n_canary)):
            errs = rng.binomial(n, errors[arm])
            requests[arm] += n
            failed[arm] += errs
            converted[arm] += rng.binomial(n - errs, conversion[arm])
        stats = [VariantStats(requests[arm], failed[arm],
                              primary=Summary.from_proportion(converted[arm], requests[arm] - failed[arm]))
                 for arm in (0, 1)]
        decisions.append(analysis.evaluate(*stats))
        if analysis.finished:
            break
    return decisions


def _bad_end(record: dict) -> float:
    """How much worse than the stable variant the interval allows the canary to be."""
    low, high = record["diff_ci"]
    higher_is_better = record["metric"] == "primary"
    return -low if higher_is_better else high


def test_the_reviews_worse_challenger_was_promoted_and_still_is_by_default():
    decisions = _simulate(REVIEW, seed=0)
    assert decisions[-1].action == "promote" and decisions[-1].canary_requests < 5000
    # the same margins without the new mode: the old outcome, and the old records
    default = _simulate(replace(NON_INFERIOR, require_non_inferiority=False), seed=0)
    assert default[-1].action == "promote"
    assert all("non_inferior" not in e for e in default[-1].evidence)


def test_the_reviews_worse_challenger_is_held_then_rolled_back_at_the_limit():
    """The steps ramp up on "not worse", as by default; the promotion waits for non-inferiority, which the worse
    challenger never shows, until the request limit rolls it back."""
    decisions = _simulate(replace(NON_INFERIOR, max_canary_requests=6000), seed=0)
    final = decisions[-1]
    assert {d.action for d in decisions[:-1]} == {"hold", "advance"}
    assert final.action == "rollback" and final.weight == 0.0 and final.canary_requests >= 6000
    assert final.reason.startswith("not shown non-inferior within 6000 canary requests (max_canary_requests): "
                                   "step 3/3: ")
    records = {e["metric"]: e for e in final.evidence}
    assert not all(records[m]["non_inferior"] for m in ("error_rate", "primary"))
    assert all(records[m]["verdict"] != "worse" for m in ("error_rate", "primary"))
    held = [d for d in decisions[:-1] if "non-inferior" in d.reason]
    assert held and all(d.reason.startswith("step 3/3: not yet shown non-inferior: ") for d in held)


def test_the_reviews_worse_challenger_is_never_promoted_in_the_new_mode():
    for seed in range(4):  # without a limit it holds until the evidence shows it worse than its margins
        final = _simulate(NON_INFERIOR, seed=seed, max_batches=1000)[-1]
        assert final.action == "rollback" and final.reason.startswith("guardrail failed"), (seed, final.reason)


def test_an_equal_challenger_with_enough_data_is_promoted_in_the_new_mode():
    decisions = _simulate(replace(NON_INFERIOR, max_canary_requests=200_000), seed=1, conversion=(0.10, 0.10),
                          errors=(0.01, 0.01), batch=10_000)
    final = decisions[-1]
    assert final.action == "promote"
    assert [d.action for d in decisions].count("advance") == 2
    assert final.reason.startswith("all steps passed: error_rate and primary non-inferior "
                                   "(error_margin 0.002, primary_margin 0.005) on ")
    for record in final.evidence[1:]:
        assert record["non_inferior"] is True and _bad_end(record) <= record["margin"]
    # far more data than the default mode wants: showing "at most 0.5 points worse" takes tens of thousands
    assert final.canary_requests > 10_000


def test_non_inferiority_needs_a_positive_margin():
    with pytest.raises(ValidationError, match=r"error_margin=0.0, latency_margin=0.0, primary_margin=0.0.*"
                                              r"Give the largest loss you accept, e.g. error_margin=0.002"):
        CanaryPolicy(require_non_inferiority=True)
    with pytest.raises(ValidationError, match=r"got primary_margin=0.0: .*e.g. primary_margin=0.005"):
        CanaryPolicy(require_non_inferiority=True, guardrails=("error_rate", "primary"), error_margin=0.01)
    with pytest.raises(ValidationError, match=r"error_margin=-0.01"):
        CanaryPolicy(require_non_inferiority=True, guardrails=("error_rate",), error_margin=-0.01)
    with pytest.raises(ValidationError, match="True or False"):
        CanaryPolicy(require_non_inferiority="false")  # type: ignore[arg-type]
    # margins of guardrails the policy does not name are not needed, and the default mode needs none
    assert CanaryPolicy(require_non_inferiority=True, guardrails=("error_rate",), error_margin=0.002)
    assert not CanaryPolicy().require_non_inferiority


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_canary_requests": 5999}, r"at least 6000, got 5999: a canary serves at least 6000 requests"),
     ({"max_canary_requests": 0}, "at least 6000"), ({"max_canary_requests": 7000.5}, "whole number"),
     ({"max_hold_evaluations": 0}, "max_hold_evaluations must be None"),
     ({"max_hold_evaluations": True}, "max_hold_evaluations must be None")],
)
def test_bad_limits_are_refused(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        CanaryPolicy(steps=(0.1, 0.5, 1.0), min_requests_per_step=2000, **kwargs)


def test_limits_read_back_from_json_numbers():
    policy = CanaryPolicy(steps=(0.5,), min_requests_per_step=100, max_canary_requests=5e4, max_hold_evaluations=3.0)
    assert (policy.max_canary_requests, policy.max_hold_evaluations) == (50_000, 3)


def _srm(stable: int, canary: int) -> tuple[VariantStats, VariantStats]:
    return VariantStats(stable, stable // 100), VariantStats(canary, canary // 100)


def test_a_persisting_sample_ratio_mismatch_rolls_back_at_the_limit():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=100, guardrails=("error_rate",),
                                           max_hold_evaluations=3))
    first = analysis.evaluate(*_srm(10_000, 8_000))
    assert first.action == "hold" and "sample ratio" in first.reason and analysis.stalled_evaluations == 1
    assert analysis.evaluate(*_srm(10_000, 8_000)).action == "hold"  # the same numbers again: not a new hold
    assert analysis.stalled_evaluations == 1
    assert analysis.evaluate(*_srm(12_000, 9_600)).action == "hold"
    final = analysis.evaluate(*_srm(14_000, 11_200))
    assert final.action == "rollback" and analysis.finished == "rollback"
    assert final.reason == ("sample ratio mismatch persisted for 3 evaluations (max_hold_evaluations): step 1/2: "
                            "check the traffic split")


def test_a_canary_that_gets_no_traffic_at_all_is_rolled_back_too():
    # its requests never grow, so only the number of evaluations can bound it
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.05, 1.0), min_requests_per_step=100, guardrails=("error_rate",),
                                           max_canary_requests=300, max_hold_evaluations=2))
    actions = [analysis.evaluate(*_srm(stable, 0)).action for stable in (5000, 10_000)]
    assert actions == ["hold", "rollback"]


def test_a_persisting_sample_ratio_mismatch_rolls_back_at_the_request_limit():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=100, guardrails=("error_rate",),
                                           max_canary_requests=10_000))
    assert analysis.evaluate(*_srm(10_000, 8_000)).action == "hold"
    final = analysis.evaluate(*_srm(12_600, 10_080))
    assert final.action == "rollback"
    assert final.reason.startswith("sample ratio mismatch persisted within 10000 canary requests (max_canary_requests)")


def _labelled(requests: int, labels: int) -> VariantStats:
    return VariantStats(requests, 0, primary=Summary.from_proportion(labels // 10, labels) if labels else None)


def test_labels_that_never_arrive_roll_back_at_the_limit_and_the_step_requests_do_not_count():
    analysis = CanaryAnalysis(CanaryPolicy(steps=(0.5,), min_requests_per_step=1000,
                                           guardrails=("error_rate", "primary"), max_hold_evaluations=2))
    gathering = analysis.evaluate(VariantStats(600, 0), VariantStats(600, 0))  # the step's own requests: no stall
    assert gathering.action == "hold" and analysis.stalled_evaluations == 0
    assert analysis.evaluate(VariantStats(1200, 0), VariantStats(1200, 0)).action == "hold"  # waiting starts
    assert analysis.evaluate(VariantStats(1800, 0), VariantStats(1800, 0)).action == "hold"  # no label since: 1
    final = analysis.evaluate(VariantStats(2400, 0), VariantStats(2400, 0))
    assert final.action == "rollback"
    assert final.reason == ("labels never arrived for 2 evaluations (max_hold_evaluations): step 1/1: not yet tested: "
                            "primary has 0 of 200 labels in the canary arm (waiting for labels)")


def test_labels_that_keep_coming_are_progress_and_labels_that_stop_are_not():
    policy = CanaryPolicy(steps=(0.2, 0.5), min_requests_per_step=100, min_labels_per_step=50, min_samples=10,
                          guardrails=("error_rate", "primary"), max_hold_evaluations=2)
    analysis = CanaryAnalysis(policy)
    for step in range(1, 5):  # slow labels: 20, 25, 30, 35 of the 50 the step waits for
        assert analysis.evaluate(_labelled(400 * step, 100), _labelled(100 * step, 15 + 5 * step)).action == "hold"
        assert analysis.stalled_evaluations == 0
    assert analysis.evaluate(_labelled(2000, 120), _labelled(500, 35)).action == "hold"  # they stopped: 1
    final = analysis.evaluate(_labelled(2400, 120), _labelled(600, 35))
    assert final.reason == ("labels stopped arriving for 2 evaluations (max_hold_evaluations): step 1/2: 35 of 50 "
                            "labelled canary requests (waiting for feedback)")


def test_a_healthy_canary_short_of_its_samples_is_never_stalled():
    """The review: with min_requests_per_step below min_samples, a healthy canary gathering its samples was rolled
    back with "guardrails still untested" after 3 evaluations; so was an equal challenger still showing
    non-inferiority, whatever the evidence, after as many ticks."""
    policy = CanaryPolicy(steps=(1.0,), min_requests_per_step=100, min_samples=200, guardrails=("error_rate",),
                          max_hold_evaluations=3)
    analysis = CanaryAnalysis(policy)
    for served in range(110, 200, 10):
        assert analysis.evaluate(VariantStats(served, 1), VariantStats(served, 1)).action == "hold"
    assert analysis.stalled_evaluations == 0
    patient = replace(NON_INFERIOR, max_hold_evaluations=3, max_canary_requests=None)
    decisions = _simulate(patient, seed=1, conversion=(0.10, 0.10), errors=(0.01, 0.01), batch=2000,
                          max_batches=300)
    assert decisions[-1].action == "promote"  # held many times on "not yet shown non-inferior", never stalled


def test_a_canary_that_gets_no_requests_at_a_full_step_is_rolled_back():
    """At a weight of 1 the split check cannot run, and a canary getting no traffic held forever."""
    policy = CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=100, guardrails=("error_rate",),
                          max_hold_evaluations=3, min_samples=10)
    analysis = CanaryAnalysis(policy)
    assert analysis.evaluate(VariantStats(150, 0), VariantStats(150, 0)).action == "advance"
    for stable in (300, 450, 600):
        assert analysis.evaluate(VariantStats(stable, 0), VariantStats(150, 0)).action == "hold"
    final = analysis.evaluate(VariantStats(750, 0), VariantStats(150, 0))
    assert final.action == "rollback"
    assert final.reason == ("the canary got no new requests for 3 evaluations (max_hold_evaluations): "
                            "step 2/2: 0 of 100 canary requests")


def test_a_hold_of_another_kind_starts_the_count_afresh_and_an_advance_ends_it():
    policy = CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=1000, guardrails=("error_rate", "primary"),
                          min_labels_per_step=10, min_samples=10, max_hold_evaluations=2)
    analysis = CanaryAnalysis(policy)
    assert analysis.evaluate(*_srm(10_000, 8_000)).action == "hold"  # a sample ratio mismatch: 1
    assert analysis.evaluate(_labelled(11_000, 0), _labelled(11_000, 0)).action == "hold"  # labels: afresh
    assert analysis.stalled_evaluations == 0
    analysis = CanaryAnalysis(policy)
    assert analysis.evaluate(*_srm(10_000, 8_000)).action == "hold"
    assert analysis.evaluate(_labelled(11_000, 100), _labelled(11_000, 100)).action == "advance"
    assert analysis.stalled_evaluations == 0


def test_the_request_limit_ends_a_canary_that_is_still_passing_steps():
    policy = CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=1000, guardrails=("error_rate",),
                          max_canary_requests=2000)
    analysis = CanaryAnalysis(policy)
    final = analysis.evaluate(VariantStats(3000, 30), VariantStats(3000, 30))
    assert final.action == "rollback"
    assert final.reason == ("not promoted within 2000 canary requests (max_canary_requests): step 1/2 passed, "
                            "1 more to go")
    promoted = CanaryAnalysis(policy)
    assert promoted.evaluate(VariantStats(1500, 15), VariantStats(1500, 15)).action == "advance"
    assert promoted.evaluate(VariantStats(1500, 15), VariantStats(2500, 25)).action == "promote"  # at the limit


def test_the_state_keeps_the_hold_counters():
    policy = CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=100, guardrails=("error_rate",),
                          max_hold_evaluations=3)
    analysis = CanaryAnalysis(policy)
    analysis.evaluate(*_srm(10_000, 8_000))
    analysis.evaluate(*_srm(12_000, 9_600))
    state = json.loads(json.dumps(analysis.state))
    assert (state["stalled"], state["waiting"], state["counts"]) == (2, ["srm", None], [12_000, 9_600, 0, 0])
    restored = CanaryAnalysis.from_state(state, policy)
    assert restored.stalled_evaluations == 2 and restored.state == analysis.state
    assert restored.evaluate(*_srm(12_000, 9_600)).action == "hold"  # what the last one saw: not counted
    assert restored.evaluate(*_srm(14_000, 11_200)).action == "rollback"
    # a state saved before the counters existed starts them at 0
    old = {key: value for key, value in state.items() if key not in ("stalled", "waiting", "counts")}
    assert CanaryAnalysis.from_state(old, policy).stalled_evaluations == 0
    assert CanaryAnalysis.from_state(old, policy).evaluate(*_srm(14_000, 11_200)).action == "hold"


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), conversion_change=st.floats(-0.03, 0.02), canary_errors=st.floats(0.0, 0.03),
       primary_margin=st.floats(0.002, 0.05), error_margin=st.floats(0.001, 0.03))
def test_a_promotion_in_the_new_mode_shows_every_guardrail_within_its_margin(seed, conversion_change, canary_errors,
                                                                           primary_margin, error_margin):
    policy = CanaryPolicy(steps=(0.2, 0.5), min_requests_per_step=1000, planned_n=20_000,
                          guardrails=("error_rate", "primary"), require_non_inferiority=True,
                          primary_margin=primary_margin, error_margin=error_margin)
    decisions = _simulate(policy, seed, conversion=(0.2, 0.2 + conversion_change), errors=(0.01, canary_errors),
                          batch=5000, max_batches=60)
    for decision in decisions:
        if decision.action != "promote":  # the steps before ramp up on "not worse"; the promotion needs more
            continue
        records = {e["metric"]: e for e in decision.evidence if e["metric"] in ("error_rate", "primary")}
        assert set(records) == {"error_rate", "primary"}
        for record in records.values():
            assert record["non_inferior"] is True
            assert _bad_end(record) <= record["margin"]


def test_a_slow_canary_at_a_small_weight_is_not_taken_for_a_starved_one():
    """At 1 % on a quiet endpoint most ticks bring the canary nothing by chance; each counted as a stall, and a
    healthy canary was rolled back after 8 ticks."""
    policy = CanaryPolicy(steps=(0.01, 0.5), min_requests_per_step=100, guardrails=("error_rate",),
                          max_hold_evaluations=8)
    analysis = CanaryAnalysis(policy)
    rng = np.random.default_rng(3)
    stable = canary = 0
    for _ in range(200):  # 30 requests a tick: 0.3 canary requests expected per tick
        got = int(rng.binomial(30, 0.01))
        stable, canary = stable + 30 - got, canary + got
        decision = analysis.evaluate(VariantStats(stable, 0), VariantStats(canary, 0))
        assert decision.action == "hold", decision.reason
    # the same quiet endpoint at 50 %, the canary getting nothing (15 expected a tick): a broken split
    analysis = CanaryAnalysis(replace(policy, steps=(0.5, 1.0)))
    tick = 0
    while not analysis.finished:
        tick += 1
        decision = analysis.evaluate(VariantStats(30 * tick, 0), VariantStats(0, 0))
    assert decision.action == "rollback" and decision.reason.startswith("sample ratio mismatch persisted")
    assert tick <= 10


def test_a_non_inferiority_hold_on_labels_alone_is_progress():
    policy = replace(NON_INFERIOR, steps=(0.5,), max_hold_evaluations=2)
    analysis = CanaryAnalysis(policy)
    for labels in (1000, 1200, 1400, 1600):  # requests unchanged, labels coming: the intervals narrow
        stats = [VariantStats(2000, 20, primary=Summary.from_proportion(labels // 10, labels)) for _ in range(2)]
        decision = analysis.evaluate(*stats)
        assert decision.action == "hold" and "non-inferior" in decision.reason
    assert analysis.stalled_evaluations == 0


def test_a_canary_starved_while_waiting_for_non_inferiority_at_full_weight_is_rolled_back():
    """At a weight of 1 the split check cannot run, and a non-inferiority hold never counted as a stall: a canary
    whose traffic vanished held forever."""
    policy = CanaryPolicy(steps=(0.5, 1.0), min_requests_per_step=1000, guardrails=("error_rate",),
                          require_non_inferiority=True, error_margin=0.002, max_hold_evaluations=3)
    analysis = CanaryAnalysis(policy)
    assert analysis.evaluate(VariantStats(2000, 20), VariantStats(2000, 20)).action == "advance"
    held = analysis.evaluate(VariantStats(2000, 20), VariantStats(3500, 35))  # the full step's own requests
    assert held.action == "hold" and "not yet shown non-inferior" in held.reason
    for stable in (2500, 3000, 3500):  # then the split breaks: everything goes to the stable arm
        decision = analysis.evaluate(VariantStats(stable, 25), VariantStats(3500, 35))
    assert decision.action == "rollback" and decision.reason.startswith("not shown non-inferior for 3 evaluations")
