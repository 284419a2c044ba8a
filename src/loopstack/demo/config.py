"""The demo's scenario: one object that says how big the world is and when things happen in it.

Every other module reads its numbers from `Scenario`, so a test can run the
same story on a smaller world by passing fewer rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FEATURES = ["amount", "hour", "merchant_risk", "distance_km", "avg_amount_7d", "tx_count_7d"]
CARD_FEATURES = ["card_stats:avg_amount_7d", "card_stats:tx_count_7d"]
MODEL = "fraud"
ENDPOINT = "fraud-endpoint"  # the deployment the world's traffic goes to
MONITOR = "transactions"


@dataclass(frozen=True)
class Scenario:
    """When the world changes, and how much traffic it sends.

    Parameters
    ----------
    rows
        Transactions over the whole period (about ``rows / days`` per day).
    days
        Length of the simulated period.
    history_days
        Days known before serving starts: the champion trains on them.
    drift_day
        First day of the data drift (new spending mix, compromised cards) and of the concept change.
    corrupt_day
        From this day the warehouse's labels come from the rules engine (a broken ETL),
        while the labels fed back to the server stay true.
    retrain_day
        The weekly retrain that runs on the corrupted labels (the second scenario).
    label_delay_days
        Days until a transaction's true label (a chargeback or its absence) is known.

    Examples
    --------
    >>> Scenario.for_rows(36_000).tx_per_day
    600
    """

    rows: int = 36_000
    days: int = 60
    history_days: int = 24
    drift_day: int = 34
    corrupt_day: int = 44
    retrain_day: int = 50
    label_delay_days: int = 1
    seed: int = 7

    @classmethod
    def for_rows(cls, rows: int, **overrides: Any) -> Scenario:
        """A scenario of `rows` transactions; the timeline stays the same."""
        return cls(rows=rows, **overrides)

    @classmethod
    def compact(cls, rows: int = 10_500) -> Scenario:
        """The same story on a shorter timeline (35 days) for tests."""
        return cls(rows=rows, days=35, history_days=16, drift_day=19, corrupt_day=23, retrain_day=29)

    @property
    def tx_per_day(self) -> int:
        return max(1, self.rows // self.days)

    @property
    def chunks_per_day(self) -> int:
        """Traffic is replayed in chunks (a quarter of a day), so a rollout can act within a day."""
        return 4

    @property
    def shadow_requests(self) -> int:
        """Requests the challenger scores in shadow before its canary starts."""
        return max(100, self.tx_per_day // 2)

    @property
    def canary_requests_per_step(self) -> int:
        """Canary requests per step (two days of traffic at the first step); labels lag a day, so
        a step also waits for labels of half as many requests to arrive during it."""
        return max(100, int(self.tx_per_day * 0.4))

    @property
    def canary_steps(self) -> tuple[float, ...]:
        return (0.2, 0.5)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
