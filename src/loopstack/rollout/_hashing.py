"""Vectorised FNV-1a and GrowthBook hashes over many unit ids at once.

FNV-1a is a left fold, so ``hash(seed + id)`` continues from the state after
``seed``; NumPy folds one character column at a time over all ids, masking
ids that have already ended. Python strings are stored as code points; for
ids made only of characters in the Basic Multilingual Plane (every id in
practice) code points equal the UTF-16 code units JavaScript hashes. Ids with
characters beyond it take the scalar path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loopstack.rollout.assignment import _MASK, _OFFSET, _PRIME, fnv1a32

_POW10 = np.array([10**k for k in range(10)], dtype=np.uint64)


def fnv_many(values: Sequence[str], state: int = _OFFSET, suffix: str = "") -> np.ndarray:
    """FNV-1a of ``prefix + value + suffix`` per value, where ``state`` is the hash state after the prefix."""
    values = list(values)
    arr = np.asarray(values, dtype=str)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    width = arr.dtype.itemsize // 4
    codes = arr.view(np.uint32).reshape(arr.size, width).astype(np.uint64)
    lengths = np.char.str_len(arr)
    h = np.full(arr.size, state, dtype=np.uint64)
    for j in range(width):
        live = j < lengths
        h = np.where(live, ((h ^ codes[:, j]) * _PRIME) & _MASK, h)
    for unit in np.frombuffer(suffix.encode("utf-16-le"), dtype="<u2").tolist():
        h = ((h ^ np.uint64(unit)) * _PRIME) & _MASK
    # Scalar path for ids NumPy cannot hold as UTF-16 units: characters beyond the BMP
    # (JavaScript hashes their surrogate pairs) and trailing NULs (NumPy strips them).
    odd = (codes > 0xFFFF).any(axis=1) | (np.fromiter(map(len, values), dtype=np.int64, count=arr.size) != lengths)
    for i in np.flatnonzero(odd):
        h[i] = fnv1a32(values[i] + suffix, state)
    return h


def gb_hash_many(seed: str, values: Sequence[str], version: int = 2) -> np.ndarray:
    """`loopstack.rollout.assignment.gb_hash` over many values; NaN for an unknown version."""
    if version == 2:
        first = fnv_many(values, fnv1a32(seed))
        return (_fnv_of_decimal(first) % 10000).astype(float) / 10000
    if version == 1:
        return (fnv_many(values, suffix=seed) % 1000).astype(float) / 1000
    return np.full(len(values), np.nan)


def in_namespace_many(values: Sequence[str], namespace: tuple[str, float, float]) -> np.ndarray:
    """`loopstack.rollout.assignment.in_namespace` over many values."""
    name, start, end = namespace
    n = gb_hash_many("__" + name, values, 1)
    return (n >= start) & (n < end)


def _fnv_of_decimal(x: np.ndarray) -> np.ndarray:
    """FNV-1a of each uint32's decimal string, digit by digit from the most significant."""
    digits = np.ones(x.size, dtype=np.int64)
    for k in range(1, 10):
        digits += x >= _POW10[k]
    h = np.full(x.size, _OFFSET, dtype=np.uint64)
    for pos in range(10):
        live = pos < digits
        power = _POW10[np.clip(digits - 1 - pos, 0, 9)]
        digit = (x // power) % 10
        h = np.where(live, _fold_unit(h, digit + 48), h)
    return h


def _fold_unit(h: np.ndarray, unit: np.ndarray) -> np.ndarray:
    return ((h ^ unit.astype(np.uint64)) * _PRIME) & _MASK
