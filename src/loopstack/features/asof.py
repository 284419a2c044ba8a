"""The point-in-time match as a sort and a binary search over integer arrays.

DuckDB has no join for "the latest row at or before t, within a window, ties
broken by a second column" that beats a hash join filtered to the window and
an arg_max per entity row; that plan does work proportional to the rows inside
the window. Here the source rows are sorted once by (entity, event time,
created time) packed into one int64, and every entity row finds its candidate
with one ``searchsorted``: the work is a sort of the source plus a log-time
probe per entity row, independent of the ttl.

Entities arrive as dense integer codes (-1 for a null key, which never
matches); times as integer microseconds.
"""

from __future__ import annotations

from typing import Any

_PACK_LIMIT = 2**62  # packed keys stay below this, so no sum or product overflows int64


def latest_rows(codes: Any, event_us: Any, created_us: Any, query_codes: Any, query_us: Any,
                ttl_us: int | None, pack_limit: int = _PACK_LIMIT) -> Any:
    """For each query, the index of the source row it sees, or -1.

    The row seen is the one with the query's code whose event time is the
    latest at or before the query time and at least ``query - ttl`` (both
    bounds inclusive); among rows sharing that event time, the largest created
    time, and on a full tie the last of them (the offline join's rule on every
    plan). `pack_limit` exists so tests can force the rank-based packing that
    very wide time spans need.
    """
    import numpy as np

    answer = np.full(len(query_codes), -1, dtype=np.int64)
    if not len(codes) or not len(query_codes) or codes.max() < 0:
        return answer
    kept = None if codes.min() >= 0 else np.flatnonzero(codes >= 0)
    if kept is not None:
        codes, event_us, created_us = codes[kept], event_us[kept], created_us[kept]
    source_offset, query_offset, width = _time_offsets(event_us, query_us, int(codes.max()) + 1, pack_limit)
    packed = codes * width
    packed += source_offset
    order = np.argsort(packed)  # not stable, but SIMD-sorted: twice as fast; ties are ordered next
    packed = packed[order]
    _order_ties(order, packed, created_us)
    position = _search_right(packed, query_codes * width + query_offset) - 1
    candidate = order[np.maximum(position, 0)]
    seen = (position >= 0) & (query_codes >= 0) & (codes[candidate] == query_codes)
    seen &= event_us[candidate] <= query_us
    if ttl_us is not None:
        seen &= event_us[candidate] >= query_us - ttl_us
    answer[seen] = candidate[seen] if kept is None else kept[candidate[seen]]
    return answer


def latest_per_code(codes: Any, event_us: Any, created_us: Any, pack_limit: int = _PACK_LIMIT) -> Any:
    """Ascending indexes of each code's latest row, by the rule of `latest_rows` (what materialization copies).

    Rows with code -1 take no part.
    """
    import numpy as np

    if not len(codes) or codes.max() < 0:
        return np.empty(0, dtype=np.int64)
    kept = None if codes.min() >= 0 else np.flatnonzero(codes >= 0)
    if kept is not None:
        codes, event_us, created_us = codes[kept], event_us[kept], created_us[kept]
    source_offset, _, width = _time_offsets(event_us, event_us[:0], int(codes.max()) + 1, pack_limit)
    packed = codes * width
    packed += source_offset
    order = np.argsort(packed)
    packed = packed[order]
    _order_ties(order, packed, created_us)
    ranked = codes[order]
    ends = np.flatnonzero(ranked[1:] != ranked[:-1])  # the last row of each code's run, but the final one
    winners = np.sort(order[np.append(ends, len(order) - 1)])
    return winners if kept is None else kept[winners]


def _search_right(haystack: Any, needles: Any) -> Any:
    """``searchsorted(side="right")`` with the needles probed in ascending order (cache-friendly)."""
    import numpy as np

    ascending = np.argsort(needles)
    found = np.empty(len(needles), dtype=np.int64)
    found[ascending] = np.searchsorted(haystack, needles[ascending], side="right")
    return found


