"""The model's input schema, and turning request payloads into checked, batchable rows.

A request's rows are kept in one of two forms so that a batch is one
concatenation, not a per-row loop: a float64 matrix when every input column is
numeric (the common, fast case), or a dict of column arrays when some column
holds strings. Every check names the offending field, so a bad request is a
400 that tells the client what to fix, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from loopstack.core.errors import SignatureError

Rows = np.ndarray | dict[str, np.ndarray]
NUMERIC_KINDS = frozenset("fiub")
EXACT_KINDS = frozenset("iub")  # fields carried as float64 but cast back to their dtype for the model


@dataclass(frozen=True)
class Column:
    """One input field: its name and NumPy dtype."""

    name: str
    dtype: np.dtype

    @property
    def numeric(self) -> bool:
        return self.dtype.kind in NUMERIC_KINDS


@dataclass(frozen=True)
class InputSchema:
    """What a model takes: ordered columns, and whether they are named (a frame) or positional (a tensor).

    Examples
    --------
    >>> schema = InputSchema.numeric(["a", "b"])
    >>> schema.from_instances([{"a": 1, "b": 2}, {"b": 4, "a": 3}]).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    >>> schema.from_columns({"a": [1, 3], "b": [2, 4]}).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    >>> schema.from_instances([{"a": 1}])
    Traceback (most recent call last):
    ...
    loopstack.core.errors.SignatureError: instances[0] lacks field 'b'; the model takes ['a', 'b']
    """

    columns: tuple[Column, ...]
    named: bool = True

    @classmethod
    def numeric(cls, names: Sequence[str], named: bool = True) -> InputSchema:
        """A schema of float64 columns."""
        return cls(tuple(Column(str(n), np.dtype("float64")) for n in names), named)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property
    def all_numeric(self) -> bool:
        return all(c.numeric for c in self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    # -- native JSON -----------------------------------------------------------------
    def from_instances(self, instances: Any) -> Rows:
        """Rows from ``instances``: a list of rows, each a list of values or a dict by field name."""
        if not isinstance(instances, list) or not instances:
            raise SignatureError("'instances' must be a non-empty list of rows (lists or objects)")
        if isinstance(instances[0], dict):
            names = self.names
            try:
                values = [[row[n] for n in names] for row in instances]
            except (KeyError, TypeError):
                raise SignatureError(self._missing_field(instances)) from None
        else:
            values = instances
        if self.all_numeric:
            return self._matrix(values, "instances")
        return self.assemble({
            c.name: self.check_column(c, [_at(row, j, i) for i, row in enumerate(values)],
                                      f"instances field {c.name!r}",
                                      row=lambda i, name=c.name: f"instances[{i}] field {name!r}", squeeze=False)
            for j, c in enumerate(self.columns)
        })

    def from_columns(self, inputs: Any) -> Rows:
        """Rows from column-wise ``inputs``: ``{"field": [v0, v1, ...], ...}``, or a list of rows."""
        if isinstance(inputs, list):
            return self.from_instances(inputs)
        if not isinstance(inputs, Mapping) or not inputs:
            raise SignatureError("'inputs' must be an object of columns {field: [values]} or a list of rows")
        for name in inputs:
            if name not in self._index:
                raise SignatureError(f"inputs has unknown field {name!r}; the model takes {self.names}")
        arrays = {}
        for column in self.columns:
            if column.name not in inputs:
                raise SignatureError(f"inputs lacks field {column.name!r}; the model takes {self.names}")
            arrays[column.name] = self.check_column(column, inputs[column.name], f"inputs.{column.name}")
        return self.assemble(arrays)

    # -- shared checks ---------------------------------------------------------------
    def check_column(
        self, column: Column, values: Any, where: str, row: Callable[[int], str] | None = None, squeeze: bool = True
    ) -> np.ndarray:
        """One column's values as a 1-D array of the column's kind, or a SignatureError naming `where`
        (and, for a bad value of a string column, its row as ``row(i)`` names it: ``where[i]`` by default).

        A column sent as ``[[v0], [v1], ...]`` (an (n, 1) array) is taken as ``[v0, v1, ...]`` when `squeeze`;
        the values of one field gathered from rows (``instances``) pass ``squeeze=False``: there a row's
        ``"x": [1.5]`` is a list where the field takes one value, refused rather than unwrapped."""
        row = row or (lambda i: f"{where}[{i}]")
        if not column.numeric:
            return _strings(values, where, row, squeeze)
        try:
            array = np.asarray(values)
        except ValueError:  # ragged: some values are lists
            raise SignatureError((None if squeeze else _nested(values, row))
                                 or f"{where} must be a flat list of values, got {_short(values)}") from None
        if squeeze and array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise SignatureError((None if squeeze else _nested(values, row))
                                 or f"{where} must be a flat list of values, got shape {list(array.shape)}")
        floats = _to_float(array, where, column)
        if column.dtype.kind in EXACT_KINDS:
            _check_exact(floats, column, row)
        return floats

    def assemble(self, arrays: Mapping[str, np.ndarray]) -> Rows:
        """Rows from column arrays of one length, each checked by `check_column` (integer fields included)."""
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise SignatureError(f"input columns have different lengths {lengths}; every field needs one value per row")
        if not any(lengths.values()):
            raise SignatureError(f"input columns {list(lengths)} hold no rows; send at least one value per field")
        if self.all_numeric:
            return np.column_stack([arrays[n] for n in self.names]).astype(np.float64, copy=False)
        return dict(arrays)

    def matrix(self, values: Any, where: str) -> np.ndarray:
        """A checked (n, k) float64 matrix for an all-numeric schema."""
        return self._matrix(values, where)

    def _matrix(self, values: Any, where: str) -> np.ndarray:
        try:
            array = _numbers(values)
        except (ValueError, TypeError, OverflowError):
            raise SignatureError(self._bad_value(values, where)) from None
        if array.ndim == 1 and len(self) == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != len(self):
            raise SignatureError(
                f"{where} has shape {list(np.shape(values)) if array.ndim != 2 else list(array.shape)}; "
                f"the model takes rows of {len(self)} values {self.names}"
            )
        return self.check_exact(array, where)

    def check_exact(self, array: np.ndarray, where: str) -> np.ndarray:
        """Integer and boolean fields of a float matrix must hold values their dtype can take: the model
        adapter casts them back, where 2.7 became 2, 1e19 became INT64_MIN and null a 500."""
        for j in self._exact:
            column = self.columns[j]
            _check_exact(array[:, j], column, lambda i, name=column.name: f"{where}[{i}] field {name!r}")
        return array

    def _bad_value(self, values: Any, where: str) -> str:
        """Find the first field that is not a number, for the error message."""
        for i, row in enumerate(values if isinstance(values, list) else []):
            if not isinstance(row, list | tuple) or len(row) != len(self):
                return f"{where}[{i}] must be a list of {len(self)} values {self.names}, got {_short(row)}"
            for name, value in zip(self.names, row, strict=True):
                if value is not None and not isinstance(value, int | float):  # true/false are 1/0
                    return f"{where}[{i}] field {name!r} must be a number, got {_short(value)}"
                if isinstance(value, int) and not _fits_float(value):
                    return f"{where}[{i}] field {name!r} is too large for float64, got {_short(value)}"
        return f"{where} must be a list of rows of {len(self)} numbers {self.names}"

    def _missing_field(self, instances: list[Any]) -> str:
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                return f"instances[{i}] must be an object like instances[0], got {_short(row)}"
            for name in self.names:
                if name not in row:
                    return f"instances[{i}] lacks field {name!r}; the model takes {self.names}"
        return "instances are malformed"

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c.name: i for i, c in enumerate(self.columns)}

    @cached_property
    def _exact(self) -> list[int]:
        return [j for j, c in enumerate(self.columns) if c.dtype.kind in EXACT_KINDS]


# -- rows helpers ---------------------------------------------------------------------
def n_rows(rows: Rows) -> int:
    """Number of rows."""
    if isinstance(rows, np.ndarray):
        return rows.shape[0]
    return len(next(iter(rows.values())))


def concat(parts: list[Rows]) -> Rows:
    """One batch from several requests' rows (no copy for a single part)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}  # type: ignore[index]


