"""Per-request routing: allocation matches the weights, assignment is sticky, shadows are listed."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.rollout import Deployment, TrafficRouter, VariantAssigner


def canary(weight: float, salt: str = "s1") -> Deployment:
    return Deployment("api", "canary", {"a": "m/1", "b": "m/2"}, "a", {"a": 1 - weight, "b": weight},
                      challenger="b", salt=salt, steps=(0.01, 0.05, 0.25, 0.5))


def test_ab_allocation_within_one_percent_of_the_weights_over_100k_ids() -> None:
    d = Deployment("api", "ab", {"c": "m/1", "t1": "m/2", "t2": "m/3"}, "c", {"c": 0.5, "t1": 0.3, "t2": 0.2},
                   salt="exp-7")
    router = TrafficRouter(d)
    ids = [f"user-{i}" for i in range(100_000)]
    chosen = [router.choose(u) for u in ids]
    for name, weight in d.weights.items():
        assert abs(chosen.count(name) / len(ids) - weight) < 0.01
    # the same split as a GrowthBook SDK with the same seed, so a front end agrees with the server
    assigner = VariantAssigner("api", ["c", "t1", "t2"], weights=[0.5, 0.3, 0.2], seed="exp-7")
    assert chosen[:2000] == [assigner.assign(u) for u in ids[:2000]]


def test_requests_without_unit_id_follow_the_weights_at_random() -> None:
    router = TrafficRouter(canary(0.25), seed=3)
    chosen = [router.choose(None) for _ in range(20_000)]
    assert abs(chosen.count("b") / 20_000 - 0.25) < 0.015


def test_a_growing_canary_keeps_its_units() -> None:
    """A unit that saw the canary at one step sees it at every later step (ranges grow from the top)."""
    ids = [f"u{i}" for i in range(20_000)]
    previous: set[str] = set()
    for weight in (0.01, 0.05, 0.25, 0.5, 1.0 - 1e-12):
        router = TrafficRouter(canary(weight))
        on_canary = {u for u in ids if router.choose(u) == "b"}
        assert previous <= on_canary
        assert abs(len(on_canary) / len(ids) - weight) < 0.01
        previous = on_canary


def test_a_new_salt_reshuffles_independently() -> None:
    ids = [f"u{i}" for i in range(20_000)]
    one, two = TrafficRouter(canary(0.5, "one")), TrafficRouter(canary(0.5, "two"))
    first = np.array([one.choose(u) == "b" for u in ids])
    second = np.array([two.choose(u) == "b" for u in ids])
    both = (first & second).mean()
    assert abs(both - 0.25) < 0.015  # independent halves overlap on a quarter


@settings(max_examples=50, deadline=None)
@given(weight=st.floats(0.001, 0.999), unit=st.text(min_size=1, max_size=20))
def test_sticky_and_valid_for_any_weight(weight: float, unit: str) -> None:
    router = TrafficRouter(canary(weight))
    assert router.choose(unit) == TrafficRouter(canary(weight)).choose(unit) in ("a", "b")


def test_single_blue_green_and_shadow_send_everything_to_the_champion() -> None:
    blue_green = Deployment("api", "blue_green", {"old": "m/1", "new": "m/2"}, "new", {"new": 1.0, "old": 0.0},
                            previous="old")
    shadow = Deployment("api", "shadow", {"a": "m/1", "b": "m/2"}, "a", {"a": 1.0, "b": 0.0}, challenger="b",
                        shadow=("b",))
    for d, answer in ((blue_green, "new"), (shadow, "a")):
        router = TrafficRouter(d)
        assert {router.choose(f"u{i}") for i in range(200)} | {router.choose(None)} == {answer}
    assert TrafficRouter(shadow).shadows == ("b",) and TrafficRouter(blue_green).shadows == ()


def test_bandit_router_favours_the_arm_with_better_rewards() -> None:
    from loopstack.rollout import ThompsonBandit

    bandit = ThompsonBandit(["a", "b"], min_share=0.05)
    bandit.pulls.update(a=1000, b=1000)
    bandit.reward_sum.update(a=100.0, b=300.0)
    d = Deployment("api", "bandit", {"a": "m/1", "b": "m/2"}, "a", {"a": 0.5, "b": 0.5},
                   state={"bandit": bandit.state})
    router = TrafficRouter(d, seed=0)
    chosen = [router.choose("same-user") for _ in range(4000)]
    share_a = chosen.count("a") / 4000
    assert 0.03 < share_a < 0.08  # only the exploration floor (min_share) goes to the worse arm
