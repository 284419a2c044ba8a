"""Check model input against a signature, and bring it into the signature's shape.

The rules, chosen so that a check never changes a value's meaning:

- a missing column is an error; extra columns are dropped and the rest are
  put in the signature's order (models see columns by position);
- a cast happens only when it is safe: bool and integers to floats, floats to
  wider or narrower floats when no value grows beyond the narrower range (it
  would become infinite), integers to other integers when every value fits and
  none is missing, anything to ``object``; strings to numbers, floats to
  integers and numbers to strings are errors;
- a tensor must have the signature's number of dimensions and, on every axis
  but the batch axis, its size.

Every problem is collected and reported in one `SignatureError` that names the
column (or axis), what the signature expects and what the input had.
"""

from __future__ import annotations

from typing import Any

from loopstack.core.errors import SignatureError
from loopstack.registry.signature import COLUMNS, Schema, array_dtype, series_dtype

_FLOAT_SOURCES = set("biuf")
_INT_SOURCES = set("biu")


def check_input(schema: Schema, data: Any) -> Any:
    """Validate `data` against `schema`; return it cast, ordered and in the schema's container.

    Examples
    --------
    >>> import pandas as pd
    >>> from loopstack.registry.signature import infer_schema
    >>> schema = infer_schema(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    >>> check_input(schema, pd.DataFrame({"b": [3], "a": [4], "extra": ["x"]}))
         a    b
    0  4.0  3.0
    """
    if schema.kind == COLUMNS:
        frame = _check_columns(schema, _to_frame(data, schema))
        if schema.container == "arrow":
            import pyarrow as pa

            return pa.Table.from_pandas(frame, preserve_index=False)
        return frame
    return _check_tensor(schema, data)


# -- columns -----------------------------------------------------------------------
def _to_frame(data: Any, schema: Schema) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    module = type(data).__module__.split(".")[0]
    if module in ("pyarrow", "polars"):
        return _arrow_to_frame(data.to_arrow() if module == "polars" else data)
    if isinstance(data, dict) or (isinstance(data, list) and data and isinstance(data[0], dict)):
        return pd.DataFrame(data)
    if isinstance(data, np.ndarray | list | tuple):
        array = np.asarray(data)
        width = array.shape[1] if array.ndim == 2 else None
        if width != len(schema.columns):
            raise SignatureError(
                f"input array has shape {array.shape} but the model expects {len(schema.columns)} columns "
                f"({', '.join(schema.names)}); pass a 2-D array of that width or a DataFrame with those columns"
            )
        return pd.DataFrame(array, columns=schema.names)
    raise SignatureError(
        f"cannot check input of type {type(data).__name__} against columns {schema}; "
        "pass a pandas DataFrame, an Arrow table, a dict of columns or a 2-D array"
    )


