"""Column and data-set drift between a reference and a current sample.

`compare` reads both sides as Arrow, decides each column's kind, prepares
the column once (a sort for numerical columns, category counts otherwise),
runs the chosen test and collects the verdicts. Columns are independent, so
they are spread over a few threads: NumPy's sort and searchsorted release the
GIL, and the numerical columns dominate the time.
"""

from __future__ import annotations

import numbers
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.drift import select, stats
from loopstack.drift.data import CATEGORICAL, KINDS, NUMERICAL, CategoricalPair, NumericPair, as_table, infer_kind
from loopstack.drift.result import ColumnDrift, DriftResult, Histogram

CORRECTIONS = (None, "bonferroni", "bh")
MAX_CATEGORIES_PLOTTED = 20


class EmptySampleError(ValidationError):
    """The reference or the current sample holds nothing to compare: no rows, or no value in any column tested.

    A verdict resting on no data would read as "no drift", so `compare` raises this instead. `side` is
    ``"reference"`` or ``"current"``.
    """

    def __init__(self, message: str, side: str) -> None:
        super().__init__(message)
        self.side = side


@dataclass
class DriftOptions:
    """Everything `compare` can be told; unset values fall back to Evidently's defaults.

    Examples
    --------
    >>> DriftOptions(tests={"age": "ks"}, threshold=0.01).tests
    {'age': 'ks'}
    """

    columns: Sequence[str] | None = None
    kinds: Mapping[str, str] = field(default_factory=dict)
    tests: Mapping[str, str] = field(default_factory=dict)
    num_test: str | None = None
    cat_test: str | None = None
    threshold: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    drift_share: float = 0.5
    correction: str | None = None
    histograms: bool = True
    n_jobs: int = 4

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ConfigError(f"correction={self.correction!r} is not known; use one of {CORRECTIONS}")
        if not _number_in(self.drift_share, 0, 1, upper_included=True):
            raise ConfigError(f"drift_share={self.drift_share!r} must be a number in (0, 1]")
        for column, kind in self.kinds.items():
            if kind not in KINDS:
                raise ConfigError(f"kinds[{column!r}]={kind!r}; use 'numerical' or 'categorical'")
        named = {"threshold": self.threshold, **{f"thresholds[{c!r}]": t for c, t in self.thresholds.items()}}
        for name, value in named.items():
            # a p-value test never fires at a threshold <= 0 and a distance test always does
            if value is not None and not _number_in(value, 0, float("inf")):
                raise ConfigError(f"{name}={value!r} must be a positive number, e.g. 0.05 for a p-value test "
                                  "or 0.1 for a distance")


