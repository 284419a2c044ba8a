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


def as_table(data: Any, columns: Any = None) -> Any:
    """An Arrow table from Arrow, pandas, polars, a dict of columns or a Parquet/CSV path.

    `columns` keeps only those columns of a pandas frame before it is converted, so that a column
    left out is never read (one Arrow cannot hold, such as strings mixed with numbers, would fail).

    Examples
    --------
    >>> as_table({"x": [1.0, 2.0]}).num_rows
    2
    """
    import pyarrow as pa

    from loopstack.core.frames import to_arrow

    if isinstance(data, (str, os.PathLike)):
        return _read_path(Path(data))
    if isinstance(data, dict):
        try:
            return pa.table({k: np.asarray(v) if isinstance(v, (list, tuple)) else v for k, v in data.items()})
        except pa.ArrowInvalid as error:  # columns of different lengths
            raise ValidationError(f"cannot read the dict of columns as a table: {error}; give every column "
                                  "the same number of values") from error
    if columns is not None and type(data).__module__.split(".")[0] == "pandas" and data.ndim == 2:
        wanted = set(columns)
        data = data[[name for name in data.columns if name in wanted]]
    try:
        return to_arrow(data, "read drift data from", hint=", or the path of a Parquet/CSV file or folder")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:  # a pandas object column of mixed types
        raise ValidationError(_unconvertible(data, error)) from error


