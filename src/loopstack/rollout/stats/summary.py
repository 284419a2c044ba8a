"""Sufficient statistics of one variant's metric: count, mean and variance.

Every test in `loopstack.rollout.stats` works on these three numbers rather
than on raw rows, because a server can keep them per variant in O(1) memory,
merge them across processes and windows, and a database can compute them
with one ``GROUP BY``. Proportions are means of 0/1 outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError


@dataclass(frozen=True)
class Summary:
    """Count, mean and (unbiased, ``ddof=1``) variance of one variant's metric.

    Parameters
    ----------
    n : int
        Number of units (users, requests) observed.
    mean : float
        Mean of the metric per unit; a rate for a 0/1 metric.
    var : float
        Sample variance per unit with ``ddof=1``.

    Examples
    --------
    >>> s = Summary.from_values([1.0, 2.0, 3.0])
    >>> s.n, s.mean, s.var
    (3, 2.0, 1.0)
    >>> Summary.from_proportion(30, 100).mean
    0.3
    >>> s.merge(Summary.from_values([4.0])).mean
    2.5
    """

    n: int
    mean: float
    var: float

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValidationError(f"Summary.n must be >= 0, got {self.n}; pass the number of units observed.")
        if not np.isfinite(self.mean) or not np.isfinite(self.var) or self.var < 0:
            raise ValidationError(
                f"Summary needs a finite mean and a variance >= 0, got mean={self.mean}, var={self.var}."
            )

    @classmethod
    def from_values(cls, values: Any) -> Summary:
        """Summarise an array of per-unit values (NaN is not allowed)."""
        x = np.asarray(values, dtype=float).ravel()
        if np.isnan(x).any():
            raise ValidationError("Summary.from_values got NaN values; drop or impute them before summarising.")
        n = int(x.size)
        if n == 0:
            return cls(0, 0.0, 0.0)
        var = float(x.var(ddof=1)) if n > 1 else 0.0
        return cls(n, float(x.mean()), var)

    @classmethod
    def from_proportion(cls, successes: int, n: int) -> Summary:
        """Summarise ``successes`` out of ``n`` 0/1 outcomes."""
        if not 0 <= successes <= n:
            raise ValidationError(f"need 0 <= successes <= n, got successes={successes}, n={n}.")
        if n == 0:
            return cls(0, 0.0, 0.0)
        p = successes / n
        var = p * (1 - p) * n / (n - 1) if n > 1 else 0.0
        return cls(int(n), p, var)

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> Summary:
        """Build from a count, a sum and a sum of squares (what a SQL ``GROUP BY`` gives)."""
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = total / n
        var = max(total_sq - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
        return cls(int(n), float(mean), float(var))

    @property
    def total(self) -> float:
        """Sum of the metric over units."""
        return self.n * self.mean

    @property
    def sem(self) -> float:
        """Standard error of the mean (infinite when n == 0)."""
        return float(np.sqrt(self.var / self.n)) if self.n else float("inf")

    def merge(self, other: Summary) -> Summary:
        """Combine two disjoint sets of units (Chan et al.'s parallel update)."""
        n = self.n + other.n
        if n == 0:
            return Summary(0, 0.0, 0.0)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.var * max(self.n - 1, 0) + other.var * max(other.n - 1, 0) + delta**2 * self.n * other.n / n
        return Summary(n, float(mean), float(m2 / (n - 1)) if n > 1 else 0.0)

    def to_dict(self) -> dict[str, float]:
        """Plain JSON-able record."""
        return {"n": self.n, "mean": self.mean, "var": self.var}


def finite_or_none(value: float) -> float | None:
    """`value` as a float, or None where it is NaN or infinite.

    Records for event payloads go through this: JSON has no NaN or Infinity, and PostgreSQL's JSON
    type refuses the tokens Python writes for them. None is the package's word for a number that is
    undefined (a lift over a control mean of 0) or unbounded (an interval before there is data), as
    in drift results and registry metrics.

    Examples
    --------
    >>> finite_or_none(0.5), finite_or_none(float("nan")), finite_or_none(float("-inf"))
    (0.5, None, None)
    """
    return float(value) if math.isfinite(value) else None
