"""Thompson sampling finds the best arm, never starves an arm below its minimum share."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.core.errors import ValidationError
from loopstack.rollout import ThompsonBandit


def _run(bandit: ThompsonBandit, rates: dict[str, float], steps: int, seed: int = 0) -> ThompsonBandit:
    world = np.random.default_rng(seed)
    for _ in range(steps):
        arm = bandit.choose()
        bandit.update(arm, float(world.random() < rates[arm]))
    return bandit


def test_bandit_concentrates_on_the_best_arm_and_keeps_minimum_share():
    rates = {"a": 0.05, "b": 0.10, "c": 0.15}
    bandit = _run(ThompsonBandit(list(rates), min_share=0.05, seed=1), rates, 3000)
    shares = {a: n / 3000 for a, n in bandit.pulls.items()}
    assert max(shares, key=shares.get) == "c"
    assert shares["c"] > 0.6
    assert min(shares.values()) >= 0.05 * 0.7  # minimum share, with sampling noise
    allocation = bandit.allocation(4000)
    assert min(allocation.values()) >= 0.05 - 1e-12
    assert sum(allocation.values()) == pytest.approx(1.0)


def test_regret_is_below_a_uniform_split():
    rates = {"a": 0.05, "b": 0.10, "c": 0.15}
    bandit = _run(ThompsonBandit(list(rates), min_share=0.02, seed=2), rates, 3000, seed=3)
    regret = sum((0.15 - rates[a]) * n for a, n in bandit.pulls.items())
    uniform = 3000 * (0.15 - np.mean(list(rates.values())))
    assert regret < 0.5 * uniform


@settings(max_examples=10, deadline=None)
@given(st.floats(0.0, 0.5), st.integers(0, 2**31))
def test_allocation_never_drops_below_min_share(min_share, seed):
    bandit = ThompsonBandit(["a", "b"], min_share=min_share, seed=seed)
    for _ in range(50):
        bandit.update("a", 1.0)
        bandit.update("b", 0.0)
    alloc = bandit.allocation(2000)
    assert alloc["b"] >= min_share - 1e-12
    assert alloc["a"] >= alloc["b"]


def test_gaussian_model_prefers_higher_mean_revenue():
    rng = np.random.default_rng(4)
    bandit = ThompsonBandit(["low", "high"], min_share=0.05, model="gaussian", seed=5)
    means = {"low": 10.0, "high": 12.0}
    for _ in range(1500):
        arm = bandit.choose()
        bandit.update(arm, rng.normal(means[arm], 5.0))
    assert bandit.pulls["high"] > 2 * bandit.pulls["low"]
    assert bandit.means()["high"] == pytest.approx(12.0, abs=0.5)


def test_state_round_trips_through_json():
    bandit = _run(ThompsonBandit(["a", "b"], min_share=0.1, seed=6), {"a": 0.2, "b": 0.4}, 200)
    again = ThompsonBandit.from_state(json.loads(json.dumps(bandit.state)))
    assert again.pulls == bandit.pulls
    assert again.means() == bandit.means()


def test_fractional_rewards_update_the_beta_posterior():
    bandit = ThompsonBandit(["a", "b"])
    bandit.update("a", 0.25).update("a", 0.75)
    assert bandit.means()["a"] == pytest.approx((1 + 1.0) / (2 + 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arms": ["a"]}, "at least 2 distinct"),
        ({"arms": ["a", "a"]}, "at least 2 distinct"),
        ({"arms": ["a", "b", "c"], "min_share": 0.4}, "min_share"),
        ({"arms": ["a", "b"], "model": "poisson"}, "model"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        ThompsonBandit(**kwargs)


def test_bad_rewards_are_rejected():
    bandit = ThompsonBandit(["a", "b"])
    with pytest.raises(ValidationError, match="unknown arm 'z'"):
        bandit.update("z", 1.0)
    with pytest.raises(ValidationError, match="model='gaussian'"):
        bandit.update("a", 3.0)
