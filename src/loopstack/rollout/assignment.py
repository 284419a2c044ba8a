"""Sticky A/B assignment with GrowthBook's published hashing.

A unit (a user id) is hashed with the experiment's seed to a number in [0, 1);
each variant owns a range of that interval sized by its weight and shrunk by
the experiment's coverage; the unit gets the variant whose range holds its
number, or none. The hash is FNV-1a 32-bit over the string's UTF-16 code
units, in GrowthBook's "version 2" form ``fnv(str(fnv(seed + id))) % 10000 / 10000``
(version 1, ``fnv(id + seed) % 1000 / 1000``, is kept for old experiments and
namespaces). This is the scheme every GrowthBook SDK implements and checks
against the shared ``cases.json``; ``tests/rollout`` runs the same cases, so a
front end that assigns users with a GrowthBook SDK and this server agree on
every user's variant.

Being a pure function of (seed, id), assignment needs no storage, is the same
in every process and release, and changing one experiment's seed gives a split
independent of every other experiment's.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError

_OFFSET = 0x811C9DC5
_PRIME = 0x01000193
_MASK = 0xFFFFFFFF

Range = tuple[float, float]


def fnv1a32(text: str, state: int = _OFFSET) -> int:
    """FNV-1a 32-bit hash of ``text``'s UTF-16 code units (as JavaScript's ``charCodeAt`` sees them).

    Examples
    --------
    >>> fnv1a32("")
    2166136261
    >>> fnv1a32("a")
    3826002220
    """
    if text.isascii():  # the common case: code points are the UTF-16 units
        units: Any = map(ord, text)
    else:
        units = array("H", text.encode("utf-16-le"))
        if sys.byteorder == "big":
            units.byteswap()
    prime, mask = _PRIME, _MASK  # locals: this loop is the hot path of per-request assignment
    for unit in units:
        state = ((state ^ unit) * prime) & mask
    return state


def gb_hash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook's hash of ``value`` under ``seed`` to [0, 1); None for an unknown version.

    Examples
    --------
    >>> gb_hash("seed", "a", 2)
    0.0505
    >>> gb_hash("", "a", 1)
    0.22
    """
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def equal_weights(n: int) -> list[float]:
    """``n`` equal weights summing to 1 (empty for ``n <= 0``)."""
    return [1 / n] * n if n > 0 else []


def bucket_ranges(num_variations: int, coverage: float = 1.0, weights: Sequence[float] | None = None) -> list[Range]:
    """Each variant's [start, end) range, exactly as GrowthBook's ``getBucketRanges``.

    Coverage is clipped to [0, 1]; weights of the wrong length or not summing
    to 1 +/- 0.01 fall back to equal weights (GrowthBook's lenient behaviour;
    `VariantAssigner` rejects such input instead).

    Examples
    --------
    >>> bucket_ranges(2, 0.5)
    [(0.0, 0.25), (0.5, 0.75)]
    """
    coverage = min(max(coverage, 0.0), 1.0)
    equal = equal_weights(num_variations)
    chosen = list(weights) if weights else equal
    if len(chosen) != num_variations or not 0.99 <= sum(chosen) <= 1.01:
        chosen = equal
    ranges, cumulative = [], 0.0
    for w in chosen:
        start = cumulative
        cumulative += w
        ranges.append((float(start), float(start + coverage * w)))
    return ranges


def choose_variation(n: float, ranges: Sequence[Range]) -> int:
    """Index of the range holding ``n`` (start inclusive, end exclusive), or -1.

    Examples
    --------
    >>> choose_variation(0.4, [(0, 0.25), (0.5, 0.75)])
    -1
    """
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(unit_id: str, namespace: tuple[str, float, float]) -> bool:
    """Whether ``unit_id`` falls in a namespace slice ``(name, start, end)`` (hash version 1, as GrowthBook).

    Namespaces keep mutually exclusive experiments apart: give each a
    disjoint slice of the same namespace name.

    Examples
    --------
    >>> in_namespace("1", ("namespace1", 0.4, 1.0))
    True
    """
    name, start, end = namespace
    n = gb_hash("__" + name, unit_id, 1)
    return n is not None and start <= n < end


def unit_key(unit_id: Any) -> str | None:
    """The string GrowthBook would hash for an attribute value; None when it is missing or empty.

    Integral floats print without a fraction, as JavaScript's ``String(1.0)`` does.

    Examples
    --------
    >>> unit_key(123), unit_key(2.0), unit_key(""), unit_key(None)
    ('123', '2', None, None)
    """
    if unit_id is None or unit_id == "":
        return None
    if isinstance(unit_id, bool):
        return "true" if unit_id else "false"
    if isinstance(unit_id, float) and unit_id.is_integer():
        return str(int(unit_id))
    return str(unit_id)