def _unconvertible(frame: Any, error: Exception) -> str:
    """Name the column Arrow cannot convert (the first one that fails alone) and the ways out."""
    import pyarrow as pa

    frame = frame.to_frame() if getattr(frame, "ndim", 2) == 1 else frame
    for name in getattr(frame, "columns", []):
        try:
            pa.array(frame[name], from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            kinds = sorted({type(v).__name__ for v in frame[name].dropna()})
            return (f"column {name!r} holds values of types {kinds} that do not fit one Arrow column; "
                    f"cast it, e.g. frame[{name!r}] = frame[{name!r}].astype(str), or leave it out with "
                    "columns=[...]")
    return f"cannot read the frame as an Arrow table: {error}; cast its mixed-type columns, e.g. with .astype(str)"


def _read_path(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.exists():
        raise ValidationError(f"data file {path} does not exist; check the path")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(path)
            if not dataset.files:
                raise ValidationError(f"folder {path} holds no Parquet files; pass a folder of *.parquet files")
            # Strings stay dictionary-encoded as stored: no string copies, and counting works on the codes.
            strings = [f.name for f in dataset.schema if f.type in (pa.string(), pa.large_string())]
            return pq.read_table(path, read_dictionary=strings)
        except pa.ArrowInvalid as error:
            raise ValidationError(f"{path} is not a Parquet file (or it is damaged); pass a Parquet or CSV file, "
                                  "or a folder of Parquet files") from error
    if path.suffix == ".csv":
        try:
            return pacsv.read_csv(path)
        except pa.ArrowInvalid as error:
            raise ValidationError(f"cannot read {path} as CSV: {error}; fix the file or convert it to Parquet") \
                from error
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
    if pa.types.is_temporal(kind):  # no numerical test reads times: 'numerical' would fail in its turn
        raise ValidationError(
            f"cannot test a column of type {kind} for drift as numbers; pass kinds={{name: 'categorical'}} to "
            "compare its values, or leave it out with columns=[...]"
        )
    raise ValidationError(
        f"cannot test a column of type {kind} for drift; pass kinds={{name: 'numerical'|'categorical'}} "
        "or leave it out with columns=[...]"
    )


def numeric_values(column: Any) -> np.ndarray:
    """The finite values of an Arrow column as float64 (nulls, NaN and +-inf dropped)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
            or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
        raise ValidationError(f"cannot read a {kind} column as numbers; test it with kind 'categorical'")
    if column.null_count:
        column = pc.drop_null(column)
    values = column.to_numpy().astype(np.float64, copy=False)
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


@dataclass
class NumericPair:
    """Two samples of a numerical column, each sorted once and shared by every test."""

    reference: np.ndarray
    current: np.ndarray
    integer: bool = False  # both samples hold integers (histogram bins are at least 1 wide, as NumPy's are)

    @classmethod
    def from_arrays(cls, reference: Any, current: Any) -> NumericPair:
        """Sort both samples, dropping NaN and infinities (in place when the values are already a copy)."""
        integer = _integer_typed(reference) and _integer_typed(current)
        return cls(_sorted(_finite(reference)), _sorted(_finite(current)), integer)

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
        if limit is not None and (self.more_unique_than(limit) or _more_unique_than(self.current, limit)):
            return limit + 1
        return int(np.union1d(_uniques(self.reference), _uniques(self.current)).size)

    def more_unique_than(self, limit: int) -> bool:
        """Whether the reference has more than `limit` distinct values."""
        return _more_unique_than(self.reference, limit)

    @property
    def n_unique(self) -> int:
        """Distinct values over both samples."""
        return self.distinct()

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
        if pa.types.is_dictionary(ref.type) and ref.type == cur.type:
            return cls._from_dictionaries(ref, cur)
        if pa.types.is_dictionary(ref.type):
            ref = ref.cast(ref.type.value_type)
        if pa.types.is_dictionary(cur.type):
            cur = cur.cast(cur.type.value_type)
        if ref.type != cur.type:
            ref, cur = _common_type(ref, cur)
        ref, cur = pc.drop_null(ref), pc.drop_null(cur)
        if pa.types.is_floating(ref.type):
            ref, cur = ref.filter(pc.is_finite(ref)), cur.filter(pc.is_finite(cur))
        both = pa.chunked_array(ref.chunks + cur.chunks, type=ref.type).dictionary_encode().combine_chunks()
        codes = both.indices.to_numpy(zero_copy_only=False)
        size = len(both.dictionary)
        counts_ref = np.bincount(codes[: len(ref)], minlength=size)
        counts_cur = np.bincount(codes[len(ref) :], minlength=size)
        return cls(both.dictionary.to_pylist(), counts_ref, counts_cur)

    @classmethod
    def _from_dictionaries(cls, reference: Any, current: Any) -> CategoricalPair:
        """Count dictionary-encoded columns on their codes, after giving all chunks one dictionary."""
        import pyarrow as pa

        unified = pa.chunked_array(reference.chunks + current.chunks, type=reference.type).unify_dictionaries()
        if not unified.num_chunks:
            return cls([], np.zeros(0, np.int64), np.zeros(0, np.int64))
        dictionary = unified.chunk(0).dictionary
        split = reference.num_chunks

        def counts(chunks: list[Any]) -> np.ndarray:
            total = np.zeros(len(dictionary), dtype=np.int64)
            for chunk in chunks:
                codes = chunk.indices.drop_null().to_numpy(zero_copy_only=False)
                total += np.bincount(codes, minlength=len(dictionary))
            return total

        ref = counts(unified.chunks[:split])
        cur = counts(unified.chunks[split:])
        seen = (ref + cur) > 0
        keys = [key for key, keep in zip(dictionary.to_pylist(), seen, strict=True) if keep and key is not None]
        seen &= np.array([key is not None for key in dictionary.to_pylist()], dtype=bool)
        return cls(keys, ref[seen], cur[seen])

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


def _common_type(reference: Any, current: Any) -> tuple[Any, Any]:
    """Both columns cast to one type, so that equal values are one category.

    The wider type when Arrow has one (int and float give float, uint8 and
    int64 give int64), else text: casting the current side to the
    reference's type failed on exactly the values that are new (2.5 in an
    int column, -3 in a uint8 one), which are the drift to report.
    """
    import pyarrow as pa

    try:
        common = pa.unify_schemas([pa.schema([("v", reference.type)]), pa.schema([("v", current.type)])],
                                  promote_options="permissive").field("v").type
        return reference.cast(common), current.cast(common)
    except pa.ArrowException:
        pass
    try:
        return reference.cast(pa.string()), current.cast(pa.string())
    except pa.ArrowException as error:
        raise ValidationError(f"cannot compare a {reference.type} reference column with a {current.type} current "
                              "column; convert one side to the other's type") from error


def _sorted(values: np.ndarray) -> np.ndarray:
    if values.flags.owndata and values.flags.writeable:
        values.sort()
        return values
    return np.sort(values)


def _more_unique_than(sorted_values: np.ndarray, limit: int) -> bool:
    """Checked on a few evenly spaced order statistics first, so rich columns cost O(1)."""
    if sorted_values.size <= limit:
        return False
    probe = sorted_values[np.linspace(0, sorted_values.size - 1, 4 * (limit + 1)).astype(np.intp)]
    return _count_unique(probe) > limit or _count_unique(sorted_values) > limit


def _count_unique(sorted_values: np.ndarray) -> int:
    return int(sorted_values.size and 1 + np.count_nonzero(sorted_values[1:] != sorted_values[:-1]))


def _uniques(sorted_values: np.ndarray) -> np.ndarray:
    if not sorted_values.size:
        return sorted_values
    return sorted_values[np.append(True, sorted_values[1:] != sorted_values[:-1])]


def _integer_typed(values: Any) -> bool:
    """Whether the values are stored as integers (an Arrow or NumPy integer type, or a list of Python ints)."""
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return pa.types.is_integer(values.type)
    dtype = getattr(values, "dtype", None)
    if dtype is not None:
        return np.issubdtype(dtype, np.integer)
    return isinstance(values, (list, tuple)) and bool(values) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    )


def _finite(values: Any) -> np.ndarray:
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return numeric_values(values)
    try:
        array = np.array(values, dtype=np.float64).ravel()  # a copy: the caller's array is sorted in place later
    except (TypeError, ValueError) as error:
        raise ValidationError(f"cannot read the values as numbers ({error}); test them with kind 'categorical'") \
            from error
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
