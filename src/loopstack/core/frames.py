"""One conversion of whatever table a user holds into Arrow, for every capability.

Tracking versions it, drift tests it, quality checks it and the feature store
joins it: each accepts Arrow, pandas, polars, NumPy, a dict of columns, a list
of row dicts or a DuckDB relation, and each gets the same Arrow table back.
"""

from __future__ import annotations

from typing import Any

from loopstack.core.errors import ValidationError

ACCEPTED = "an Arrow table, a pandas or polars DataFrame, a NumPy array, a dict of columns or a list of row dicts"


def to_arrow(data: Any, what: str = "read a data set from", hint: str = "") -> Any:
    """An Arrow table from any in-memory table; `what` and `hint` phrase the error.

    Examples
    --------
    >>> to_arrow({"x": [1, 2]}).num_rows
    2
    >>> to_arrow([{"x": 1}, {"x": 2}]).column_names
    ['x']
    """
    import pyarrow as pa

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
    if module == "numpy":
        return _from_numpy(data)
    if module == "duckdb":
        return duckdb_to_arrow(data)
    if isinstance(data, dict):
        return pa.table(data)
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return pa.Table.from_pylist(data)
    raise ValidationError(f"cannot {what} {type(data).__name__}; pass {ACCEPTED}{hint}")


def duckdb_to_arrow(relation: Any) -> Any:
    """An Arrow table from a DuckDB relation, across DuckDB's method renames."""
    for method in ("to_arrow_table", "arrow"):
        function = getattr(relation, method, None)
        if function is not None:
            table = function()
            return table.read_all() if hasattr(table, "read_all") else table
    raise ValidationError("this DuckDB version offers no Arrow export; install duckdb>=1.1")


def _from_numpy(data: Any) -> Any:
    import numpy as np
    import pyarrow as pa

    array = np.asarray(data)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValidationError(f"cannot use an array of shape {array.shape} as a table; pass a 1-D or 2-D array")
    return pa.table({f"c{i}": array[:, i] for i in range(array.shape[1])})
