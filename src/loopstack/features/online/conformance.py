"""The contract every online store backend must pass, runnable against any of them.

Each check takes a zero-argument factory returning a fresh, empty store and
raises AssertionError on a violation. The test suite runs all of them over
SQLite and Redis; a new backend runs them too (``run_all(factory)``).

Examples
--------
>>> import tempfile, pathlib
>>> from loopstack.features.online.sqlite import SqliteOnlineStore
>>> run_all(lambda: SqliteOnlineStore("sqlite:///c.db", root=pathlib.Path(tempfile.mkdtemp())))
['roundtrip', 'newer_wins', 'newest_in_one_batch', 'many_views_one_call', 'delete_view', 'large_batches']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loopstack.features.online.base import OnlineStore

Factory = Callable[[], OnlineStore]


def _rows(keys: list[str], ts: list[int], created: list[int] | None = None, values: list[str] | None = None) -> Any:
    import pyarrow as pa

    return pa.table({"key": keys, "event_ts": pa.array(ts, pa.int64()),
                     "created_ts": pa.array(created or ts, pa.int64()),
                     "value": values or [f'{{"v":{t}}}' for t in ts]})


def check_roundtrip(make: Factory) -> None:
    store = make()
    try:
        assert store.write_batch("v", _rows(["1", "2"], [10, 20])) == 2
        assert store.read([("v", ["2", "x", "1", "2"])]) == [[(20, '{"v":20}'), None, (10, '{"v":10}'),
                                                              (20, '{"v":20}')]]
        assert store.read([("v", [])]) == [[]]
        assert store.read([("other", ["1"])]) == [[None]]
    finally:
        store.close()


def check_newer_wins(make: Factory) -> None:
    store = make()
    try:
        store.write_batch("v", _rows(["k"], [100], [100], ['{"v":"first"}']))
        store.write_batch("v", _rows(["k"], [50], [500], ['{"v":"older event"}']))
        assert store.read([("v", ["k"])]) == [[(100, '{"v":"first"}')]]
        store.write_batch("v", _rows(["k"], [100], [99], ['{"v":"older created"}']))
        assert store.read([("v", ["k"])]) == [[(100, '{"v":"first"}')]]
        store.write_batch("v", _rows(["k"], [100], [101], ['{"v":"correction"}']))
        assert store.read([("v", ["k"])]) == [[(100, '{"v":"correction"}')]]
        store.write_batch("v", _rows(["k"], [100], [101], ['{"v":"replay"}']))
        assert store.read([("v", ["k"])]) == [[(100, '{"v":"replay"}')]]
        store.write_batch("v", _rows(["k"], [200], [0], ['{"v":"newer"}']))
        assert store.read([("v", ["k"])]) == [[(200, '{"v":"newer"}')]]
    finally:
        store.close()


def check_newest_in_one_batch(make: Factory) -> None:
    store = make()
    try:
        store.write_batch("v", _rows(["k", "k", "j", "j"], [100, 50, 10, 20], [1, 9, 1, 1],
                                     ['{"v":"new"}', '{"v":"old"}', '{"v":"j old"}', '{"v":"j new"}']))
        assert store.read([("v", ["k", "j"])]) == [[(100, '{"v":"new"}'), (20, '{"v":"j new"}')]]
    finally:
        store.close()


def check_many_views_one_call(make: Factory) -> None:
    store = make()
    try:
        store.write_batch("a", _rows(["1"], [1]))
        store.write_batch("b", _rows(["1", "2"], [2, 3]))
        got = store.read([("a", ["1", "2"]), ("b", ["2", "1"])])
        assert got == [[(1, '{"v":1}'), None], [(3, '{"v":3}'), (2, '{"v":2}')]]
    finally:
        store.close()


def check_delete_view(make: Factory) -> None:
    store = make()
    try:
        store.write_batch("a", _rows(["1"], [1]))
        store.write_batch("b", _rows(["1"], [2]))
        store.delete_view("a")
        assert store.read([("a", ["1"]), ("b", ["1"])]) == [[None], [(2, '{"v":2}')]]
    finally:
        store.close()


def check_large_batches(make: Factory) -> None:
    store = make()
    try:
        keys = [str(i) for i in range(2_500)]
        store.write_batch("v", _rows(keys, list(range(2_500))))
        wanted = [*keys[::2], "missing"]
        got = store.read([("v", wanted)])[0]
        assert got[:-1] == [(int(k), f'{{"v":{k}}}') for k in keys[::2]] and got[-1] is None
    finally:
        store.close()


CHECKS = {
    "roundtrip": check_roundtrip,
    "newer_wins": check_newer_wins,
    "newest_in_one_batch": check_newest_in_one_batch,
    "many_views_one_call": check_many_views_one_call,
    "delete_view": check_delete_view,
    "large_batches": check_large_batches,
}


def run_all(make: Factory) -> list[str]:
    """Run every check against `make`; returns the names of the checks passed."""
    for check in CHECKS.values():
        check(make)
    return list(CHECKS)


__all__ = ["CHECKS", "run_all"]
