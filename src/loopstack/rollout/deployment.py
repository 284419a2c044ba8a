"""A deployment: an endpoint, its variants, and how traffic is split between them.

`Deployment` is a frozen record read from the ``deployments`` table; every
change goes through `loopstack.rollout.deployments.Deployments`, which writes
a new version and an event. The record holds only data; `traffic` turns it
into the split a server applies.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from loopstack.core.errors import ValidationError

Strategy = Literal["single", "blue_green", "canary", "ab", "shadow", "bandit"]
STRATEGIES: tuple[str, ...] = ("single", "blue_green", "canary", "ab", "shadow", "bandit")
DEFAULT_GUARDRAILS = ("error_rate", "latency_p99")
_ENDPOINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")  # \Z: "$" also matches before a final newline


@dataclass(frozen=True)
class Deployment:
    """One endpoint's variants and traffic strategy, at one version.

    Parameters
    ----------
    endpoint : str
        The name clients call (``POST /v1/endpoints/{endpoint}:predict``).
    strategy : str
        ``single`` (one variant), ``blue_green``, ``canary``, ``ab``, ``shadow`` or ``bandit``.
    variants : dict of str to str
        Variant name -> pinned model reference (``"fraud/3"``). Every variant is loaded by the server.
    champion : str
        The stable variant: it answers when no other rule applies and is what a rollback returns to.
    weights : dict of str to float
        Share of live traffic per variant (summing to 1); shadow variants get 0.
    challenger : str, optional
        The variant being tried (canary, shadow, blue-green's new side).
    shadow : tuple of str
        Variants that get a mirrored copy of every request; their answers are logged, never returned.
    previous : str, optional
        The last champion, kept loaded so that a rollback is instant.
    salt : str
        Hash seed for sticky assignment (canary, A/B); a new salt reshuffles units.
    steps : tuple of float
        Canary weights in order; promotion follows the last.
    step : int
        Index of the current canary step.
    primary_metric : str, optional
        What judges a canary: a scoring rule of each request's prediction against its feedback label
        (``brier``, ``log_loss``, ``accuracy``, ``squared_error``, ``absolute_error``), or the name of a
        metric carried by the feedback's value (``label_value``), e.g. ``conversion``.
    higher_is_better : bool
        Direction of the primary metric.
    guardrails : tuple of str
        Guardrail metrics checked by the rollout controller.
    policy : dict
        Extra `CanaryPolicy` settings (``min_requests_per_step``, ``alpha``, ...) or bandit settings.
    version : int
        Grows by one with every traffic change; servers reload when it moves.

    Examples
    --------
    >>> d = Deployment("fraud", "single", {"fraud/3": "fraud/3"}, "fraud/3", {"fraud/3": 1.0})
    >>> d.live_variants
    ['fraud/3']
    """

    endpoint: str
    strategy: str
    variants: dict[str, str]
    champion: str
    weights: dict[str, float]
    challenger: str | None = None
    shadow: tuple[str, ...] = ()
    previous: str | None = None
    salt: str = ""
    steps: tuple[float, ...] = ()
    step: int = 0
    primary_metric: str | None = None
    higher_is_better: bool = True
    guardrails: tuple[str, ...] = DEFAULT_GUARDRAILS
    policy: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    state: dict[str, Any] = field(default_factory=dict, compare=False)
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shadow", tuple(self.shadow))
        object.__setattr__(self, "steps", tuple(float(s) for s in self.steps))
        object.__setattr__(self, "guardrails", tuple(self.guardrails))
        check(self)

    @property
    def live_variants(self) -> list[str]:
        """Variants that answer live traffic (weight > 0), champion first."""
        names = [self.champion, *(v for v in self.variants if v != self.champion)]
        return [v for v in names if self.weights.get(v, 0.0) > 0]

    @property
    def canary_weight(self) -> float:
        """The challenger's current share (0 without a challenger)."""
        return self.weights.get(self.challenger, 0.0) if self.challenger else 0.0

    def config(self) -> dict[str, Any]:
        """The JSON stored in the table's ``config`` column."""
        skip = {"endpoint", "strategy", "version", "state", "created_at", "updated_at"}
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Deployment:
        """Rebuild from a ``deployments`` table row."""
        known = {f.name for f in fields(cls)}
        config = {k: v for k, v in dict(row["config"]).items() if k in known}
        return cls(endpoint=row["endpoint"], strategy=row["strategy"], version=row["version"],
                   state=dict(row["state"] or {}), created_at=row["created_at"], updated_at=row["updated_at"],
                   **config)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-able (event payloads, ``deploy status --json``)."""
        return {"endpoint": self.endpoint, "strategy": self.strategy, "version": self.version, **self.config()}


def check(d: Deployment) -> None:
    """Reject an inconsistent deployment with a message naming the bad value."""
    where = f"deployment {d.endpoint!r}"
    if not _ENDPOINT.match(d.endpoint):
        raise ValidationError(
            f"endpoint name {d.endpoint!r} must be 1-128 letters, digits, '_', '.' or '-' (it appears in URLs)"
        )
    if d.strategy not in STRATEGIES:
        raise ValidationError(f"{where}: strategy {d.strategy!r} is not one of {STRATEGIES}")
    named = [d.champion, *(x for x in (d.challenger, d.previous) if x), *d.shadow, *d.weights]
    unknown = sorted({n for n in named if n not in d.variants})
    if unknown:
        raise ValidationError(f"{where}: {unknown} are not among its variants {sorted(d.variants)}")
    if not all(math.isfinite(w) and w >= 0 for w in d.weights.values()):  # NaN passes both checks below
        raise ValidationError(f"{where}: weights {d.weights} must be finite numbers >= 0 that sum to 1")
    if abs(sum(d.weights.values()) - 1) > 1e-9:
        raise ValidationError(f"{where}: weights {d.weights} must be >= 0 and sum to 1")


def normalize_steps(steps: Any) -> tuple[float, ...]:
    """Canary steps as fractions; percentages (any step > 1) are divided by 100 and a final 100 % dropped.

    The last step is followed by promotion, which is the 100 % step. A lone step of 1 is refused: it
    could be 1 % or all the traffic, and guessing wrong sends a challenger 100 times the traffic meant.

    Examples
    --------
    >>> normalize_steps([1, 5, 25, 50, 100])
    (0.01, 0.05, 0.25, 0.5)
    >>> normalize_steps([0.1, 0.5])
    (0.1, 0.5)
    """
    values = [float(s) for s in steps]
    if values == [1.0]:
        raise ValidationError("canary step 1 is ambiguous: write 0.01 (or 1 among percentages, e.g. [1, 100]) "
                              "for 1 % of the traffic, or 100 for all of it")
    if any(s > 1 for s in values):
        values = [s / 100 for s in values]
    increasing = all(a < b for a, b in itertools.pairwise(values))
    if not values or any(not 0 < s <= 1 for s in values) or not increasing:
        raise ValidationError(f"canary steps {list(steps)} must be strictly increasing percentages in (0, 100] "
                              "(or fractions in (0, 1]), e.g. [1, 5, 25, 50, 100]")
    if len(values) > 1 and values[-1] == 1.0:
        values = values[:-1]
    return tuple(values)


__all__ = ["DEFAULT_GUARDRAILS", "STRATEGIES", "Deployment", "Strategy", "normalize_steps"]
