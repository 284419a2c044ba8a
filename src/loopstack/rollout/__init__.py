"""Safe rollouts: traffic assignment, bandits, canary guardrails and experiment statistics.

The parts here are pure objects with no server or database behind them, so
the serving layer, the loop engine and offline simulations all use the same
code:

- `VariantAssigner`: sticky A/B assignment with GrowthBook's hashing.
- `ThompsonBandit`: Thompson sampling with a minimum exploration share.
- `CanaryAnalysis`: advance / hold / roll back / promote decisions with evidence.
- `stats`: power, tests, CUPED, SRM, sequential tests, corrections, verdicts.

Examples
--------
>>> from loopstack.rollout import VariantAssigner, stats
>>> VariantAssigner("exp", ["control", "treatment"]).assign("user-1") in ("control", "treatment")
True
"""

from loopstack.rollout import stats
from loopstack.rollout.assignment import (
    VariantAssigner,
    bucket_ranges,
    choose_variation,
    fnv1a32,
    gb_hash,
    in_namespace,
)
from loopstack.rollout.bandit import ThompsonBandit
from loopstack.rollout.guardrails import CanaryAnalysis, CanaryPolicy, Decision, VariantStats

__all__ = [
    "stats",
    # assignment
    "VariantAssigner",
    "gb_hash",
    "fnv1a32",
    "bucket_ranges",
    "choose_variation",
    "in_namespace",
    # bandit
    "ThompsonBandit",
    # canary
    "CanaryAnalysis",
    "CanaryPolicy",
    "Decision",
    "VariantStats",
]
