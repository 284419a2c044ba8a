"""Multiple-testing corrections across metrics or subgroups.

An experiment with ten metrics at alpha = 0.05 has a 40 % chance of at least
one false "significant" result. Holm's step-down method controls the
family-wise error rate (the chance of any false positive) and is uniformly
more powerful than Bonferroni; Benjamini-Hochberg controls the false discovery
rate (the expected share of false positives among the discoveries), the right
choice for exploratory breakdowns with many subgroups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from loopstack.core.errors import ValidationError

Method = Literal["holm", "bh", "none"]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (family-wise error rate).

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = _as_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    return _unsort(np.minimum(stepped, 1.0), order)


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate).

    Examples
    --------
    >>> [round(x, 4) for x in benjamini_hochberg([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    p = _as_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")[::-1]
    ranks = m - np.arange(m)  # ranks of the sorted p-values, largest first
    stepped = np.minimum.accumulate(p[order] * m / ranks)
    return _unsort(np.minimum(stepped, 1.0), order)


def adjust(p_values: Sequence[float], method: Method = "holm") -> list[float]:
    """Adjust p-values with ``"holm"``, ``"bh"`` (Benjamini-Hochberg) or ``"none"``.

    Examples
    --------
    >>> adjust([0.02, 0.5], "none")
    [0.02, 0.5]
    """
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    if method == "none":
        return [float(x) for x in _as_array(p_values)]
    raise ValidationError(f"unknown correction {method!r}; use 'holm', 'bh' or 'none'.")


def _as_array(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=float).ravel()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValidationError(f"p-values must lie in [0, 1], got {p.tolist()}.")
    return p


def _unsort(values: np.ndarray, order: np.ndarray) -> list[float]:
    out = np.empty_like(values)
    out[order] = values
    return [float(x) for x in out]


__all__ = ["Method", "adjust", "benjamini_hochberg", "holm"]
