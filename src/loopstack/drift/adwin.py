"""ADWIN, adaptive windowing (Bifet and Gavalda, 2007).

ADWIN keeps a window of recent values summarized in an exponential
histogram: row i holds at most `max_buckets` buckets of 2**i values each
(sum and sum of squared deviations), so a window of W values costs
O(max_buckets * log W) memory. Every `clock` updates it tries each split of
the window into an older part W0 and a newer part W1 and drops the oldest
bucket while the means of the two parts differ by more than the Bernstein
bound ``eps = sqrt(2 m v d) + 2/3 m d`` (v the window variance,
d = ln(2 ln W / delta), m the reciprocal harmonic size of the parts). A drop
is a detected change. Defaults are River's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from loopstack.core.errors import ConfigError
from loopstack.drift.base import finite, finite_values


class ADWIN:
    """Adaptive-window change detector for a stream of numbers.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> stream = [rng.gauss(0, 1) for _ in range(1000)] + [rng.gauss(2, 1) for _ in range(1000)]
    >>> detector = ADWIN()
    >>> hits = [i for i, x in enumerate(stream) if detector.update(x).drift_detected]
    >>> 1000 <= hits[0] < 1100
    True
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0 < delta < 1:
            raise ConfigError(f"ADWIN delta={delta} must be in (0, 1); 0.002 is usual")
        for name, value, least in (("clock", clock, 1), ("max_buckets", max_buckets, 2),
                                   ("min_window_length", min_window_length, 1), ("grace_period", grace_period, 0)):
            if not isinstance(value, numbers.Integral) or value < least:  # max_buckets=1: IndexError mid-stream
                raise ConfigError(f"ADWIN {name}={value!r} must be an integer >= {least}")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self._reset()

    def _reset(self) -> None:
        self.drift_detected = False
        self.width = 0
        self.total = 0.0
        self._m2 = 0.0  # sum of squared deviations from the window mean
        self._rows: list[list[tuple[float, float]]] = [[]]  # row i: buckets of 2**i values, oldest first
        self._tick = 0

    @property
    def estimation(self) -> float:
        """The mean of the current window."""
        return self.total / self.width if self.width else 0.0

    @property
    def variance(self) -> float:
        """The population variance of the current window."""
        return self._m2 / self.width if self.width else 0.0

    def update(self, x: float) -> ADWIN:
        """Add one value; shrink the window and flag a change if its two ends differ."""
        value = finite(x, "ADWIN")
        if self.drift_detected:
            self._reset()
        self._insert(value)
        self._tick += 1
        if self._tick % self.clock == 0 and self.width > self.grace_period:
            self.drift_detected = self._shrink()
        return self

    def update_many(self, values: Iterable[float]) -> list[int]:
        """`update` each value in order; the positions (in `values`) where a change was signalled.

        The insert runs on local variables, and the histogram is compressed only when its first row
        overflows (the only way any row can): the same arithmetic in the same order as `update`, so
        the same detections and end state, in 0.6 of the time (bench/stream_drift.py). A non-finite
        value refuses the whole batch.
        """
        xs = finite_values(values, "ADWIN")
        clock, grace_period, max_buckets = self.clock, self.grace_period, self.max_buckets
        detected, width, total, m2, tick = self.drift_detected, self.width, self.total, self._m2, self._tick
        newest = self._rows[0]
        found = []
        for position, x in enumerate(xs):
            if detected:
                self._reset()
                detected, width, total, m2, tick, newest = False, 0, 0.0, 0.0, 0, self._rows[0]
            if width:
                gap = x - total / width
                m2 += width * (gap * gap) / (width + 1)
            width += 1
            total += x
            newest.append((x, 0.0))
            if len(newest) > max_buckets:  # `_compress`'s first merge, for buckets of one value (exact)
                (u1, v1), (u2, v2) = newest[0], newest[1]
                del newest[:2]
                gap = u1 - u2
                if len(self._rows) == 1:
                    self._rows.append([])
                self._rows[1].append((u1 + u2, v1 + v2 + gap * gap / 2.0))
                self._compress(1)
            tick += 1
            if tick % clock == 0 and width > grace_period:
                self.width, self.total, self._m2 = width, total, m2
                detected = self._shrink()
                width, total, m2 = self.width, self.total, self._m2
                if detected:
                    found.append(position)
        self.drift_detected, self.width, self.total, self._m2, self._tick = detected, width, total, m2, tick
        return found

    def _insert(self, x: float) -> None:
        if self.width:
            mean = self.total / self.width
            self._m2 += self.width * _square(x - mean) / (self.width + 1)
        self.width += 1
        self.total += x
        self._rows[0].append((x, 0.0))
        self._compress()

    def _compress(self, level: int = 0) -> None:
        """Merge the two oldest buckets of row `level` into one of the next row while the row overflows, and
        so on up: a row gains at most one bucket at a time, so one merge per row is enough."""
        rows = self._rows
        while level < len(rows) and len(rows[level]) > self.max_buckets:
            (u1, v1), (u2, v2) = rows[level][0], rows[level][1]
            size = 2.0**level
            merged = (u1 + u2, v1 + v2 + size * size * _square(u1 / size - u2 / size) / (2 * size))
            del rows[level][:2]
            if level + 1 == len(rows):
                rows.append([])
            rows[level + 1].append(merged)
            level += 1

    def _shrink(self) -> bool:
        changed = False
        while self.width > self.grace_period and self._cut_found():
            self._drop_oldest()
            changed = True
        return changed

    def _cut_found(self) -> bool:
        """Whether some split into older W0 and newer W1 has means further apart than the bound.

        The bound's d and the window variance are the same for every split of one window, so they are
        computed once per look.
        """
        width, window_total, shortest = self.width, self.total, self.min_window_length
        d = math.log(2 * math.log(width) / self.delta)
        variance = self.variance
        n0, u0 = 0.0, 0.0
        for level in range(len(self._rows) - 1, -1, -1):
            size = 2.0**level
            for total, _ in self._rows[level]:
                n0 += size
                u0 += total
                n1 = width - n0
                if n1 < shortest:
                    return False
                if n0 >= shortest:
                    m = 1 / (n0 - shortest + 1) + 1 / (n1 - shortest + 1)
                    if abs(u0 / n0 - (window_total - u0) / n1) > math.sqrt(2 * m * variance * d) + 2 / 3 * m * d:
                        return True
        return False

    def _drop_oldest(self) -> None:
        level = len(self._rows) - 1
        total, m2 = self._rows[level].pop(0)
        size = 2.0**level
        self.width -= int(size)
        self.total -= total
        if self.width:
            mean = self.total / self.width
            self._m2 -= m2 + size * self.width * _square(total / size - mean) / (size + self.width)
        else:
            self._m2 = 0.0
        self._m2 = max(self._m2, 0.0)
        if not self._rows[level] and level > 0:
            self._rows.pop()


def _square(value: float) -> float:
    """``value * value``: a float product overflows to inf, as River's does, where ``** 2`` raises
    OverflowError (any |x| above about 1e154 crashed the detector)."""
    return value * value