def _arrow_to_frame(table: Any) -> Any:
    """An Arrow table as a frame whose integer and bool columns with nulls keep their type (Int64, boolean).

    Plain ``to_pandas`` makes them float64 and object, so the very table a model was logged with failed
    its own signature ('expected int64, got float64'). Columns without nulls convert as before.
    """
    import pandas as pd
    import pyarrow as pa

    frame = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if column.null_count and (pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
            frame[name] = column.to_pandas(types_mapper=pd.ArrowDtype).astype(_NULLABLE.get(str(kind), "Int64"))
    return frame


_NULLABLE = {"bool": "boolean", "uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64",
             "int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64"}


def _check_columns(schema: Schema, frame: Any) -> Any:
    given = [str(name) for name in frame.columns]
    missing = [name for name in schema.names if name not in given]
    if missing:
        raise SignatureError(
            f"input is missing column(s) {missing}: the model expects {schema} and got columns {given}; "
            "add the missing columns (names are case-sensitive)"
        )
    if len(set(given)) != len(given):
        raise SignatureError(f"input has duplicate column names {given}; make each column name unique")
    frame = frame.rename(columns=str)[schema.names]
    problems: list[str] = []
    columns = {}
    for spec in schema.columns:
        series = frame[spec.name]
        columns[spec.name] = _cast(series, series_dtype(series), spec.dtype, f"column {spec.name!r}", problems)
    _raise(problems)
    import pandas as pd

    return pd.DataFrame(columns, index=frame.index)


# -- tensors -----------------------------------------------------------------------
def _check_tensor(schema: Schema, data: Any) -> Any:
    import numpy as np

    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        data = data.to_numpy()
    elif module in ("pyarrow", "polars"):
        data = (data.to_arrow() if module == "polars" else data).to_pandas().to_numpy()
    array = np.asarray(data)
    expected = tuple(schema.shape or ())
    if array.ndim != len(expected):
        raise SignatureError(
            f"input has shape {array.shape} ({array.ndim}-D) but the model expects shape {_shape(expected)} "
            f"({len(expected)}-D); reshape it"
        )
    problems = [
        f"axis {axis}: expected size {size}, got {actual}"
        + (f" (the model takes {size} features, the input has {actual})" if axis == 1 else "")
        for axis, (size, actual) in enumerate(zip(expected, array.shape, strict=True))
        if size != -1 and size != actual
    ]
    if problems:
        raise SignatureError(f"input shape {array.shape} does not fit {_shape(expected)}: " + "; ".join(problems))
    cast = _cast(array, array_dtype(array), str(schema.dtype), "input array", problems)
    _raise(problems)
    return cast


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("n" if size == -1 else str(size) for size in shape) + ")"


# -- the cast rules ----------------------------------------------------------------------
def _cast(values: Any, got: str, expected: str, label: str, problems: list[str]) -> Any:
    """`values` converted from dtype `got` to `expected` when safe; else a problem is recorded."""
    if got == expected or expected == "object":
        return values
    source, target = _kind(got), _kind(expected)
    if target == "f" and source in _FLOAT_SOURCES:
        cast, overflowed = _to_float(values, got, expected)
        if overflowed is None:
            return cast
        problems.append(
            f"{label}: expected {expected}, got {got} with {overflowed!r}, beyond the {expected} range "
            "(the cast would make it infinite); scale the values first"
        )
        return values
    if target in "iu" and source in _INT_SOURCES:
        missing = _missing(values)
        if missing:
            problems.append(
                f"{label}: expected {expected}, got {got} with {missing} missing value(s), which {expected} cannot "
                "hold; fill or drop them first"
            )
            return values
        if _fits(values, expected):
            return values.astype(expected)
        problems.append(f"{label}: expected {expected}, got {got} with values outside the {expected} range")
        return values
    if target == "M" and source == "M":
        return values.astype(expected)
    if target == "C" and source == "S":
        return values.astype("category")
    if target == "S" and source == "C":
        return values  # a categorical of strings reads as strings
    problems.append(f"{label}: expected {expected}, got {got}{_hint(source, target)}")
    return values


def _kind(dtype: str) -> str:
    """One letter per family: NumPy's kinds, plus S for string, C for category, O for object."""
    if dtype == "string":
        return "S"
    if dtype == "category":
        return "C"
    if dtype == "object":
        return "O"
    import numpy as np

    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "O"


def _to_float(values: Any, got: str, expected: str) -> tuple[Any, Any]:
    """`values` cast to the float dtype `expected`, and the first value the cast made infinite (None if none):
    NumPy turns a value beyond a narrower float's range into inf without a word."""
    import numpy as np

    if np.dtype(expected).itemsize >= 8 >= np.dtype(got).itemsize:  # float64 holds every such value: no pass
        return values.astype(expected), None
    with np.errstate(over="ignore"):
        cast = values.astype(expected)
    made_infinite = np.isinf(_float64(cast)) & np.isfinite(_float64(values))
    if not made_infinite.any():
        return cast, None
    value = np.asarray(values).flat[int(made_infinite.argmax())]
    return cast, value.item() if isinstance(value, np.generic) else value


def _float64(values: Any) -> Any:
    """A float64 NumPy array of a Series (missing values as NaN) or an array."""
    import numpy as np

    if hasattr(values, "to_numpy"):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    return np.asarray(values, dtype="float64")


def _missing(values: Any) -> int:
    """How many values are missing (<NA> of a nullable column); a NumPy array of integers has none."""
    return int(values.isna().sum()) if hasattr(values, "isna") else 0


def _fits(values: Any, expected: str) -> bool:
    import numpy as np

    if len(values) == 0:
        return True
    info = np.iinfo(expected)
    array = np.asarray(values)
    return bool(array.min() >= info.min and array.max() <= info.max)


def _hint(source: str, target: str) -> str:
    if source == "S" and target in "iuf":
        return "; strings are not converted to numbers: parse them before predicting"
    if source == "f" and target in "iu":
        return "; floats are not truncated to integers: round and cast them first"
    return ""


def _raise(problems: list[str]) -> None:
    if problems:
        raise SignatureError("input does not match the model signature: " + "; ".join(problems))
