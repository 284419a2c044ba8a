"""The array core of point-in-time retrieval: a sort and a binary search, against brute force."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.features.asof import dense_codes, latest_rows

source_rows = st.lists(st.tuples(st.integers(-1, 3), st.integers(-5, 30), st.integers(0, 4)), max_size=50)
queries = st.lists(st.tuples(st.integers(-1, 4), st.integers(-8, 35)), max_size=30)


def _brute_force(rows: list[Any], code: int, at: int, ttl: int | None) -> int:
    """Index of the row the query sees: on a full tie of event and created time, the last one."""
    valid = [(i, r) for i, r in enumerate(rows)
             if code >= 0 and r[0] == code and r[1] <= at and (ttl is None or r[1] >= at - ttl)]
    if not valid:
        return -1
    return max(valid, key=lambda found: (found[1][1], found[1][2], found[0]))[0]


@settings(max_examples=200, deadline=None)
@given(rows=source_rows, asks=queries, ttl=st.none() | st.integers(0, 10), ranks=st.booleans())
def test_latest_rows_matches_brute_force(rows: list[Any], asks: list[Any], ttl: int | None, ranks: bool) -> None:
    """`ranks` forces the packing by rank of event time that very wide time spans need."""
    codes, event, created = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(3))
    query_codes = np.array([q[0] for q in asks], dtype=np.int64)
    query_us = np.array([q[1] for q in asks], dtype=np.int64)
    got = latest_rows(codes, event, created, query_codes, query_us, ttl, pack_limit=1 if ranks else 2**62)
    for (code, at), index in zip(asks, got.tolist(), strict=True):
        assert index == _brute_force(rows, code, at, ttl)


def test_latest_rows_with_times_spanning_the_whole_int64_range() -> None:
    far = 2**62
    codes = np.array([0, 0, 1, 1], dtype=np.int64)
    event = np.array([-far, far, -far, 0], dtype=np.int64)
    created = np.zeros(4, dtype=np.int64)
    got = latest_rows(codes, event, created, np.array([0, 0, 1, 1]), np.array([0, far, -far - 1, far]), None)
    assert got.tolist() == [0, 1, -1, 3]


def test_dense_codes_agree_between_source_and_queries_for_every_key_kind() -> None:
    cases = [
        ([pa.array([5, 7, None, 5], pa.int64())], [pa.array([7, 5, 6, None, 10**12], pa.int64())]),
        ([pa.array([2**60, -(2**60), 3])], [pa.array([3, 2**60, 4])]),  # too wide to use as offsets
        ([pa.array(["a", "b", None])], [pa.array(["b", "z", None, "a"])]),
        ([pa.array(["a", "b", "a"]).dictionary_encode()], [pa.array(["b", "c"])]),  # a categorical column
        ([pa.array([-128, 5, None], pa.int8())], [pa.array([5, -128, 7], pa.int8())]),
        ([pa.array([1, 1, 2, 2]), pa.array(["x", "y", "x", None])],
         [pa.array([2, 1, 1, 3]), pa.array(["x", "y", "z", "x"])]),
    ]
    for source, query in cases:
        codes, query_codes = dense_codes(source, query)
        source_tuples = list(zip(*(c.to_pylist() for c in source), strict=True))
        query_tuples = list(zip(*(c.to_pylist() for c in query), strict=True))
        for q, qc in zip(query_tuples, query_codes.tolist(), strict=True):
            matches = {c for t, c in zip(source_tuples, codes.tolist(), strict=True) if t == q and None not in t}
            if None in q or q not in source_tuples:
                assert qc == -1 or qc not in codes.tolist()  # matches nothing
            else:
                assert matches == {qc}
        for t, c in zip(source_tuples, codes.tolist(), strict=True):
            assert (c == -1) == (None in t)
        assert len({c for c in codes.tolist() if c >= 0}) == len({t for t in source_tuples if None not in t})


def test_a_full_tie_goes_to_the_last_source_row_in_a_large_source() -> None:
    """Large enough that the (unstable) SIMD sort reorders equal keys: the tie rule must not rest on it."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 50, 200_000)
    event = rng.integers(0, 4, 200_000)
    created = np.zeros(200_000, dtype=np.int64)
    got = latest_rows(codes, event, created, np.arange(50), np.full(50, 3), None)
    expected = [int(np.flatnonzero((codes == code) & (event == event[codes == code].max()))[-1]) for code in range(50)]
    assert got.tolist() == expected


@settings(max_examples=200, deadline=None)
@given(rows=source_rows, ranks=st.booleans())
def test_latest_per_code_is_the_latest_row_of_every_code(rows: list[Any], ranks: bool) -> None:
    """What materialization copies: per code, the row a query after every event time would see."""
    from loopstack.features.asof import latest_per_code

    codes, event, created = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(3))
    got = latest_per_code(codes, event, created, pack_limit=1 if ranks else 2**62)
    expected = sorted(_brute_force(rows, code, 10**6, None) for code in {r[0] for r in rows if r[0] >= 0})
    assert got.tolist() == expected
