"""Model signatures: the input and output schema a model was logged with.

A signature is inferred from an example input (and from the model's
prediction on it) when the model is logged, stored in the model's manifest,
and enforced on every `predict`: a model that silently receives columns in
another order or strings where it was trained on floats predicts garbage
instead of failing. See `loopstack.registry.checks` for the enforcement.

Two shapes of schema exist, as in MLflow: *columns* (a pandas DataFrame or an
Arrow table: names and dtypes) and *tensor* (a NumPy array: dtype and shape,
``-1`` for any size). Dtypes are NumPy names (``int64``, ``float32``, ``bool``,
``datetime64[ns]``) plus ``string``, ``category`` and ``object``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopstack.core.errors import ValidationError

COLUMNS, TENSOR = "columns", "tensor"


@dataclass(frozen=True)
class ColumnSpec:
    """One input or output column: its name and dtype."""

    name: str
    dtype: str


@dataclass(frozen=True)
class Schema:
    """The schema of one side of a model.

    `container` says which type the model was given at logging time
    (``pandas``, ``arrow`` or ``numpy``); checked input is handed to the
    model in that type again, so a function logged with an Arrow table keeps
    receiving Arrow tables.
    """

    kind: str
    container: str
    columns: tuple[ColumnSpec, ...] = ()
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == COLUMNS:
            columns = [{"name": c.name, "dtype": c.dtype} for c in self.columns]
            return {"type": COLUMNS, "container": self.container, "columns": columns}
        return {"type": TENSOR, "container": self.container, "dtype": self.dtype, "shape": list(self.shape or ())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        if data["type"] == COLUMNS:
            columns = tuple(ColumnSpec(c["name"], c["dtype"]) for c in data["columns"])
            return cls(COLUMNS, data["container"], columns=columns)
        return cls(TENSOR, data["container"], dtype=data["dtype"], shape=tuple(data["shape"]))

    def __str__(self) -> str:
        if self.kind == COLUMNS:
            return "{" + ", ".join(f"{c.name}: {c.dtype}" for c in self.columns) + "}"
        return f"{self.dtype}{list(self.shape or ())}"


@dataclass(frozen=True)
class Signature:
    """Input and (when known) output schema of a model.

    Examples
    --------
    >>> import pandas as pd
    >>> signature = infer_signature(pd.DataFrame({"age": [31, 45], "income": [1.5, 2.0]}))
    >>> str(signature.inputs)
    '{age: int64, income: float64}'
    >>> Signature.from_dict(signature.to_dict()) == signature
    True
    """

    inputs: Schema
    outputs: Schema | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs.to_dict(), "outputs": None if self.outputs is None else self.outputs.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Signature | None:
        if not data:
            return None
        outputs = data.get("outputs")
        return cls(Schema.from_dict(data["inputs"]), None if outputs is None else Schema.from_dict(outputs))

    def __str__(self) -> str:
        return f"inputs {self.inputs} -> outputs {self.outputs if self.outputs is not None else '?'}"


def infer_signature(example: Any, output: Any = None) -> Signature:
    """Infer a signature from an example input and, optionally, the model's output on it."""
    return Signature(infer_schema(example), None if output is None else infer_schema(output))


def infer_schema(data: Any) -> Schema:
    """The schema of a DataFrame, Series, Arrow table, NumPy array or list."""
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return _pandas_schema(data)
    if module == "pyarrow":
        return _arrow_schema(data)
    if module == "polars":
        return _arrow_schema(data.to_arrow())
    if module == "numpy" or isinstance(data, list | tuple):
        import numpy as np

        array = np.asarray(data)
        if array.ndim == 0:
            raise ValidationError("cannot infer a signature from a scalar; pass a batch of rows")
        return Schema(TENSOR, "numpy", dtype=array_dtype(array), shape=(-1, *array.shape[1:]))
    raise ValidationError(
        f"cannot infer a signature from {type(data).__name__}; pass a pandas DataFrame, "
        "an Arrow table or a NumPy array as the example"
    )


def _pandas_schema(data: Any) -> Schema:
    import pandas as pd

    frame = (
        data.to_frame(name=data.name if data.name is not None else "prediction")
        if isinstance(data, pd.Series)
        else data
    )
    if not isinstance(frame, pd.DataFrame):
        raise ValidationError(f"cannot infer a signature from pandas {type(data).__name__}")
    columns = tuple(ColumnSpec(str(name), series_dtype(frame[name])) for name in frame.columns)
    return Schema(COLUMNS, "pandas", columns=columns)


def _arrow_schema(data: Any) -> Schema:
    import pyarrow as pa

    if isinstance(data, pa.ChunkedArray | pa.Array):
        data = pa.table({"prediction": data})
    columns = tuple(ColumnSpec(field.name, arrow_dtype(field.type)) for field in data.schema)
    return Schema(COLUMNS, "arrow", columns=columns)


def series_dtype(series: Any) -> str:
    """The canonical dtype name of a pandas column."""
    import numpy as np
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return np.dtype(getattr(dtype, "numpy_dtype", dtype)).name
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return str(dtype)
    if isinstance(dtype, pd.StringDtype) or pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return "string"
    return "object"


def array_dtype(array: Any) -> str:
    """The canonical dtype name of a NumPy array."""
    kind = array.dtype.kind
    if kind in "US":
        return "string"
    return "object" if kind == "O" else array.dtype.name


def arrow_dtype(arrow_type: Any) -> str:
    """The canonical dtype name of an Arrow type."""
    import numpy as np
    import pyarrow as pa

    types = pa.types
    if types.is_boolean(arrow_type):
        return "bool"
    if types.is_integer(arrow_type) or types.is_floating(arrow_type):
        return np.dtype(arrow_type.to_pandas_dtype()).name
    if types.is_string(arrow_type) or types.is_large_string(arrow_type) or types.is_string_view(arrow_type):
        return "string"
    if types.is_timestamp(arrow_type):  # named as pandas names it, which is what checked input is compared in
        return f"datetime64[{arrow_type.unit}, {arrow_type.tz}]" if arrow_type.tz else f"datetime64[{arrow_type.unit}]"
    if types.is_dictionary(arrow_type):
        return "category"
    return "object"
