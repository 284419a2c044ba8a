"""The dynamic batcher: lone requests run at once, concurrent ones share a predict, results go back to their owners."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.serving.conftest import SlowModel

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.serving import Batcher, ModelSpec, QueueFullError
from loopstack.serving.batcher import ModelError
from loopstack.serving.models import adapt


def _batcher(model: SlowModel, **settings: float) -> Batcher:
    spec = ModelSpec(name="slow", model=model, **settings)
    return Batcher(adapt(model, spec), spec, ThreadPoolExecutor(1))


def test_a_lone_request_does_not_wait_for_a_batch() -> None:
    model = SlowModel(delay_s=0.0)
    batcher = _batcher(model, max_wait_ms=500.0)

    async def main() -> float:
        await batcher.submit(np.ones((1, 3)), "warm")
        started = time.perf_counter()
        await batcher.submit(np.ones((1, 3)), "lone")
        elapsed = time.perf_counter() - started
        await batcher.drain()
        return elapsed

    assert asyncio.run(main()) < 0.25  # far below max_wait_ms: the idle model ran it at once


def test_concurrent_requests_form_batches_capped_at_max_batch_size() -> None:
    model = SlowModel(delay_s=0.03)
    batcher = _batcher(model, max_batch_size=8, max_wait_ms=50.0)

    async def main() -> list[np.ndarray]:
        results = await asyncio.gather(*(batcher.submit(np.full((1, 3), float(i)), str(i)) for i in range(40)))
        await batcher.drain()
        return results

    results = asyncio.run(main())
    assert [float(r[0]) for r in results] == [3.0 * i for i in range(40)]
    assert model.batches == [8, 8, 8, 8, 8]  # one predict per 8 requests, never more rows than the cap


def test_clients_coming_back_after_their_answers_keep_their_batch_whole() -> None:
    """Eight clients that each send again a moment after their answer: the batch waits for all of them.

    Before, the first client back found the model idle and ran alone, and the other seven queued
    behind it: batches of 1 and 7 in turn, a predict call each.
    """
    model = SlowModel(delay_s=0.01)
    batcher = _batcher(model, max_batch_size=8, max_wait_ms=200.0)

    async def client(i: int) -> None:
        for _ in range(6):
            await batcher.submit(np.ones((1, 3)), str(i))
            await asyncio.sleep(0.001 * i)  # the network and the client's own turn-around, different for each

    async def main() -> None:
        await asyncio.gather(*(client(i) for i in range(8)))
        await batcher.drain()

    asyncio.run(main())
    assert sum(model.batches) == 48
    assert model.batches[-5:] == [8] * 5  # after the start, every batch holds every client


def test_a_lone_request_after_a_quiet_spell_runs_at_once_even_after_a_full_batch() -> None:
    model = SlowModel(delay_s=0.0)
    batcher = _batcher(model, max_batch_size=8, max_wait_ms=300.0)

    async def main() -> float:
        await asyncio.gather(*(batcher.submit(np.ones((1, 3)), str(i)) for i in range(8)))
        await asyncio.sleep(0.35)  # longer than max_wait_ms: those eight clients are gone
        started = time.perf_counter()
        await batcher.submit(np.ones((1, 3)), "lone")
        elapsed = time.perf_counter() - started
        await batcher.drain()
        return elapsed

    assert asyncio.run(main()) < 0.15


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=12), cap=st.integers(1, 9))
def test_every_request_gets_exactly_its_own_rows(sizes: list[int], cap: int) -> None:
    model = SlowModel(delay_s=0.0)
    batcher = _batcher(model, max_batch_size=cap, max_wait_ms=1.0)
    rng = np.random.default_rng(len(sizes))
    inputs = [rng.normal(size=(n, 3)) for n in sizes]

    async def main() -> list[np.ndarray]:
        results = await asyncio.gather(*(batcher.submit(x, str(i)) for i, x in enumerate(inputs)))
        await batcher.drain()
        return results

    for x, result in zip(inputs, asyncio.run(main()), strict=True):
        np.testing.assert_allclose(result, x.sum(axis=1))
    assert all(b <= max(cap, max(sizes)) for b in model.batches)


def test_full_queue_refuses_instead_of_growing() -> None:
    model = SlowModel(delay_s=0.2)
    batcher = _batcher(model, max_batch_size=2, max_queue=4)

    async def main() -> list[object]:
        tasks = [asyncio.ensure_future(batcher.submit(np.ones((1, 3)), str(i))) for i in range(8)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.drain()
        return results

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, QueueFullError)]
    assert 0 < len(refused) < 8 and batcher.queued_rows == 0
    with pytest.raises(ValidationError, match="queues at most 4"):
        asyncio.run(_batcher(model, max_queue=4).submit(np.ones((5, 3)), "big"))


def test_timeout_drops_the_request_from_the_queue() -> None:
    model = SlowModel(delay_s=0.3)
    batcher = _batcher(model, timeout_s=0.1, max_batch_size=1)

    async def main() -> list[object]:
        results = await asyncio.gather(*(batcher.submit(np.ones((1, 3)), str(i)) for i in range(3)),
                                       return_exceptions=True)
        await batcher.drain()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, TimeoutError) for r in results)
    assert sum(model.batches) < 3  # queued ones that timed out never reached the model


def test_every_request_gets_its_whole_deadline() -> None:
    """One deadline timer per batcher, re-armed for the oldest request: it neither fires early nor skips one."""
    model = SlowModel(delay_s=0.6)
    batcher = _batcher(model, timeout_s=1.0, max_batch_size=1)

    async def timed(delay_s: float, name: str) -> tuple[object, float]:
        await asyncio.sleep(delay_s)
        started = time.perf_counter()
        try:
            result: object = await batcher.submit(np.ones((1, 3)), name)
        except TimeoutError as error:
            result = error
        return result, time.perf_counter() - started

    async def main() -> list[tuple[object, float]]:
        # a runs over [0, 0.6], b over [0.6, 1.2] (deadline 1.5), c from 1.2 (deadline 1.55): only c is late
        results = await asyncio.gather(timed(0.0, "a"), timed(0.5, "b"), timed(0.55, "c"))
        await batcher.drain()
        return results

    (a, _), (b, _), (c, c_waited) = asyncio.run(main())
    assert not isinstance(a, TimeoutError) and not isinstance(b, TimeoutError)
    assert isinstance(c, TimeoutError) and 0.95 <= c_waited < 1.5


def test_a_bad_request_fails_alone_not_its_batch() -> None:
    model = SlowModel(delay_s=0.02)
    batcher = _batcher(model, max_wait_ms=30.0)

    async def main() -> list[object]:
        rows = [np.ones((1, 3)), np.ones((1, 3)), np.full((1, 3), np.nan), np.ones((2, 3))]
        results = await asyncio.gather(*(batcher.submit(r, str(i)) for i, r in enumerate(rows)),
                                       return_exceptions=True)
        await batcher.drain()
        return results

    results = asyncio.run(main())
    assert isinstance(results[2], ModelError) and "NaN input" in str(results[2])
    assert [list(r) for i, r in enumerate(results) if i != 2] == [[3.0], [3.0], [3.0, 3.0]]


def test_a_drain_past_its_timeout_answers_what_is_left_with_a_retryable_error() -> None:
    from loopstack.serving.batcher import DrainingError

    batcher = _batcher(SlowModel(delay_s=1.0), max_batch_size=1)

    async def main() -> tuple[bool, list[object]]:
        waiting = [asyncio.ensure_future(batcher.submit(np.ones((1, 3)), str(i))) for i in range(3)]
        await asyncio.sleep(0.1)  # the first is predicting, two are queued
        drained = await batcher.drain(timeout_s=0.2)
        return drained, await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)

    drained, results = asyncio.run(main())
    assert not drained
    assert all(isinstance(r, DrainingError) and "stopped before this request finished" in str(r) for r in results)
    assert batcher.in_flight == 0 and batcher.queued_rows == 0 and batcher.idle


def test_a_failing_observer_neither_stops_the_batching_loop_nor_the_drain() -> None:
    model = SlowModel(delay_s=0.0)
    batcher = _batcher(model, timeout_s=2.0)

    def broken(batch: object) -> None:
        raise RuntimeError("metrics backend gone")

    batcher.observers.append(broken)

    async def main() -> list[float]:
        answers = [float((await batcher.submit(np.full((1, 3), float(i)), str(i)))[0]) for i in range(3)]
        assert await batcher.drain()
        return answers

    assert asyncio.run(main()) == [0.0, 3.0, 6.0]


def test_a_second_drain_after_one_gave_up_does_not_report_success() -> None:
    batcher = _batcher(SlowModel(delay_s=1.0))

    async def main() -> tuple[bool, bool]:
        waiting = asyncio.ensure_future(batcher.submit(np.ones((1, 3)), "r"))
        await asyncio.sleep(0.1)
        first = await batcher.drain(timeout_s=0.1)
        second = await batcher.drain(timeout_s=0.1)
        await asyncio.gather(waiting, return_exceptions=True)
        return first, second

    assert asyncio.run(main()) == (False, False)


def test_a_drain_waits_for_a_held_request_and_refuses_it_once_it_gave_up() -> None:
    """A request held while it reads its rows is taken by a draining batcher; after a drain that timed out it is
    refused (503), not queued on a stopped loop that would never answer it."""
    from loopstack.serving.batcher import DrainingError

    async def main() -> tuple[np.ndarray, bool, bool]:
        waited = _batcher(SlowModel(delay_s=0.0))
        waited.hold()
        drain = asyncio.ensure_future(waited.drain(5.0))
        await asyncio.sleep(0.05)
        with pytest.raises(DrainingError):
            waited.hold()  # a new request is refused while draining
        output = await waited.submit(np.ones((1, 3)), "held")
        waited.release()
        gave_up = _batcher(SlowModel(delay_s=0.0))
        gave_up.hold()
        timed_out = not await gave_up.drain(0.05)
        with pytest.raises(DrainingError):
            gave_up.enqueue(np.ones((1, 3)), "late", None, None, lambda outputs, error: None)
        return output, await drain, timed_out

    output, drained, timed_out = asyncio.run(main())
    assert output.tolist() == [3.0] and drained and timed_out


class _ThreadRecorder(SlowModel):
    """Notes which thread ran each predict."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s=delay_s)
        self.threads: list[int] = []

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.threads.append(threading.get_ident())
        return super().predict(X)


