"""Turn whatever the user holds into column arrays the tests can use.

Reference and current data arrive as Arrow tables, pandas or polars frames,
dicts of columns, or paths to Parquet/CSV files and folders. Everything is
read as Arrow once; a column is then handed to the tests either as a sorted
float64 array with nulls and infinities dropped (numerical columns) or as
counts over the union of categories of both samples (categorical columns).
Dropping infinities and nulls before testing is what Evidently does, so the
two agree on the rows a test sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError

NUMERICAL = "numerical"
CATEGORICAL = "categorical"
KINDS = (NUMERICAL, CATEGORICAL)


def as_table(data: Any) -> Any:
    """An Arrow table from Arrow, pandas, polars, a dict of columns or a Parquet/CSV path.

    Examples
    --------
    >>> as_table({"x": [1.0, 2.0]}).num_rows
    2
    """
    import pyarrow as pa

    if isinstance(data, (str, os.PathLike)):
        return _read_path(Path(data))
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        frame = data.to_frame() if data.ndim == 1 else data
        return pa.Table.from_pandas(frame, preserve_index=False)
    if module == "polars":
        return data.to_arrow()
    if isinstance(data, dict):
        return pa.table({k: np.asarray(v) if isinstance(v, (list, tuple)) else v for k, v in data.items()})
    raise ValidationError(
        f"cannot read drift data from {type(data).__name__}; pass an Arrow table, a pandas or polars "
        "DataFrame, a dict of columns, or the path of a Parquet/CSV file or folder"
    )


def _read_path(path: Path) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.exists():
        raise ValidationError(f"data file {path} does not exist; check the path")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        return pq.read_table(path)
    if path.suffix == ".csv":
        return pacsv.read_csv(path)
    raise ValidationError(f"cannot read {path}: use a .parquet or .csv file, or a folder of Parquet files")


INTEGER_CARDINALITY_LIMIT = 10  # Evidently: an integer column with at most 10 values is categorical


def infer_kind(column: Any) -> str:
    """'numerical' or 'categorical' for an Arrow column, by Evidently's rules.

    Floats are numerical; integers are categorical when they take at most 10
    distinct values, numerical otherwise; strings, booleans and dictionaries
    are categorical.

    Examples
    --------
    >>> import pyarrow as pa
    >>> infer_kind(pa.chunked_array([[1, 2, 3] * 5])), infer_kind(pa.chunked_array([list(range(50))]))
    ('categorical', 'numerical')
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind) or pa.types.is_boolean(kind):
        return CATEGORICAL
    if pa.types.is_integer(kind):
        return CATEGORICAL if pc.count_distinct(column).as_py() <= INTEGER_CARDINALITY_LIMIT else NUMERICAL
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return NUMERICAL
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return CATEGORICAL
    raise ValidationError(
        f"cannot test a column of type {kind} for drift; pass kinds={{name: 'numerical'|'categorical'}} "
        "or leave it out with columns=[...]"
    )


def numeric_values(column: Any) -> np.ndarray:
    """The finite values of an Arrow column as float64 (nulls, NaN and +-inf dropped)."""
    import pyarrow.compute as pc

    values = pc.drop_null(column).to_numpy().astype(np.float64, copy=False)
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


