"""Synthetic card transactions: cards, a daily and weekly rhythm, a drift mid-way and a concept change.

The world has `Scenario.days` days. Every card has a spending level and an
activity rate; transactions follow a daily cycle (quiet nights, busy lunch
and evening) and a weekly one (busier weekends). From `drift_day` on:

- data drift: a holiday-season spending mix (larger amounts, riskier
  merchants, more travel) ramps in over three days;
- concept change: a batch of compromised cards starts transacting in bursts,
  and fraud moves from risky merchants at night to those cards' small,
  daytime "card testing" purchases. A model trained on the old pattern loses
  much of its ranking power.

Card features (7-day average amount and count) are daily snapshots, as a
nightly batch job would compute them; a transaction sees the snapshot of the
day before, which is exactly what a point-in-time join returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopstack.demo.config import Scenario

START = np.datetime64("2026-01-05T00:00:00")  # a Monday
DAY_S = 86_400


def day_start(day: int) -> Any:
    """The timestamp at which `day` begins."""
    return START + np.timedelta64(day * DAY_S, "s")


def generate(scenario: Scenario) -> tuple[Any, Any]:
    """Transactions (with true labels and rules-engine flags) and daily card snapshots.

    Examples
    --------
    >>> tx, cards = generate(Scenario(rows=6_000))
    >>> {"tx_id", "card_id", "avg_amount_7d", "is_fraud", "rule_flag"} <= set(tx.columns)
    True
    >>> bool(tx.event_timestamp.is_monotonic_increasing), list(cards.columns)[:2]
    (True, ['card_id', 'event_timestamp'])
    """
    import pandas as pd

    s = scenario
    rng = np.random.default_rng(s.seed)
    n_cards = max(150, s.tx_per_day)
    level = rng.lognormal(3.4, 0.5, n_cards)  # a card's typical amount
    activity = rng.gamma(2.0, 1.0, n_cards)
    compromised = rng.random(n_cards) < 0.05
    frames = []
    for day in range(s.days):
        ramp = float(np.clip((day - s.drift_day + 1) / 3, 0.0, 1.0))
        weights = activity * np.where(compromised & (ramp > 0), 1 + 5 * ramp, 1.0)
        weekend = 1.25 if day % 7 in (5, 6) else 1.0
        n = rng.poisson(s.tx_per_day * weekend * weights.sum() / activity.sum() / 1.07)
        cards = rng.choice(n_cards, size=n, p=weights / weights.sum())
        hour = rng.choice(24, size=n, p=_HOURS)
        seconds = np.sort(hour * 3600 + rng.integers(0, 3600, n))
        hour = seconds // 3600
        amount = level[cards] * rng.lognormal(0.0, 0.7, n) * (1 + 0.8 * ramp)
        testing = compromised[cards] & (rng.random(n) < 0.5 * ramp)  # tiny probing purchases
        amount = np.where(testing, rng.uniform(1, 12, n), amount)
        frames.append(pd.DataFrame({
            "day": day,
            "event_timestamp": day_start(day) + seconds.astype("timedelta64[s]"),
            "card_id": cards.astype("int64") + 1,
            "amount": np.round(amount, 2),
            "hour": hour.astype("int64"),
            "merchant_risk": rng.beta(2 + 1.5 * ramp, 8 - 2 * ramp, n),
            "distance_km": rng.exponential(12 + 25 * ramp, n),
            "_ramp": ramp,
            "_compromised": compromised[cards],
            "_testing": testing,
        }))
    tx = pd.concat(frames, ignore_index=True)
    tx.insert(0, "tx_id", np.arange(len(tx), dtype="int64"))
    snapshots = card_snapshots(tx, n_cards, s.days)
    tx = _join_previous_snapshot(tx, snapshots)
    tx["is_fraud"] = _labels(tx, rng)
    tx["rule_flag"] = ((tx.merchant_risk > 0.42) | (tx.amount > 3.5 * tx.avg_amount_7d.fillna(1e9))).astype("int64")
    return tx.drop(columns=["_ramp", "_compromised", "_testing"]), snapshots


# a daily cycle: quiet nights, a lunch peak and a larger evening peak
_HOURS = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 9, 8, 6, 4, 3], dtype=float)
_HOURS /= _HOURS.sum()


def card_snapshots(tx: Any, n_cards: int, days: int) -> Any:
    """Per card and day, the 7-day amount average and count, stamped at the end of the day."""
    import pandas as pd

    counts = np.zeros((n_cards + 1, days))
    sums = np.zeros((n_cards + 1, days))
    np.add.at(counts, (tx.card_id.to_numpy(), tx.day.to_numpy()), 1)
    np.add.at(sums, (tx.card_id.to_numpy(), tx.day.to_numpy()), tx.amount.to_numpy())
    count7, sum7 = _rolling(counts, 7), _rolling(sums, 7)
    card, day = np.nonzero(count7)
    stamp = np.array([day_start(int(d) + 1) - np.timedelta64(1, "s") for d in range(days)])
    return pd.DataFrame({
        "card_id": card.astype("int64"),
        "event_timestamp": stamp[day],
        "avg_amount_7d": np.round(sum7[card, day] / count7[card, day], 2),
        "tx_count_7d": count7[card, day].astype("int64"),
        "day": day.astype("int64"),
    })


def _rolling(matrix: np.ndarray, width: int) -> np.ndarray:
    cumulative = np.cumsum(matrix, axis=1)
    shifted = np.zeros_like(cumulative)
    shifted[:, width:] = cumulative[:, :-width]
    return cumulative - shifted


def _join_previous_snapshot(tx: Any, snapshots: Any) -> Any:
    """Each transaction gets its card's snapshot from the end of the previous day (none on day 0)."""
    keyed = snapshots.assign(day=snapshots.day + 1)[["card_id", "day", "avg_amount_7d", "tx_count_7d"]]
    joined = tx.merge(keyed, on=["card_id", "day"], how="left")
    joined["tx_count_7d"] = joined.tx_count_7d.astype("Int64")
    return joined


def _labels(tx: Any, rng: np.random.Generator) -> np.ndarray:
    night = ((tx.hour < 6) | (tx.hour > 22)).to_numpy(float)
    count = tx.tx_count_7d.astype(float).fillna(0).to_numpy()
    ratio = np.log1p(tx.amount.to_numpy() / tx.avg_amount_7d.fillna(tx.amount).to_numpy())
    before = -6.6 + 7.0 * tx.merchant_risk.to_numpy() + 0.05 * tx.distance_km.to_numpy() + 2.0 * night + 0.8 * ratio
    after = -5.4 + 3.5 * tx._testing.to_numpy(float) + 0.06 * count + 1.0 * tx._compromised.to_numpy(float) \
        + 1.5 * tx.merchant_risk.to_numpy()
    ramp = tx._ramp.to_numpy()
    logit = (1 - ramp) * before + ramp * after
    return (rng.random(len(tx)) < 1 / (1 + np.exp(-logit))).astype("int64")