def _one_by_one(batcher: Batcher, count: int) -> None:
    async def main() -> None:
        for i in range(count):
            await batcher.submit(np.ones((1, 3)), str(i))
        await batcher.drain()

    asyncio.run(main())


def test_a_fast_predict_runs_on_the_event_loop_after_the_first_is_timed() -> None:
    model = _ThreadRecorder(delay_s=0.0)
    _one_by_one(_batcher(model), 4)
    loop_thread = threading.get_ident()  # asyncio.run runs the loop in the calling thread
    assert model.threads[0] != loop_thread  # nothing measured yet: the worker thread
    assert model.threads[1:] == [loop_thread] * 3


@pytest.mark.parametrize("settings", [{"delay_s": 0.005, "inline_ms": 1.0}, {"delay_s": 0.0, "inline_ms": 0.0}])
def test_a_slow_predict_or_inline_ms_0_keeps_every_predict_in_the_worker_thread(settings: dict[str, float]) -> None:
    model = _ThreadRecorder(delay_s=settings["delay_s"])
    _one_by_one(_batcher(model, inline_ms=settings["inline_ms"]), 4)
    assert threading.get_ident() not in model.threads


def test_the_estimate_scales_the_last_predict_up_to_a_larger_batch() -> None:
    batcher = _batcher(SlowModel(delay_s=0.0), inline_ms=1.0)
    batcher._last_predict = (0.0004, 2)  # 0.4 ms for 2 rows
    assert batcher._inline(2) and batcher._inline(1) and batcher._inline(5)  # 5 rows: 1.0 ms
    assert not batcher._inline(6)  # 1.2 ms expected: the thread