def columns_of(rows: Rows, schema: InputSchema) -> dict[str, np.ndarray]:
    """Rows as named columns (for the prediction log)."""
    if isinstance(rows, np.ndarray):
        return {name: rows[:, j] for j, name in enumerate(schema.names)}
    return dict(rows)


def _to_float(array: np.ndarray, where: str, column: Column) -> np.ndarray:
    if array.dtype.kind in NUMERIC_KINDS:
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "O":  # JSON null -> NaN, true/false -> 1/0 (as NumPy reads them); anything else a number
        bad = [v for v in array if v is not None and not isinstance(v, int | float)]
        if bad:
            raise SignatureError(f"{where} must hold numbers ({column.dtype}), got {_short(bad[0])}")
        try:
            return np.array([np.nan if v is None else v for v in array], dtype=np.float64)
        except OverflowError:
            big = next(v for v in array if isinstance(v, int) and not _fits_float(v))
            raise SignatureError(f"{where} holds a number too large for float64: {_short(big)}") from None
    raise SignatureError(
        f"{where} must hold numbers ({column.dtype}), got {array.dtype} values like {_short(array[0])}"
    )


def _check_exact(values: np.ndarray, column: Column, row: Callable[[int], str]) -> None:
    """An integer or boolean field's float64 values must cast back to its dtype unchanged: whole, within the
    dtype's range, not null (the schema has no nullable integers), and 0/1 for a bool. Vectorized: one pass
    of comparisons per field, and only for integer and boolean fields."""
    kind = column.dtype.kind
    if kind == "b":
        ok = (values == 0.0) | (values == 1.0)
    else:
        info = np.iinfo(column.dtype)  # the upper bound as an exact float: float(2**63 - 1) rounds up to 2**63
        ok = (values >= float(info.min)) & (values < float(int(info.max) + 1)) & (values == np.floor(values))
    if ok.all():
        return
    i = int(np.argmin(ok))
    value = float(values[i])
    if np.isnan(value):
        problem, got = "must not be null", "null"
    elif kind == "b":
        problem, got = "must be true/false (or 0/1)", repr(value)
    elif value != np.floor(value):
        problem, got = "must be a whole number", repr(value)
    else:
        problem, got = f"must be within [{info.min}, {info.max}]", repr(value)
    raise SignatureError(f"{row(i)} {problem} ({column.dtype}), got {got}")


