"""Page-Hinkley: a CUSUM of deviations from the running mean (Page, 1954).

It accumulates ``x_t - mean_t -/+ delta`` with a forgetting factor `alpha`
and signals when the accumulated sum climbs more than `threshold` above its
lowest point (an increase) or falls more than `threshold` below its highest
point (a decrease). Defaults are River's.
"""

from __future__ import annotations

import math
import numbers

from loopstack.core.errors import ConfigError
from loopstack.drift.base import finite

MODES = ("up", "down", "both")


class PageHinkley:
    """Page-Hinkley change detector over a stream of numbers.

    Examples
    --------
    >>> detector = PageHinkley()
    >>> [i for i, x in enumerate([1.0] * 300 + [3.0] * 100) if detector.update(x).drift_detected]
    [326]
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"PageHinkley mode={mode!r}; use one of {MODES}")
        if not isinstance(min_instances, numbers.Integral) or min_instances < 1:
            raise ConfigError(f"PageHinkley min_instances={min_instances!r} must be an integer >= 1; 30 is usual")
        if not threshold > 0:  # at 0 or below any wiggle of the sums is an alarm
            raise ConfigError(f"PageHinkley threshold={threshold!r} must be > 0; 50 is usual")
        if not 0 < alpha <= 1:  # above 1 the sums grow without bound; at 0 or below they keep only the last value
            raise ConfigError(f"PageHinkley alpha={alpha!r} must be in (0, 1]; 0.9999 is usual")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self._reset()

    def _reset(self) -> None:
        self.drift_detected = False
        self.n = 0
        self.mean = 0.0
        self._up = 0.0
        self._down = 0.0
        self._up_min = math.inf
        self._down_max = -math.inf

    def update(self, x: float) -> PageHinkley:
        """Take one value and test for a change in its mean."""
        x = finite(x, "PageHinkley")
        if self.drift_detected:
            self._reset()
        self.n += 1
        self.mean += (x - self.mean) / self.n
        deviation = x - self.mean
        self._up = self.alpha * self._up + deviation - self.delta
        self._down = self.alpha * self._down + deviation + self.delta
        self._up_min = min(self._up_min, self._up)
        self._down_max = max(self._down_max, self._down)
        if self.n >= self.min_instances:
            rise = self.mode != "down" and self._up - self._up_min > self.threshold
            fall = self.mode != "up" and self._down_max - self._down > self.threshold
            self.drift_detected = rise or fall
        return self
