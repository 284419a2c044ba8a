"""Data versions: a content hash and summary statistics for every data set a run reads.

The hash covers the data, not the file name, so the same rows read from two
places are one version and a changed row is a new one.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from loopstack.core.errors import ValidationError

MAX_BALANCE_CLASSES = 50


def to_arrow(data: Any) -> Any:
    """An Arrow table from Arrow, pandas, polars, a NumPy array or a dict of columns."""
    from loopstack.core.frames import to_arrow as convert

    return convert(data, "read a data set from")


HASH_BATCH_ROWS = 65_536


def content_hash(table: Any) -> str:
    """sha256 of the table's Arrow IPC stream, schema metadata dropped (pandas index hints vary).

    The stream holds one record batch per chunk, so the rows go in batches of a fixed size: the same
    rows split into other chunks (Parquet row groups, a concatenation) are the same version. Each
    batch is copied out of its chunks and hashed on its own, so memory stays at one batch.
    """
    import pyarrow as pa

    table = table.replace_schema_metadata(None)
    digest = _HashingFile()
    with pa.PythonFile(digest, mode="w") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for start in range(0, table.num_rows, HASH_BATCH_ROWS):
            rows = table.slice(start, HASH_BATCH_ROWS)
            # concatenated into fresh buffers: a slice of one chunk keeps its parent's buffers, which
            # the stream writes with a different length than the same values of a smaller chunk
            columns = [pa.concat_arrays(column.chunks) for column in rows.columns]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=table.schema))
    return digest.sha256.hexdigest()


class _HashingFile:
    """A write-only file that keeps nothing but the sha256 of what was written."""

    closed = False

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def describe(data: Any, name: str | None, source: str, targets: Any = None) -> dict[str, Any]:
    """A `datasets` row: digest, rows, schema, and stats including label balance."""
    table = to_arrow(data)
    label_table = None
    if isinstance(targets, str):
        if targets not in table.column_names:
            raise ValidationError(f"targets={targets!r} is not a column; columns: {table.column_names}")
        label = table.column(targets)
    elif targets is not None:
        label_table = to_arrow(targets)
        label = label_table.column(0)
        if len(label) != table.num_rows:
            raise ValidationError(
                f"targets has {len(label)} rows but the data has {table.num_rows}; pass aligned labels"
            )
    else:
        label = None
    digest = content_hash(table) if label_table is None else _combined(table, label_table)
    stats: dict[str, Any] = {
        "columns": table.num_columns,
        "null_counts": {c: table.column(c).null_count for c in table.column_names if table.column(c).null_count},
    }
    if label is not None:
        stats["label_balance"] = _balance(label)
    return {
        "digest": digest,
        "name": name or source,
        "source": source,
        "num_rows": table.num_rows,
        "schema": {field.name: str(field.type) for field in table.schema},
        "stats": stats,
        "created_at": time.time(),
    }


def read_table(path: str | Path) -> Any:
    """Read a Parquet or CSV file (or a folder of Parquet files) as Arrow."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise ValidationError(f"data file {path} does not exist; check the path")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        return pq.read_table(path)
    if path.suffix in (".csv", ".tsv"):
        options = pacsv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",")
        return pacsv.read_csv(path, parse_options=options)
    raise ValidationError(f"cannot read {path}: use a .parquet or .csv file, or a folder of Parquet files")


def _combined(table: Any, labels: Any) -> str:
    return hashlib.sha256((content_hash(table) + content_hash(labels)).encode()).hexdigest()


def _balance(label: Any) -> dict[str, float]:
    import pyarrow.compute as pc

    counts = pc.value_counts(label).to_pylist()
    if len(counts) > MAX_BALANCE_CLASSES:
        return {}
    total = sum(item["counts"] for item in counts) or 1
    return {str(item["values"]): item["counts"] / total for item in counts}