def _number_in(value: Any, low: float, high: float, upper_included: bool = False) -> bool:
    """`low < value < high` (or `<= high`) for a real number; False for text, None and NaN, not a TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return low < value <= high if upper_included else low < value < high


def compare(reference: Any, current: Any, options: DriftOptions | None = None, **settings: Any) -> DriftResult:
    """Test every shared column of `reference` and `current` for drift.

    Without ``columns=``, the columns only one side has are not tested but listed in the result
    (`DriftResult.missing_columns`: in the reference only; `DriftResult.new_columns`: in the current
    data only). A sample with no rows, or with no non-null value in any tested column, raises
    `EmptySampleError`; a single empty column among others gets a NaN score and a `note`.

    Parameters
    ----------
    reference, current
        Arrow tables, pandas or polars frames, dicts of columns, or Parquet/CSV paths.
    options
        A `DriftOptions`; keyword `settings` build one instead (``tests=``,
        ``threshold=``, ``drift_share=``, ``correction=``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> ref = {"x": rng.normal(size=5000), "c": rng.choice(["a", "b", "c"], 5000)}
    >>> cur = {"x": rng.normal(size=5000), "c": rng.choice(["a", "b", "c"], 5000, p=[0.6, 0.2, 0.2])}
    >>> result = compare(ref, cur)
    >>> {name: (c.test, c.drifted) for name, c in result.columns.items()}
    {'x': ('wasserstein', False), 'c': ('jensenshannon', True)}
    """
    if options is None:
        options = DriftOptions(**settings)
    elif settings:
        raise ConfigError("pass either options= or keyword settings to compare(), not both")
    ref_table, cur_table = as_table(reference, options.columns), as_table(current, options.columns)
    for side, data, table in (("reference", reference, ref_table), ("current", current, cur_table)):
        if not table.num_rows:
            raise EmptySampleError(f"the {_sample(side, data)} has 0 rows, so there is nothing to compare; "
                                   f"check what wrote it (an empty export, a filter that matched nothing)", side)
    names = _columns(ref_table, cur_table, options.columns)

    def one(name: str) -> ColumnDrift:
        return column_drift(name, ref_table.column(name), cur_table.column(name), options)

    if options.n_jobs > 1 and len(names) > 1:
        with ThreadPoolExecutor(min(options.n_jobs, len(names))) as pool:
            results = list(pool.map(one, names))
    else:
        results = [one(name) for name in names]
    for side, data, sizes in (("reference", reference, [r.n_reference for r in results]),
                              ("current", current, [r.n_current for r in results])):
        if names and not any(sizes):
            raise EmptySampleError(f"the {_sample(side, data)} has no non-null value in any column tested "
                                   f"({', '.join(names)}), so there is nothing to compare; check what wrote it",
                                   side)
    results = _correct(results, options.correction)
    missing, new = [], []
    if options.columns is None:  # columns chosen explicitly: the others were left out on purpose
        in_reference, in_current = set(ref_table.column_names), set(cur_table.column_names)
        missing = [name for name in ref_table.column_names if name not in in_current]
        new = [name for name in cur_table.column_names if name not in in_reference]
    return DriftResult({r.column: r for r in results}, options.drift_share, options.correction,
                       missing_columns=missing, new_columns=new)


def _sample(side: str, data: Any) -> str:
    """'current file data/x.parquet' for a path, 'current sample' otherwise."""
    return f"{side} file {os.fspath(data)}" if isinstance(data, (str, os.PathLike)) else f"{side} sample"


def column_drift(name: str, reference: Any, current: Any, options: DriftOptions | None = None) -> ColumnDrift:
    """Drift of one column given as two Arrow columns (or arrays)."""
    options = options or DriftOptions()
    kind = options.kinds.get(name) or _kind(reference)
    pair: NumericPair | CategoricalPair
    try:
        if kind == NUMERICAL:
            pair = NumericPair.from_arrays(reference, current)
            sizes = pair.reference.size, pair.current.size
        else:
            pair = CategoricalPair.from_arrays(reference, current)
            sizes = pair.n_reference, pair.n_current
    except ValidationError as error:
        raise ValidationError(f"column {name!r}: {error}") from error
    if not sizes[0] or not sizes[1]:
        side = "reference" if not sizes[0] else "current"
        test, threshold = select.resolve(name, kind, sizes[0], 0, options)
        return ColumnDrift(name, kind, test.name, float("nan"), threshold, False, test.p_value, *sizes,
                           note=f"no non-null values in the {side} sample")
    n_unique = pair.distinct(select.FEW_VALUES) if isinstance(pair, NumericPair) else pair.n_unique
    test, threshold = select.resolve(name, kind, sizes[0], n_unique, options)
    score = float(test.func(pair))
    histogram = _histogram(pair) if options.histograms else None
    return ColumnDrift(name, kind, test.name, score, threshold, test.drifted(score, threshold), test.p_value,
                       *sizes, histogram=histogram)


def _kind(column: Any) -> str:
    import pyarrow as pa

    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return infer_kind(column)
    return NUMERICAL if np.asarray(column).dtype.kind in "iuf" else CATEGORICAL


def _columns(reference: Any, current: Any, wanted: Sequence[str] | None) -> list[str]:
    for side, table in (("reference", reference), ("current", current)):
        repeated = sorted(name for name, count in Counter(table.column_names).items() if count > 1)
        if repeated:
            raise ValidationError(f"the {side} data has columns {repeated} more than once; rename or drop the copies")
    shared = [name for name in reference.column_names if name in set(current.column_names)]
    if wanted is None:
        if not shared:
            raise ValidationError(
                f"reference columns {reference.column_names} and current columns {current.column_names} "
                "share no name; rename them or pass columns=[...]"
            )
        return shared
    missing = [name for name in wanted if name not in shared]
    if missing:
        raise ValidationError(f"columns {missing} are not in both samples; shared columns: {shared}")
    return list(wanted)


def _correct(results: list[ColumnDrift], correction: str | None) -> list[ColumnDrift]:
    """Adjust p-values for the number of p-value tests run (Bonferroni or Benjamini-Hochberg)."""
    if correction is None:
        return results
    index = [i for i, r in enumerate(results) if r.p_value and r.score == r.score]
    if not index:
        return results
    p = np.array([results[i].score for i in index])
    adjusted = np.minimum(p * len(p), 1.0) if correction == "bonferroni" else benjamini_hochberg(p)
    out = list(results)
    for i, value in zip(index, adjusted, strict=True):
        r = results[i]
        drifted = select.TESTS[r.test].drifted(float(value), r.threshold)
        out[i] = replace(r, adjusted=float(value), drifted=drifted)
    return out


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (as ``scipy.stats.false_discovery_control``).

    Examples
    --------
    >>> benjamini_hochberg(np.array([0.01, 0.04, 0.03])).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(ranked, 1.0)
    return adjusted


def _histogram(pair: NumericPair | CategoricalPair) -> Histogram:
    if isinstance(pair, NumericPair) and pair.more_unique_than(20):
        edges = stats.sturges_edges(pair)
        if edges.size > 41:
            edges = np.linspace(edges[0], edges[-1], 41)
        ref, cur = stats._histogram(pair.reference, edges), stats._histogram(pair.current, edges)
        labels = [f"{e:.4g}" for e in edges[:-1]]
        return Histogram(labels, ref.tolist(), cur.tolist(), edges.tolist())
    cats = pair.as_categories() if isinstance(pair, NumericPair) else pair
    ref, cur = cats.reference / max(cats.n_reference, 1), cats.current / max(cats.n_current, 1)
    top = np.argsort(-(ref + cur), kind="stable")[:MAX_CATEGORIES_PLOTTED]
    return Histogram([str(cats.keys[i]) for i in top], ref[top].tolist(), cur[top].tolist())
