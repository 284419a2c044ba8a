"""PCA reconstruction error: multivariate drift the way NannyML measures it.

Fit on the reference: frequency-encode categories, fill missing numbers
with the reference mean, standardize, and keep the principal components
that explain `n_components` of the variance (65% by default, NannyML's).
A chunk's score is the mean Euclidean distance between its standardized rows
and their projection back from the components. When the joint structure of
the data changes (a correlation breaks, a new cluster appears) the
components fit the new rows worse and the error rises, even when every
column's marginal distribution is unchanged.

Thresholds are learned from the reference itself: it is cut into chunks,
each chunk's error computed, and the band is mean +- 3 standard deviations
of those errors (NannyML's default). A current chunk outside the band drifted.
The spread of a chunk's mean error shrinks with the square root of its rows,
so the band is widened or narrowed for a current chunk of another size (the
uncertainty of the reference mean itself kept): a 100-row chunk judged by the
band of 500-row chunks drifted one time in four without any change.

At most one fewer component than columns is kept: keeping them all rebuilds
every row exactly, the error is rounding noise, and the detector is blind.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.drift.data import as_table
from loopstack.drift.encode import FrequencyEncoder


@dataclass(frozen=True)
class ReconstructionResult:
    """Reconstruction error of one chunk and whether it left the reference band."""

    error: float
    lower: float
    upper: float
    drifted: bool
    n_rows: int


@dataclass
class ReconstructionDrift:
    """NannyML-style data reconstruction drift with PCA.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=5000)
    >>> ref = {"a": a, "b": a + 0.2 * rng.normal(size=5000), "c": rng.normal(size=5000)}
    >>> detector = ReconstructionDrift(n_components=1).fit(ref)
    >>> a = rng.normal(size=1000)
    >>> detector.score({"a": a, "b": a + 0.2 * rng.normal(size=1000), "c": rng.normal(size=1000)}).drifted
    False
    >>> detector.score({"a": a, "b": -a + 0.2 * rng.normal(size=1000), "c": rng.normal(size=1000)}).drifted
    True
    """

    n_components: float | int = 0.65
    chunk_size: int | None = None
    n_chunks: int = 10
    std_multiplier: float = 3.0
    columns: Sequence[str] | None = None
    reference_errors_: np.ndarray = field(default_factory=lambda: np.empty(0), init=False)

    def fit(self, reference: Any) -> ReconstructionDrift:
        """Learn the encoding, the components and the threshold band from the reference."""
        table = as_table(reference)
        self._encoder = FrequencyEncoder(columns=self.columns).fit(table)
        x = self._encoder.transform(table)
        if x.shape[0] <= x.shape[1]:
            raise ValidationError(f"the reference has {x.shape[0]} rows for {x.shape[1]} columns: PCA on it fits "
                                  "those rows exactly and any new row looks drifted; pass more rows than columns")
        self._mean = _column_means(x)
        x = np.where(np.isnan(x), self._mean, x)
        self._std = x.std(axis=0)
        self._std[self._std == 0] = 1.0
        z = (x - self._mean) / self._std
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        self._components = vt[: min(self._k(singular), x.shape[1] - 1)]
        size = self.chunk_size or max(table.num_rows // self.n_chunks, 1)
        errors = self._row_errors(z)
        self.reference_errors_ = np.array([chunk.mean() for chunk in _chunks(errors, size)])
        if self.reference_errors_.size < 2:
            raise ValidationError(f"the reference has {table.num_rows} rows: too few for chunks of {size}")
        self._chunk_rows = size
        self._centre = float(self.reference_errors_.mean())
        self._spread = self.std_multiplier * float(self.reference_errors_.std())
        self.lower_, self.upper_ = self._band(size)
        return self

    def score(self, current: Any) -> ReconstructionResult:
        """The mean reconstruction error of `current` as one chunk, against the reference band."""
        errors = self._errors(current)
        return self._result(errors)

    def score_chunks(self, current: Any, chunk_size: int) -> list[ReconstructionResult]:
        """One result per consecutive chunk of `chunk_size` rows of `current`."""
        return [self._result(chunk) for chunk in _chunks(self._errors(current), chunk_size)]

    def _errors(self, data: Any) -> np.ndarray:
        if not hasattr(self, "_components"):
            raise ValidationError("this ReconstructionDrift is not fitted yet; call fit(reference) first")
        x = self._encoder.transform(as_table(data))
        x = np.where(np.isnan(x), self._mean, x)
        return self._row_errors((x - self._mean) / self._std)

    def _row_errors(self, z: np.ndarray) -> np.ndarray:
        back = (z @ self._components.T) @ self._components
        return np.sqrt(((z - back) ** 2).sum(axis=1))

    def _result(self, errors: np.ndarray) -> ReconstructionResult:
        if not errors.size:
            raise ValidationError("the current data has no rows: nothing to score")
        error = float(errors.mean())
        lower, upper = self._band(errors.size)
        return ReconstructionResult(error, lower, upper, not lower <= error <= upper, int(errors.size))

    def _band(self, rows: int) -> tuple[float, float]:
        """The alert band for a chunk of `rows`, scaled from the reference chunks' spread.

        A floor relative to the error keeps rounding noise from tripping a band of zero width
        (data whose reference chunks all scored the same).
        """
        chunks = self.reference_errors_.size  # the band's centre is itself a mean of that many chunks
        spread = self._spread * np.sqrt((self._chunk_rows / rows + 1 / chunks) / (1 + 1 / chunks))
        spread = max(spread, 1e-9 * max(self._centre, 1.0))
        return float(max(self._centre - spread, 0.0)), float(self._centre + spread)

    def _k(self, singular: np.ndarray) -> int:
        if isinstance(self.n_components, numbers.Integral) and self.n_components >= 1:  # numpy ints too
            return min(int(self.n_components), singular.size)
        if not 0 < self.n_components < 1:
            raise ConfigError(f"n_components={self.n_components}: pass a count >= 1 or a variance share in (0, 1)")
        if not np.any(singular):  # every column constant: no direction holds variance
            return 0
        explained = np.cumsum(singular**2) / np.sum(singular**2)
        return int(np.searchsorted(explained, self.n_components) + 1)


def _column_means(x: np.ndarray) -> np.ndarray:
    """Each column's mean over its present values; 0 for a column with none (it then stays constant)."""
    present = ~np.isnan(x)
    counts = present.sum(axis=0)
    totals = np.where(present, x, 0.0).sum(axis=0)
    return np.divide(totals, counts, out=np.zeros(x.shape[1]), where=counts > 0)


def _chunks(values: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive chunks of `size`; a short last chunk is dropped unless it is the only one."""
    if size < 1:
        raise ConfigError(f"chunk_size={size} must be at least 1")
    chunks = [values[i : i + size] for i in range(0, values.size, size)]
    if len(chunks) > 1 and chunks[-1].size < size:
        chunks.pop()
    return chunks
