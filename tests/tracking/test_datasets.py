"""Data versions: the digest follows the rows, not how they happen to be chunked."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.tracking.datasets import HASH_BATCH_ROWS, content_hash, read_table


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), min_size=1, max_size=200),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_the_same_rows_in_any_chunks_have_one_digest(values: list[int | None], cuts: list[int]) -> None:
    table = pa.table({"n": pa.array(values, pa.int64()), "s": [None if v is None else str(v) for v in values]})
    bounds = sorted({0, len(values), *(min(c, len(values)) for c in cuts)})
    chunked = pa.concat_tables([table.slice(a, b - a) for a, b in pairwise(bounds)])
    assert content_hash(chunked) == content_hash(table)
    changed = table.set_column(0, "n", pa.array([*values[:-1], 7 if values[-1] != 7 else 8], pa.int64()))
    assert content_hash(changed) != content_hash(table)


def test_a_parquet_file_hashes_the_same_whatever_its_row_groups(tmp_path: Path) -> None:
    rows = HASH_BATCH_ROWS + 1_000  # more than one hashing batch, so batch boundaries are crossed too
    table = pa.table({"a": range(rows), "b": [f"row-{i}" for i in range(rows)]})
    pq.write_table(table, tmp_path / "one.parquet")
    pq.write_table(table, tmp_path / "many.parquet", row_group_size=777)
    assert content_hash(read_table(tmp_path / "one.parquet")) == content_hash(read_table(tmp_path / "many.parquet"))