def _strings(values: Any, where: str, row: Callable[[int], str], squeeze: bool = True) -> np.ndarray:
    """A string column as an object array of str (JSON null stays None).

    Built with ``dtype=object`` so nothing is coerced: ``np.asarray(["u", 7])`` would turn 7 into "7"
    (where a lone 7 is refused), and a dict or list would reach the model and the prediction log.
    A lone surrogate (JSON ``"\\ud800"``, which the json module accepts) is refused too: it is no text
    that UTF-8 can carry, and pandas or the prediction log failed on it later (a 500).
    """
    try:
        array = np.asarray(values, dtype=object)
    except ValueError:  # ragged nesting numpy cannot hold even as objects
        raise SignatureError(f"{where} must be a flat list of strings, got {_short(values)}") from None
    if squeeze and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise SignatureError((None if squeeze else _nested(values, row))
                             or f"{where} must be a flat list of strings, got shape {list(array.shape)}")
    for i, value in enumerate(array):
        if isinstance(value, str):
            if not is_text(value):
                raise SignatureError(f"{row(i)} is not valid Unicode text (a lone surrogate), got {_short(value)}")
        elif value is not None:
            raise SignatureError(f"{row(i)} must be a string (or null), got {_short(value)}")
    return array


def is_text(value: str) -> bool:
    """Whether `value` is text UTF-8 can carry: not a lone surrogate (JSON ``"\\ud800"``, which the json
    module accepts and pandas, Arrow and hashing later fail on). Free for ASCII.

    Examples
    --------
    >>> is_text("café"), is_text(chr(0xD800))
    (True, False)
    """
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _nested(values: Any, row: Callable[[int], str]) -> str | None:
    """The message for the first row whose value is a list or object where its field takes one value."""
    for i, value in enumerate(values if isinstance(values, list) else []):
        if isinstance(value, list | dict):
            return f"{row(i)} must be one value, not a list or object, got {_short(value)}"
    return None


def _numbers(values: Any) -> np.ndarray:
    """`values` as float64, refusing strings: ``np.asarray(["1.5"], dtype=float)`` would parse them,
    where a column of ``inputs`` (and a v2 tensor) refuses them. JSON null is NaN."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "O" and any(isinstance(v, str | bytes) for v in array.flat):
        raise ValueError("strings are not numbers")
    if kind not in "fiubO":
        raise ValueError(f"{array.dtype} values are not numbers")
    return array.astype(np.float64, copy=False)


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _at(row: Any, j: int, i: int) -> Any:
    try:
        return row[j]
    except (IndexError, KeyError, TypeError):
        raise SignatureError(f"instances[{i}] must be a row of values in field order, got {_short(row)}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