@dataclass
class NumericPair:
    """Two samples of a numerical column, each sorted once and shared by every test."""

    reference: np.ndarray
    current: np.ndarray

    @classmethod
    def from_arrays(cls, reference: Any, current: Any) -> NumericPair:
        """Sort both samples, dropping NaN and infinities."""
        return cls(np.sort(_finite(reference)), np.sort(_finite(current)))

    @cached_property
    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """Both samples merged in order, and for each merged value how many reference values are <= it.

        Built from the two sorted arrays with one searchsorted, not a sort of
        the concatenation: the current value j lands at position
        ``searchsorted(reference, current[j], 'right') + j``.
        """
        ref, cur = self.reference, self.current
        slots = np.searchsorted(ref, cur, side="right") + np.arange(cur.size)
        is_current = np.zeros(ref.size + cur.size, dtype=bool)
        is_current[slots] = True
        merged = np.empty(is_current.size, dtype=np.float64)
        merged[is_current] = cur
        merged[~is_current] = ref
        return merged, np.cumsum(~is_current)

    def distinct(self, limit: int | None = None) -> int:
        """Distinct values over both samples, exact up to `limit`.

        Past `limit` the answer is only a lower bound above it, which is all
        the test selection needs, and it spares a merge of two large samples.
        """
        counts = self.reference_n_unique, _count_unique(self.current)
        if limit is not None and max(counts) > limit:
            return max(counts)
        return int(np.union1d(_uniques(self.reference), _uniques(self.current)).size)

    @property
    def n_unique(self) -> int:
        """Distinct values over both samples."""
        return self.distinct()

    @cached_property
    def reference_n_unique(self) -> int:
        """Distinct values in the reference sample."""
        return _count_unique(self.reference)

    def as_categories(self) -> CategoricalPair:
        """Counts per distinct value, for tests that treat a discrete numeric column as categories."""
        keys = np.union1d(_uniques(self.reference), _uniques(self.current))
        ref = np.diff(np.searchsorted(self.reference, keys, side="right"), prepend=0)
        cur = np.diff(np.searchsorted(self.current, keys, side="right"), prepend=0)
        return CategoricalPair(keys.tolist(), ref.astype(np.int64), cur.astype(np.int64))


@dataclass
class CategoricalPair:
    """Counts of each category in both samples, over the union of their categories."""

    keys: list[Any]
    reference: np.ndarray
    current: np.ndarray

    @classmethod
    def from_arrays(cls, reference: Any, current: Any) -> CategoricalPair:
        """Count categories of two Arrow columns (or sequences), nulls dropped."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ref = _arrow(reference)
        cur = _arrow(current)
        if pa.types.is_dictionary(ref.type):
            ref = ref.cast(ref.type.value_type)
        if pa.types.is_dictionary(cur.type):
            cur = cur.cast(cur.type.value_type)
        if ref.type != cur.type:
            cur = cur.cast(ref.type)
        ref, cur = pc.drop_null(ref), pc.drop_null(cur)
        if pa.types.is_floating(ref.type):
            ref, cur = ref.filter(pc.is_finite(ref)), cur.filter(pc.is_finite(cur))
        both = pa.chunked_array(ref.chunks + cur.chunks, type=ref.type).dictionary_encode().combine_chunks()
        codes = both.indices.to_numpy(zero_copy_only=False)
        size = len(both.dictionary)
        counts_ref = np.bincount(codes[: len(ref)], minlength=size)
        counts_cur = np.bincount(codes[len(ref) :], minlength=size)
        return cls(both.dictionary.to_pylist(), counts_ref, counts_cur)

    @property
    def n_reference(self) -> int:
        """Non-null reference rows."""
        return int(self.reference.sum())

    @property
    def n_current(self) -> int:
        """Non-null current rows."""
        return int(self.current.sum())

    @property
    def n_unique(self) -> int:
        """Distinct categories over both samples."""
        return len(self.keys)


def _count_unique(sorted_values: np.ndarray) -> int:
    return int(sorted_values.size and 1 + np.count_nonzero(sorted_values[1:] != sorted_values[:-1]))


def _uniques(sorted_values: np.ndarray) -> np.ndarray:
    if not sorted_values.size:
        return sorted_values
    return sorted_values[np.append(True, sorted_values[1:] != sorted_values[:-1])]


def _finite(values: Any) -> np.ndarray:
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return numeric_values(values)
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(array)
    return array if finite.all() else array[finite]


def _arrow(values: Any) -> Any:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        return values
    if isinstance(values, pa.Array):
        return pa.chunked_array([values])
    if type(values).__module__.split(".")[0] == "pandas":
        return pa.chunked_array([pa.Array.from_pandas(values)])
    return pa.chunked_array([pa.array(np.asarray(values).tolist() if isinstance(values, np.ndarray) else values)])