def test_the_event_loop_keeps_running_while_a_slow_predict_is_in_the_thread() -> None:
    batcher = _batcher(SlowModel(delay_s=0.05))

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.create_task(tick())
        for i in range(3):
            await batcher.submit(np.ones((1, 3)), str(i))
        ticker.cancel()
        await batcher.drain()
        return ticks

    # 150 ms of predicts in the thread: about 30 ticks of 5 ms. Two of the three on the loop gave 10.
    assert asyncio.run(main()) >= 20


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "1", True])
def test_a_bad_inline_ms_is_refused_by_name(value: object) -> None:
    with pytest.raises(ConfigError, match="inline_ms"):
        ModelSpec(name="m", model=SlowModel(), inline_ms=value)  # type: ignore[arg-type]


class _LazySqlite(SlowModel):
    """Opens an SQLite connection in its first predict: usable only from the thread that opened it."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.0)
        self.db: sqlite3.Connection | None = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.db is None:
            self.db = sqlite3.connect(":memory:")
        self.db.execute("select 1").fetchone()
        return super().predict(X)


def test_a_model_tied_to_its_first_thread_stays_in_the_thread_and_every_request_succeeds() -> None:
    """Its first predict ran in the worker thread; the next, on the loop, failed, and so did every later one."""
    model = _LazySqlite()
    batcher = _batcher(model)

    async def main() -> list[float]:
        answers = [float((await batcher.submit(np.ones((1, 3)), str(i)))[0]) for i in range(5)]
        await batcher.drain()
        return answers

    assert asyncio.run(main()) == [3.0] * 5
    assert not batcher._inline(1)


def test_a_bad_row_does_not_send_a_model_to_the_thread_for_good() -> None:
    model = _ThreadRecorder(delay_s=0.0)
    batcher = _batcher(model)

    async def main() -> None:
        await batcher.submit(np.ones((1, 3)), "first")  # timed in the thread
        with pytest.raises(ModelError, match="NaN input"):
            await batcher.submit(np.full((1, 3), np.nan), "bad")  # fails on the loop and in the thread
        await batcher.submit(np.ones((1, 3)), "after")
        await batcher.drain()

    asyncio.run(main())
    assert model.threads[-1] == threading.get_ident()  # "after" ran on the loop again


class _Spiky(_ThreadRecorder):
    """Fast, except on rows holding 999 (a cache miss, a remote lookup)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        if (np.asarray(X) == 999).any():
            time.sleep(0.3)
        return super().predict(X)


def test_a_request_whose_deadline_passed_during_a_predict_on_the_loop_gets_its_timeout() -> None:
    """The reaper cannot run while the loop predicts: the deadlines are checked as soon as it is done."""
    model = _Spiky(delay_s=0.0)
    batcher = _batcher(model, timeout_s=0.1)

    async def main() -> None:
        for i in range(3):
            await batcher.submit(np.ones((1, 3)), str(i))
        with pytest.raises(TimeoutError, match=r"slow passed timeout_s=0\.1"):
            await batcher.submit(np.full((1, 3), 999.0), "slow")
        await batcher.drain()

    asyncio.run(main())
    assert model.threads[-1] == threading.get_ident()  # the slow predict ran on the loop, not in the thread
