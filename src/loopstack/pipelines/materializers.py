"""How a step's output becomes bytes in the artifact store, and back.

Tables go to Parquet (columnar, compact, readable by any tool: a step's
output can be opened in DuckDB without loopstack), NumPy arrays to ``.npy``,
plain JSON data to JSON, and anything else to a cloudpickle. The format is
recorded with the digest, so a read picks the right loader. Heavy libraries
are imported only when a value of theirs is stored or read.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Materializer:
    """One storage format: which values it takes, and how to write and read them."""

    format: str
    handles: Callable[[Any], bool]
    dump: Callable[[Any], bytes]
    load: Callable[[bytes], Any]


def _module_of(value: Any) -> str:
    return type(value).__module__.split(".", 1)[0]


def _is_arrow(value: Any) -> bool:
    return _module_of(value) == "pyarrow" and type(value).__name__ == "Table"


def _is_pandas(value: Any) -> bool:
    return _module_of(value) == "pandas" and type(value).__name__ == "DataFrame"


def _is_polars(value: Any) -> bool:
    return _module_of(value) == "polars" and type(value).__name__ == "DataFrame"


def _is_numeric_array(value: Any) -> bool:
    return _module_of(value) == "numpy" and type(value).__name__ == "ndarray" and value.dtype.kind in "biufcmM"


def _is_json(value: Any) -> bool:
    if isinstance(value, bool | int | str | type(None)):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))  # NaN and inf are not JSON
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _read_parquet(data: bytes) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def _pandas_dump(frame: Any) -> bytes:
    import pyarrow as pa

    return _parquet_bytes(pa.Table.from_pandas(frame))


def _npy_dump(array: Any) -> bytes:
    import numpy as np

    sink = io.BytesIO()
    np.save(sink, array, allow_pickle=False)
    return sink.getvalue()


def _npy_load(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def _pickle_dump(value: Any) -> bytes:
    import cloudpickle

    return bytes(cloudpickle.dumps(value, protocol=5))


def _pickle_load(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)  # the bytes were verified against their sha256 before this point


MATERIALIZERS: tuple[Materializer, ...] = (
    Materializer("json", _is_json, lambda v: json.dumps(v, sort_keys=True).encode(), lambda b: json.loads(b)),
    Materializer("arrow", _is_arrow, _parquet_bytes, _read_parquet),
    Materializer("pandas", _is_pandas, _pandas_dump, lambda b: _read_parquet(b).to_pandas()),
    Materializer(
        "polars",
        _is_polars,
        lambda v: _parquet_bytes(v.to_arrow()),
        lambda b: __import__("polars").from_arrow(_read_parquet(b)),
    ),
    Materializer("npy", _is_numeric_array, _npy_dump, _npy_load),
    Materializer("pickle", lambda v: True, _pickle_dump, _pickle_load),
)
_BY_FORMAT = {m.format: m for m in MATERIALIZERS}


def dump(value: Any) -> tuple[str, bytes]:
    """The format name and bytes for `value`.

    Examples
    --------
    >>> dump({"rows": 3})
    ('json', b'{"rows": 3}')
    >>> load(*dump([1, 2.5, "x"]))
    [1, 2.5, 'x']
    """
    for materializer in MATERIALIZERS:
        if materializer.handles(value):
            try:
                return materializer.format, materializer.dump(value)
            except Exception:  # e.g. a pandas object column of mixed types has no Parquet type
                if materializer.format == "pickle":
                    raise
                return "pickle", _pickle_dump(value)
    raise AssertionError("the pickle materializer takes everything")  # pragma: no cover


def load(format: str, data: bytes) -> Any:
    """The value stored as `data` in `format`."""
    materializer = _BY_FORMAT.get(format)
    if materializer is None:
        from loopstack.core.errors import ValidationError

        raise ValidationError(f"unknown artifact format {format!r}; known: {sorted(_BY_FORMAT)}")
    return materializer.load(data)


def type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


__all__ = ["MATERIALIZERS", "Materializer", "dump", "load", "type_name"]
