"""The feature store side of the demo: a card entity, a daily card-stats view, the warehouse folders.

The "nightly batch job" writes one Parquet file of card snapshots per day to
``data/card_stats/``; labelled transactions land in ``data/transactions/``
once their labels are known. Training reads the transactions and joins the
card features point-in-time (`get_historical_features`); serving reads them
from the online store, which `materialize_incremental` fills every night.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from loopstack.demo.config import CARD_FEATURES

CARD_STATS = "data/card_stats"
TRANSACTIONS = "data/transactions"
DEFINITIONS = "features.py"
DEFINITIONS_SOURCE = '''"""Feature definitions of the loopstack demo (`loopstack apply` registers them)."""

from loopstack.demo.features import definitions

card, card_stats = definitions()
'''


def definitions() -> list[Any]:
    """The card entity and its 7-day statistics view.

    Examples
    --------
    >>> [d.name for d in definitions()]
    ['card', 'card_stats']
    """
    from loopstack.features import Entity, FeatureView, Field, FileSource, Float64, Int64

    card = Entity(name="card", join_keys=["card_id"])
    stats = FeatureView(
        name="card_stats",
        entities=[card],
        ttl=timedelta(days=8),
        schema=[Field(name="avg_amount_7d", dtype=Float64), Field(name="tx_count_7d", dtype=Int64)],
        source=FileSource(path=CARD_STATS),
        owner="risk-team",
        tags={"demo": "fraud"},
    )
    return [card, stats]


def write_day(root: Path, folder: str, day: int, frame: Any) -> Path:
    """Write one day's rows as ``<folder>/day=NN.parquet`` (atomically, so readers never see half a file)."""
    target = root / folder / f"day={day:03d}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(target)
    return target


def write_snapshots(root: Path, snapshots: Any, days: range) -> None:
    """The nightly card-stats job for `days` (one file per day)."""
    for day in days:
        rows = snapshots[snapshots.day == day]
        if len(rows):
            write_day(root, CARD_STATS, day, rows.drop(columns=["day"]))


def online_features(store: Any, card_ids: Any, now: Any) -> Any:
    """Card features for a batch of requests, read in one call from the online store."""
    import numpy as np

    unique = np.unique(card_ids)
    response = store.get_online_features(CARD_FEATURES, {"card_id": unique.tolist()}, now=now)
    values = response.to_dict()
    index = np.searchsorted(unique, card_ids)
    return {
        name: np.array([np.nan if v is None else float(v) for v in values[name]])[index]
        for name in ("avg_amount_7d", "tx_count_7d")
    }