def _time_offsets(event_us: Any, query_us: Any, code_count: int, pack_limit: int) -> tuple[Any, Any, int]:
    """Event and query times as small non-negative offsets, and the width that packs them under a code.

    A source offset is >= 1; a query offset is the offset of the latest event
    time at or before it, or 0 when it precedes them all, so "packed source <=
    packed query" means "same code and event time <= query time". Times are
    shifted by the earliest event time when the span fits; otherwise replaced
    by their rank among the distinct event times.
    """
    import numpy as np

    earliest = int(event_us.min())
    span = int(event_us.max()) - earliest + 1
    if code_count * (span + 1) < pack_limit:
        return event_us - (earliest - 1), np.clip(query_us - (earliest - 1), 0, span), span + 1
    distinct = np.unique(event_us)
    source = np.searchsorted(distinct, event_us) + 1
    query = np.searchsorted(distinct, query_us, side="right")
    return source, query, len(distinct) + 1


def _order_ties(order: Any, packed: Any, created_us: Any) -> None:
    """Within each run of equal (entity, event time), reorder `order` by created time, then source row.

    The sort that made the runs is not stable, so a full tie is put in source
    order here: the search then picks the last source row. Ties are rare, so
    only the rows inside a tie are sorted again.
    """
    import numpy as np

    tied = packed[1:] == packed[:-1]
    if not tied.any():
        return
    involved = np.zeros(len(packed), dtype=bool)
    involved[1:] |= tied
    involved[:-1] |= tied
    spots = np.flatnonzero(involved)
    rows = order[spots]
    order[spots] = rows[np.lexsort((rows, created_us[rows], packed[spots]))]


def dense_codes(source_keys: list[Any], query_keys: list[Any]) -> tuple[Any, Any]:
    """One integer per distinct join-key tuple, shared by the source and the queries; -1 for a null.

    Several key columns combine into one code. A query key absent from the
    source may get -1 too: it matches nothing either way.
    """
    import numpy as np
    import pyarrow as pa

    combined = combined_query = None
    for source, query in zip(source_keys, query_keys, strict=True):
        if pa.types.is_dictionary(source.type):  # e.g. a pandas categorical stored in Parquet
            source = source.cast(source.type.value_type)
        codes, query_codes, count = _column_codes(source, query.cast(source.type))
        if combined is None:
            combined, combined_query = codes, query_codes
            continue
        missing, missing_query = (combined < 0) | (codes < 0), (combined_query < 0) | (query_codes < 0)
        combined, combined_query = combined * count + codes, combined_query * count + query_codes
        if max(combined.max(initial=0), combined_query.max(initial=0)) >= 2**31:  # keep codes small
            both = np.unique(np.concatenate([combined, combined_query]), return_inverse=True)[1]
            combined, combined_query = both[:len(combined)], both[len(combined):]
        combined[missing], combined_query[missing_query] = -1, -1
    return combined, combined_query


def _column_codes(source: Any, query: Any) -> tuple[Any, Any, int]:
    """Codes of one key column (source, queries) and how many codes there can be.

    Integer ids over a compact range are their own codes (offset by the
    minimum); anything else goes through Arrow's hash-based dictionary encoding.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    compact = pa.types.is_signed_integer(source.type) or source.type in (pa.uint8(), pa.uint16(), pa.uint32())
    low, high = pc.min_max(source).values() if compact and len(source) else (None, None)
    low, high = (low.as_py(), high.as_py()) if low is not None else (None, None)
    if low is not None and high - low < max(4 * len(source), 1 << 20):
        return _offset(source, low, high), _offset(query, low, high), high - low + 1
    values = pa.chunked_array([*_chunks(source), *_chunks(query)], source.type).combine_chunks()
    encoded = pc.dictionary_encode(values)
    codes = encoded.indices.fill_null(-1).to_numpy().astype(np.int64)
    return codes[:len(source)], codes[len(source):], len(encoded.dictionary)


def _offset(values: Any, low: int, high: int) -> Any:
    """``value - low`` for values in [low, high], -1 for the rest and for nulls."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    wide = values.cast(pa.int64())
    numbers = pc.fill_null(wide, low - 1 if low > -(2**63) else high + 1).to_numpy().astype(np.int64, copy=False)
    codes = numbers - low
    codes[(codes < 0) | (codes > high - low)] = -1
    return codes


def _chunks(values: Any) -> list[Any]:
    return list(values.chunks) if hasattr(values, "chunks") else [values]


__all__ = ["dense_codes", "latest_per_code", "latest_rows"]
