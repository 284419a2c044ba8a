"""DDM, the Drift Detection Method (Gama et al., 2004), over a stream of prediction errors.

Each value is 1 for a wrong prediction and 0 for a right one. The error rate
p and its binomial standard deviation s = sqrt(p (1 - p) / n) are tracked;
the smallest p + s seen after a warm start is the baseline, and the stream
is said to drift when p + s rises above p_min + 3 s_min (a warning at 2).
Defaults are River's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from loopstack.core.errors import ConfigError, ValidationError


class DDM:
    """Drift Detection Method for a stream of 0/1 errors.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> errors = [rng.random() < 0.1 for _ in range(1000)] + [rng.random() < 0.5 for _ in range(500)]
    >>> detector = DDM()
    >>> hits = [i for i, e in enumerate(errors) if detector.update(e).drift_detected]
    >>> 1000 <= hits[0] < 1100
    True
    """

    def __init__(self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0) -> None:
        if not isinstance(warm_start, numbers.Integral) or warm_start < 0:  # a negative one silently meant 0
            raise ConfigError(f"DDM warm_start={warm_start!r} must be an integer >= 0; 30 is usual")
        if not 0 < warning_threshold < drift_threshold:  # else every value past the baseline warns or drifts
            raise ConfigError(
                f"DDM warning_threshold={warning_threshold!r} and drift_threshold={drift_threshold!r} must satisfy "
                "0 < warning_threshold < drift_threshold; 2 and 3 are usual"
            )
        self.warm_start = warm_start
        self.warning_threshold = warning_threshold
        self.drift_threshold = drift_threshold
        self._reset()

    def _reset(self) -> None:
        self.drift_detected = False
        self.warning_detected = False
        self.n = 0
        self.error_rate = 0.0
        self._p_min = math.inf
        self._s_min = math.inf

    def update(self, x: float) -> DDM:
        """Take one error indicator (1 wrong, 0 right)."""
        value = _indicator(x)
        if self.drift_detected:
            self._reset()
        self.n += 1
        self.error_rate += (value - self.error_rate) / self.n
        p = self.error_rate
        s = math.sqrt(p * (1 - p) / self.n)
        if self.n > self.warm_start:
            if p + s <= self._p_min + self._s_min:
                self._p_min, self._s_min = p, s
            self.drift_detected = p + s > self._p_min + self.drift_threshold * self._s_min
            warn = p + s > self._p_min + self.warning_threshold * self._s_min
            self.warning_detected = warn and not self.drift_detected
        return self

    def update_many(self, values: Iterable[float]) -> list[int]:
        """`update` each value in order; the positions (in `values`) where a drift was signalled.

        The same arithmetic in the same order as `update`, on local variables: the same detections and
        end state (warning included), in 0.7 of the time (bench/stream_drift.py). A value other than 0 or 1
        refuses the whole batch.
        """
        xs = [float(x) for x in values]
        wrong = next((x for x in xs if x != 0.0 and x != 1.0), None)  # NaN too
        if wrong is not None:
            _indicator(wrong)
        warm_start, warning, drift = self.warm_start, self.warning_threshold, self.drift_threshold
        detected, warned, n, p = self.drift_detected, self.warning_detected, self.n, self.error_rate
        p_min, s_min = self._p_min, self._s_min
        sqrt = math.sqrt
        found = []
        for position, value in enumerate(xs):
            if detected:
                detected, warned, n, p, p_min, s_min = False, False, 0, 0.0, math.inf, math.inf
            n += 1
            p += (value - p) / n
            s = sqrt(p * (1 - p) / n)
            if n > warm_start:
                if p + s <= p_min + s_min:
                    p_min, s_min = p, s
                detected = p + s > p_min + drift * s_min
                warned = p + s > p_min + warning * s_min and not detected
                if detected:
                    found.append(position)
        self.drift_detected, self.warning_detected, self.n, self.error_rate = detected, warned, n, p
        self._p_min, self._s_min = p_min, s_min
        return found


def _indicator(x: float) -> float:
    value = float(x)
    if value not in (0.0, 1.0):  # another number would give an error rate outside [0, 1], or a NaN
        raise ValidationError(f"DDM.update({value}): DDM takes 0 (right) or 1 (wrong) per prediction; "
                              "use ADWIN or PageHinkley for a stream of other numbers")
    return value
