"""Which variant answers a request: the traffic policy of one deployment version.

`TrafficRouter` is pure (no I/O), built once per deployment version and
asked once per request, so it costs a hash and a range lookup:

- single and blue-green: the champion takes everything (the old blue-green
  side stays loaded at weight 0, which is what makes the rollback instant);
- canary and A/B: sticky assignment by `VariantAssigner` on the request's
  unit id, seeded with the deployment's salt. Canary ranges are ordered
  champion first, so a growing canary only ever takes units from the
  champion: a unit that saw the canary keeps seeing it. Requests without a
  unit id are assigned at random with the same weights;
- bandit: Thompson sampling on the rewards the controller last stored;
- shadow: the champion answers and `shadows` lists the variants that get a
  mirrored copy.
"""

from __future__ import annotations

import random
from typing import Any

from loopstack.rollout.assignment import VariantAssigner, choose_variation, unit_key
from loopstack.rollout.deployment import Deployment


class TrafficRouter:
    """Per-request variant choice for one deployment version.

    Parameters
    ----------
    deployment : Deployment
        The version to route for.
    seed : int, optional
        Seed of the random choices (requests without a unit id, bandit draws), for tests.

    Examples
    --------
    >>> from loopstack.rollout.deployment import Deployment
    >>> d = Deployment("api", "canary", {"a": "m/1", "b": "m/2"}, "a", {"a": 0.9, "b": 0.1},
    ...                challenger="b", salt="s1", steps=(0.1, 0.5))
    >>> router = TrafficRouter(d)
    >>> router.choose("user-7") == router.choose("user-7")
    True
    >>> router.shadows
    ()
    """

    def __init__(self, deployment: Deployment, seed: int | None = None) -> None:
        self.deployment = deployment
        self.shadows: tuple[str, ...] = deployment.shadow
        self._random = random.Random(seed)
        live = deployment.live_variants
        self._only = live[0] if len(live) == 1 else None
        self._assigner: VariantAssigner | None = None
        self._bandit: Any = None
        if self._only is not None:
            return
        if deployment.strategy == "bandit" and deployment.state.get("bandit"):
            from loopstack.rollout.bandit import ThompsonBandit

            self._bandit = ThompsonBandit.from_state(deployment.state["bandit"], seed=seed)
        else:
            names = [deployment.champion, *(v for v in live if v != deployment.champion)]
            self._assigner = VariantAssigner(deployment.endpoint, names,
                                             weights=[deployment.weights[v] for v in names], seed=deployment.salt)

    @property
    def version(self) -> int:
        return self.deployment.version

    def choose(self, unit_id: Any = None) -> str:
        """The variant that answers a request from `unit_id` (random when None)."""
        if self._only is not None:
            return self._only
        if self._bandit is not None:
            return str(self._bandit.choose())
        assigner = self._assigner
        assert assigner is not None
        key = unit_key(unit_id)
        if key is None:
            index = choose_variation(self._random.random(), assigner.bucket_ranges)
        else:
            index = assigner.assign_index(key)
        # ranges cover [0, 1) in full; -1 only on float rounding at the very top
        return assigner.variants[index] if index >= 0 else self.deployment.champion


__all__ = ["TrafficRouter"]
