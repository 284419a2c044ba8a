"""The contract of a stream change detector, River's: feed values one at a time, read a flag.

A detector sees one value per `update` (a metric, a feature value, or 0/1
for a wrong/right prediction once its label arrives), updates its state in
place, returns itself, and raises `drift_detected` on the update where it
decides that the stream has changed. After a detection it starts afresh on
the next update, as River's detectors do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from loopstack.core.errors import ValidationError


@runtime_checkable
class ChangeDetector(Protocol):
    """Anything with River's `update(x) -> self` and `drift_detected`.

    loopstack's detectors also have ``update_many(values) -> positions``: `update` for each value in
    order, with the same detections and end state, for a fraction of the per-value cost.
    """

    drift_detected: bool

    def update(self, x: float) -> ChangeDetector:
        """Take one value; set `drift_detected` if the stream changed here."""
        ...


def detect(detector: ChangeDetector, stream: Iterable[float]) -> list[int]:
    """Positions in `stream` where `detector` signalled a change.

    Examples
    --------
    >>> from loopstack.drift import PageHinkley
    >>> detect(PageHinkley(), [0.0] * 500 + [5.0] * 100)
    [510]
    """
    update_many = getattr(detector, "update_many", None)
    if update_many is not None:  # loopstack's own detectors: the same detections, without a call per value
        return list(update_many(stream))
    found = []
    for position, value in enumerate(stream):
        if detector.update(float(value)).drift_detected:
            found.append(position)
    return found


def finite_values(values: Iterable[float], detector: str) -> list[float]:
    """`values` as floats, all of them refused when one is NaN or infinite (see `finite`): a batch is
    taken whole or not at all."""
    floats = [float(x) for x in values]
    if not all(map(math.isfinite, floats)):
        finite(next(x for x in floats if not math.isfinite(x)), detector)
    return floats


def finite(x: float, detector: str) -> float:
    """`x` as a float, refused when NaN or infinite: one such value would make a running mean NaN for good."""
    value = float(x)
    if not math.isfinite(value):
        raise ValidationError(f"{detector}.update({value}): stream values must be finite numbers; drop or fill "
                              "missing values before the detector")
    return value
