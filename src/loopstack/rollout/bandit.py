"""Thompson sampling over model variants, with a guaranteed exploration share.

Each request draws one sample from every arm's posterior for its mean reward
and goes to the arm with the largest draw, so an arm gets traffic in
proportion to the probability that it is the best (Thompson 1933; Agrawal and
Goyal 2012 for the regret bound). Rewards come from feedback: clicks,
conversions, or any score in [0, 1] for the Beta-Bernoulli model (fractional
rewards update the Beta posterior by their value, Agrawal and Goyal's
Bernoulli trick in expectation); unbounded rewards such as revenue use the
Gaussian model.

Pure Thompson sampling can starve an arm whose early rewards were unlucky,
and then the data can no longer correct the mistake; a drifting world makes
that worse. ``min_share`` keeps every arm at or above that share of traffic:
with probability ``k * min_share`` a request goes to a uniformly random arm.

The object is pure: no clock, no I/O. A server holds one per deployment and
persists `state` after updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from loopstack.core.errors import ValidationError

Model = Literal["bernoulli", "gaussian"]


class ThompsonBandit:
    """Thompson sampling bandit with a minimum exploration share per arm.

    Parameters
    ----------
    arms : sequence of str
        Arm (variant) names.
    min_share : float
        Every arm gets at least this share of choices; ``len(arms) * min_share`` must be <= 1.
    model : {"bernoulli", "gaussian"}
        Beta-Bernoulli for rewards in [0, 1], Normal for unbounded rewards.
    seed : int, optional
        Seed for the sampler, for reproducible simulations.

    Examples
    --------
    >>> bandit = ThompsonBandit(["a", "b"], min_share=0.05, seed=0)
    >>> world = np.random.default_rng(1)
    >>> for _ in range(2000):
    ...     arm = bandit.choose()
    ...     _ = bandit.update(arm, float(world.random() < (0.3 if arm == "b" else 0.1)))
    >>> best = max(bandit.arms, key=lambda a: bandit.pulls[a])
    >>> best, bandit.pulls["a"] >= 0.05 * 2000 * 0.8
    ('b', True)
    """

    def __init__(
        self,
        arms: Sequence[str],
        *,
        min_share: float = 0.05,
        model: Model = "bernoulli",
        seed: int | None = None,
    ) -> None:
        _validate(arms, min_share, model)
        self.arms = list(arms)
        self.min_share = float(min_share)
        self.model = model
        self._rng = np.random.default_rng(seed)
        self.pulls = dict.fromkeys(self.arms, 0)
        self.reward_sum = dict.fromkeys(self.arms, 0.0)
        self.reward_sq = dict.fromkeys(self.arms, 0.0)

    def choose(self) -> str:
        """Pick the arm for the next request."""
        k = len(self.arms)
        if self._rng.random() < k * self.min_share:
            return self.arms[int(self._rng.integers(k))]
        draws = self._sample(1)[0]
        return self.arms[int(np.argmax(draws))]

    def update(self, arm: str, reward: float) -> ThompsonBandit:
        """Record one reward for ``arm`` and return self."""
        if arm not in self.pulls:
            raise ValidationError(f"unknown arm {arm!r}; the bandit's arms are {self.arms}.")
        reward = float(reward)
        if not np.isfinite(reward) or (self.model == "bernoulli" and not 0 <= reward <= 1):
            raise ValidationError(
                f"reward {reward} for arm {arm!r} is not valid for the {self.model} model; "
                "bernoulli rewards lie in [0, 1], use model='gaussian' for unbounded rewards."
            )
        self.pulls[arm] += 1
        self.reward_sum[arm] += reward
        self.reward_sq[arm] += reward * reward
        return self

    def allocation(self, draws: int = 10_000) -> dict[str, float]:
        """Each arm's expected share of the next requests (Monte Carlo over the posterior).

        Useful to set static traffic weights for a period instead of choosing per request.

        Examples
        --------
        >>> b = ThompsonBandit(["a", "b"], min_share=0.1, seed=1)
        >>> round(sum(b.allocation().values()), 6)
        1.0
        """
        k = len(self.arms)
        wins = np.bincount(np.argmax(self._sample(draws), axis=1), minlength=k) / draws
        share = (1 - k * self.min_share) * wins + self.min_share
        return {arm: float(s) for arm, s in zip(self.arms, share, strict=True)}

    def means(self) -> dict[str, float]:
        """Posterior mean reward per arm."""
        if self.model == "bernoulli":
            return {a: (1 + self.reward_sum[a]) / (2 + self.pulls[a]) for a in self.arms}
        return {a: self.reward_sum[a] / self.pulls[a] if self.pulls[a] else 0.0 for a in self.arms}

    @property
    def state(self) -> dict[str, Any]:
        """Plain JSON-able state, for persistence and events."""
        return {
            "arms": self.arms,
            "min_share": self.min_share,
            "model": self.model,
            "pulls": dict(self.pulls),
            "reward_sum": dict(self.reward_sum),
            "reward_sq": dict(self.reward_sq),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], seed: int | None = None) -> ThompsonBandit:
        """Rebuild a bandit from `state`."""
        bandit = cls(state["arms"], min_share=state["min_share"], model=state["model"], seed=seed)
        bandit.pulls.update(state["pulls"])
        bandit.reward_sum.update(state["reward_sum"])
        bandit.reward_sq.update(state["reward_sq"])
        return bandit

    def _sample(self, size: int) -> np.ndarray:
        n = np.array([self.pulls[a] for a in self.arms], dtype=float)
        s = np.array([self.reward_sum[a] for a in self.arms], dtype=float)
        if self.model == "bernoulli":
            return self._rng.beta(1 + s, 1 + n - s, size=(size, len(self.arms)))
        sq = np.array([self.reward_sq[a] for a in self.arms], dtype=float)
        return self._rng.normal(*_normal_posterior(n, s, sq), size=(size, len(self.arms)))


def _normal_posterior(n: np.ndarray, s: np.ndarray, sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate posterior mean and sd of each arm's mean reward.

    A flat prior with the sample variance plugged in; arms with fewer than two
    rewards borrow the largest observed variance (or 1) so they are explored
    rather than trusted.
    """
    mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    var = np.divide(sq - n * mean**2, n - 1, out=np.full_like(s, np.nan), where=n > 1)
    known = var[np.isfinite(var)]
    fallback = float(known.max()) if known.size and known.max() > 0 else 1.0
    var = np.where(np.isfinite(var) & (var > 0), var, fallback)
    return mean, np.sqrt(var / np.maximum(n, 1))


def _validate(arms: Sequence[str], min_share: float, model: str) -> None:
    if len(arms) < 2 or len(set(arms)) != len(arms):
        raise ValidationError(f"a bandit needs at least 2 distinct arms, got {list(arms)}.")
    if not 0 <= min_share <= 1 / len(arms):
        raise ValidationError(
            f"min_share must be in [0, 1/{len(arms)}] for {len(arms)} arms, got {min_share}; "
            "every arm gets at least this share of traffic."
        )
    if model not in ("bernoulli", "gaussian"):
        raise ValidationError(f"model must be 'bernoulli' or 'gaussian', got {model!r}.")


__all__ = ["ThompsonBandit"]
