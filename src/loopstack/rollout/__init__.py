"""Safe rollouts: deployments, traffic strategies, canary guardrails and experiment statistics.

The statistical parts are pure objects with no server or database behind
them, so the serving layer, the rollout controller and offline simulations
all use the same code:

- `VariantAssigner`: sticky A/B assignment with GrowthBook's hashing.
- `ThompsonBandit`: Thompson sampling with a minimum exploration share.
- `CanaryAnalysis`: advance / hold / roll back / promote decisions with evidence.
- `stats`: power, tests, CUPED, SRM, sequential tests, corrections, verdicts.

On top of them, with the metadata DB and the server:

- `Deployments` (``project.deployments``): endpoints, their variants and
  strategy (blue-green, canary, A/B, shadow, bandit); every change is an event.
- `TrafficRouter`: picks the variant per request inside the server.
- `RolloutController`: reads the logs, runs the canary analysis, advances,
  rolls back or promotes.
- `compare_shadow`: agreement, output distribution and latency of a shadow.

Names load on first use, so importing the package (as the schema does for
its tables) costs nothing.

Examples
--------
>>> from loopstack.rollout import VariantAssigner, stats
>>> VariantAssigner("exp", ["control", "treatment"]).assign("user-1") in ("control", "treatment")
True
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

_EXPORTS = {
    "stats": "loopstack.rollout.stats",
    # assignment
    "VariantAssigner": "loopstack.rollout.assignment",
    "gb_hash": "loopstack.rollout.assignment",
    "fnv1a32": "loopstack.rollout.assignment",
    "bucket_ranges": "loopstack.rollout.assignment",
    "choose_variation": "loopstack.rollout.assignment",
    "in_namespace": "loopstack.rollout.assignment",
    # bandit
    "ThompsonBandit": "loopstack.rollout.bandit",
    # canary
    "CanaryAnalysis": "loopstack.rollout.guardrails",
    "CanaryPolicy": "loopstack.rollout.guardrails",
    "Decision": "loopstack.rollout.guardrails",
    "VariantStats": "loopstack.rollout.guardrails",
    # deployments
    "Deployment": "loopstack.rollout.deployment",
    "Deployments": "loopstack.rollout.deployments",
    "TrafficRouter": "loopstack.rollout.router",
    "RolloutController": "loopstack.rollout.controller",
    "SCORING_RULES": "loopstack.rollout.rewards",
    "compare_shadow": "loopstack.rollout.shadow",
    "TrafficLog": "loopstack.rollout.trafficlog",
    "read_traffic_log": "loopstack.rollout.trafficlog",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