@dataclass(frozen=True)
class VariantAssigner:
    """Sticky assignment of units to the variants of one experiment.

    Parameters
    ----------
    key : str
        The experiment key; also the hash seed unless ``seed`` is given.
    variants : sequence of str
        Variant names, control first.
    weights : sequence of float, optional
        Traffic share per variant, summing to 1; equal by default.
    coverage : float
        Share of units that enter the experiment at all (others get None).
    seed : str, optional
        Hash seed; a new seed reshuffles every unit independently of the old split.
    hash_version : int
        2 (default, GrowthBook's unbiased hash) or 1 (legacy).
    namespace : (str, float, float), optional
        Only units whose namespace hash falls in [start, end) take part.
    ranges : sequence of (float, float), optional
        Explicit bucket ranges; override ``weights`` and ``coverage``.

    Examples
    --------
    >>> ab = VariantAssigner("checkout-v2", ["control", "treatment"], weights=[0.5, 0.5])
    >>> ab.assign("user-42") == ab.assign("user-42")
    True
    >>> VariantAssigner("key", ["a", "b"], seed="foo").assign("1")
    'b'
    """

    key: str
    variants: Sequence[str]
    weights: Sequence[float] | None = None
    coverage: float = 1.0
    seed: str | None = None
    hash_version: int = 2
    namespace: tuple[str, float, float] | None = None
    ranges: Sequence[Range] | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @cached_property
    def bucket_ranges(self) -> list[Range]:
        """The [start, end) range each variant owns."""
        if self.ranges is not None:
            return [(float(a), float(b)) for a, b in self.ranges]
        return bucket_ranges(len(self.variants), self.coverage, self.weights)

    def bucket(self, unit_id: Any) -> float | None:
        """The unit's hash in [0, 1), or None when it has no usable id."""
        key = unit_key(unit_id)
        return None if key is None else gb_hash(self.seed or self.key, key, self.hash_version)

    def assign_index(self, unit_id: Any) -> int:
        """Index of the unit's variant, or -1 when it is not in the experiment."""
        key = unit_id if type(unit_id) is str and unit_id else unit_key(unit_id)
        if key is None or (self.namespace is not None and not in_namespace(key, self.namespace)):
            return -1
        n = gb_hash(self.seed or self.key, key, self.hash_version)
        return -1 if n is None else choose_variation(n, self.bucket_ranges)

    def assign(self, unit_id: Any) -> str | None:
        """Name of the unit's variant, or None when it is not in the experiment."""
        index = self.assign_index(unit_id)
        return None if index < 0 else self.variants[index]

    def assign_many(self, unit_ids: Sequence[Any]) -> np.ndarray:
        """Variant indices (-1 = not in the experiment) for many units at once, vectorised with NumPy.

        Examples
        --------
        >>> ab = VariantAssigner("exp", ["a", "b", "c"])
        >>> ids = [f"u{i}" for i in range(5)]
        >>> ab.assign_many(ids).tolist() == [ab.assign_index(u) for u in ids]
        True
        """
        from loopstack.rollout._hashing import gb_hash_many, in_namespace_many

        keys = [unit_key(u) for u in unit_ids]
        present = np.array([k is not None for k in keys], dtype=bool)
        values = [k or "" for k in keys]
        n = gb_hash_many(self.seed or self.key, values, self.hash_version)
        out = np.full(len(values), -1, dtype=np.int64)
        for i, (start, end) in reversed(list(enumerate(self.bucket_ranges))):
            out[(n >= start) & (n < end)] = i  # reversed: the first matching range wins, as in choose_variation
        if self.namespace is not None:
            present &= in_namespace_many(values, self.namespace)
        out[~present] = -1
        return out


WEIGHT_TOLERANCE = 1e-6


def _weights_ok(weights: Sequence[float], n_variants: int) -> bool:
    """One finite, non-negative weight per variant summing to 1: a negative weight gave a backwards bucket
    range and a sum of 0.995 left 0.5 % of units silently unassigned, where the docs promise an error."""
    values = [float(w) for w in weights]
    if len(values) != n_variants or not all(math.isfinite(w) and w >= 0 for w in values):
        return False
    return abs(math.fsum(values) - 1) <= WEIGHT_TOLERANCE


def _validate(a: VariantAssigner) -> None:
    name = f"experiment {a.key!r}"
    if len(a.variants) < 2:
        raise ValidationError(f"{name} needs at least 2 variants, got {list(a.variants)}.")
    if a.hash_version not in (1, 2):
        raise ValidationError(f"{name}: hash_version must be 1 or 2, got {a.hash_version}.")
    if not 0 <= a.coverage <= 1:
        raise ValidationError(f"{name}: coverage must be in [0, 1], got {a.coverage}.")
    if a.weights is not None and not _weights_ok(a.weights, len(a.variants)):
        raise ValidationError(
            f"{name}: weights {list(a.weights)} must give one weight per variant ({len(a.variants)}), each >= 0, "
            f"summing to 1 (within {WEIGHT_TOLERANCE:g}); rescale them, e.g. w / sum(w)."
        )
    if a.ranges is not None and len(a.ranges) != len(a.variants):
        raise ValidationError(f"{name}: ranges {list(a.ranges)} must give one range per variant.")


__all__ = [
    "VariantAssigner",
    "bucket_ranges",
    "choose_variation",
    "equal_weights",
    "fnv1a32",
    "gb_hash",
    "in_namespace",
    "unit_key",
]
