"""Dynamic batching: concurrent requests for one model share one vectorized predict.

Requests queue per model version. A request that finds the model idle runs at
once, so a lone client never pays a batching delay. While a batch runs, new
requests queue up; when it finishes, the next batch takes up to
``max_batch_size`` rows, waiting at most ``max_wait_ms`` (from the oldest
request's arrival) for the batch to fill, or for as many requests as the
batch just answered (`Batcher._filled`). The results are sliced back to the
requests that formed the batch.

A slow predict runs in a worker thread, so the event loop keeps parsing and
answering requests meanwhile. A fast one runs on the event loop itself: most
of a small model's predict is Python (scikit-learn's checks, a NumPy call per
step of a tree walk), which holds the GIL, so the loop could not run beside it
anyway, while each hand-off to the thread and back costs GIL switches and a
loop wake-up. In `bench/serving.py` that raised the requests per second at
64 concurrent clients by 17 % (bench/RESULTS.md, session 11). "Fast" is
``ModelSpec.inline_ms``: the last predict's time, scaled up to the new batch's
rows, must stay within it (`Batcher._inline`); a model's first predict, and any
expected to take longer, go to the thread.

Each request names a callback (`Batcher.enqueue`) called once, on the event
loop, with its outputs or its error: the HTTP protocol's hot path answers from
there without a task per request. `Batcher.submit` is the awaitable form.

The queue is bounded in rows: a full queue raises `QueueFullError` (the server
answers 503 with Retry-After) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from loopstack.core.errors import BackendUnavailableError, ValidationError
from loopstack.serving.config import ModelSpec
from loopstack.serving.inputs import Rows, concat, n_rows
from loopstack.serving.models import ModelAdapter, ModelError
from loopstack.serving.threads import ThreadBudget

logger = logging.getLogger("loopstack.serving")
Settle = Callable[[np.ndarray | None, BaseException | None], None]  # (outputs, None) or (None, error)


class QueueFullError(BackendUnavailableError):
    """The model's queue is full; the client should retry after a moment."""


class DrainingError(BackendUnavailableError):
    """The model version is shutting down or being replaced and takes no new requests."""


@dataclass(slots=True, eq=False)
class Item:
    """One request waiting in (or taken from) the queue."""

    rows: Rows
    n: int
    settle: Settle
    arrival: float
    request_id: str
    variant: str | None
    shadow: bool = False  # a shadow variant's copy: logged, never answered, not a prediction served

    @property
    def settled(self) -> bool:
        """Answered (its callback called); the item holds `_settled` in its place."""
        return self.settle is _settled


@dataclass
class Batch:
    """A finished batch, handed to observers (metrics, prediction log)."""

    adapter: ModelAdapter
    items: list[Item]
    rows: Rows
    outputs: np.ndarray
    labels: tuple[str, str] = ("", "")  # the batcher's metric labels (model, version)
    finished: float = field(default_factory=time.perf_counter)
    wall_time: float = field(default_factory=time.time)
    timed_out: tuple[int, ...] = ()  # positions in `items` already answered 504 when the outputs came


class Batcher:
    """The queue and batching loop of one model version.

    Examples
    --------
    >>> import asyncio, numpy as np
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from sklearn.linear_model import LinearRegression
    >>> from loopstack.serving.models import adapt
    >>> reg = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
    >>> spec = ModelSpec(name="m", model=reg)
    >>> async def main():
    ...     batcher = Batcher(adapt(reg, spec), spec, ThreadPoolExecutor(1))
    ...     outs = await asyncio.gather(*(batcher.submit(np.array([[float(i)]]), str(i)) for i in range(3)))
    ...     await batcher.drain()
    ...     return [round(float(o[0]), 6) for o in outs]
    >>> asyncio.run(main())
    [0.0, 2.0, 4.0]
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        spec: ModelSpec,
        executor: Executor,
        observers: list[Callable[[Batch], None]] | None = None,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.adapter = adapter
        self.budget = budget
        self.spec = spec
        self.executor = executor
        self.observers = observers or []
        # (model, version) in /metrics; a deployment endpoint's variants use (endpoint, variant)
        self.labels = (spec.name, adapter.version)
        self.queued_rows = 0
        self.in_flight = 0  # requests submitted and not yet answered
        self._queue: deque[Item] = deque()
        self._running: list[Item] = []  # the batch being predicted
        self._reaper: asyncio.TimerHandle | None = None
        self._busy = False
        self._last_requests = 1  # requests in the last batch run, and when it finished: see _filled
        self._last_finished = 0.0
        self._last_predict = (math.inf, 1)  # (seconds, rows) of the last predict: see _inline
        self._inline_works = True  # False once a predict failed on the loop and not in the thread
        self._closed = False
        self._held = 0  # requests promised a place while they await their rows (see `hold`)
        self._stopped = False  # drained: not even a held request is taken any more
        self._abandoned = False  # a drain answered some requests with DrainingError
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- request side ------------------------------------------------------------------
    async def submit(self, rows: Rows, request_id: str, variant: str | None = None, n: int | None = None,
                     shadow: bool = False) -> np.ndarray:
        """Queue `rows`, wait for their batch, and return this request's slice of the outputs."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.enqueue(rows, request_id, variant, n, partial(_settle_future, future), shadow)
        return await future

    def enqueue(self, rows: Rows, request_id: str, variant: str | None, n: int | None, settle: Settle,
                shadow: bool = False) -> None:
        """Queue `rows`; `settle(outputs, None)` or `settle(None, error)` follows once, on the event loop.

        Raises at once (nothing queued) when the batcher is draining, the request is larger than
        the queue, or the queue is full.
        """
        n = n if n is not None else n_rows(rows)
        if self._closed and (self._stopped or not self._held):
            raise DrainingError(f"model {self.spec.name!r} version {self.adapter.version} is draining; retry")
        if n > self.spec.max_queue:
            raise ValidationError(
                f"request has {n} rows but model {self.spec.name!r} queues at most {self.spec.max_queue}; split it"
            )
        if self.queued_rows + n > self.spec.max_queue:
            raise QueueFullError(f"model {self.spec.name!r} queue is full ({self.queued_rows} rows); retry later")
        self._start()
        self._queue.append(Item(rows, n, settle, time.perf_counter(), request_id, variant, shadow))
        self.queued_rows += n
        self.in_flight += 1
        assert self._wake is not None
        if len(self._queue) == 1 or (self.queued_rows >= self.spec.max_batch_size if self._busy else self._filled()):
            self._wake.set()
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.spec.timeout_s, self._reap)

    def hold(self) -> None:
        """Promise a place to a request whose rows come after an await (a feature-store read), until `release`.

        A drain (a hot swap retiring this version) waits for held requests as for queued ones, and takes
        their rows once they come: the swap does not fail them. Raises `DrainingError` when already closed.
        """
        if self._closed:
            raise DrainingError(f"model {self.spec.name!r} version {self.adapter.version} is draining; retry")
        self._held += 1

    def release(self) -> None:
        """End a `hold` (after the request was queued, or failed before)."""
        self._held -= 1

    def _settle(self, item: Item, outputs: np.ndarray | None, error: BaseException | None) -> None:
        if item.settled:
            return
        self.in_flight -= 1
        settle, item.settle = item.settle, _settled  # the prediction log keeps the item; not its request's objects
        try:
            settle(outputs, error)
        except Exception:  # one request's answer must not stop the batch's others
            logger.exception("answering request %s failed", item.request_id)

    def _reap(self) -> None:
        """Fail every request past its deadline with TimeoutError (the server's 504), then re-arm.

        Every request of a batcher has the same timeout_s and the queue is in arrival order,
        so the requests past their deadline are the front of the queue and of the running
        batch. One timer per batcher, set for the oldest unanswered request, replaces arming
        and cancelling a uvloop timer for every request.
        """
        self._reaper = None
        now = time.perf_counter()
        cutoff = now - self.spec.timeout_s
        for item in self._running:
            if item.arrival <= cutoff:
                self._time_out(item)
        while self._queue and self._queue[0].arrival <= cutoff:
            item = self._queue.popleft()
            self.queued_rows -= item.n
            self._time_out(item)
        oldest = [item.arrival for item in self._running if not item.settled]
        if self._queue:
            oldest.append(self._queue[0].arrival)
        if oldest:
            delay = min(oldest) + self.spec.timeout_s - now
            self._reaper = asyncio.get_running_loop().call_later(max(delay, 0.0), self._reap)

    def _time_out(self, item: Item) -> None:
        self._settle(item, None, TimeoutError(f"request {item.request_id} passed timeout_s={self.spec.timeout_s}"))

    # -- batching loop -----------------------------------------------------------------
    def _start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.spec.name}")

    async def _loop(self) -> None:
        assert self._wake is not None
        wait_s = self.spec.max_wait_ms / 1000.0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._filled():
                remaining = self._queue[0].arrival + wait_s - time.perf_counter()
                if remaining > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except TimeoutError:
                        pass
                    continue
            self._running = self._take()
            self._busy = True
            try:
                await self._run(self._running)
            finally:
                self._busy = False
                self._last_requests = len(self._running)
                self._last_finished = time.perf_counter()
                self._running = []

    def _filled(self) -> bool:
        """Whether an idle model should run what is queued now rather than wait (at most ``max_wait_ms``).

        A batch runs when it is full, or when it holds as many requests as the batch just answered,
        if that finished less than ``max_wait_ms`` ago: under load those clients are coming back, and
        a batch started on the first of them would spend a whole predict call on a few rows while the
        rest queue behind it (with 64 clients, batches of 1 and 63 in turn instead of 64). A lone
        client's last batch was its own one request, and after a quiet spell the target is one request
        again: either way a lone request runs at once.
        """
        if self.queued_rows >= self.spec.max_batch_size:
            return True
        if time.perf_counter() - self._last_finished > self.spec.max_wait_ms / 1000.0:
            return True
        return len(self._queue) >= self._last_requests

    def _take(self) -> list[Item]:
        items: list[Item] = []
        rows = 0
        limit = self.spec.max_batch_size
        while self._queue and (not items or rows + self._queue[0].n <= limit):
            item = self._queue.popleft()
            rows += item.n
            items.append(item)
        self.queued_rows -= rows
        return items

    async def _run(self, items: list[Item]) -> None:
        loop = asyncio.get_running_loop()
        rows = concat([item.rows for item in items])
        try:
            if self._inline(n_rows(rows)):
                outputs = await self._predict_inline(rows)
            else:
                outputs = await loop.run_in_executor(self.executor, self._predict, rows)
        except Exception as error:
            if len(items) > 1:  # isolate the request that broke the batch; the others still succeed
                for item in items:
                    await self._run([item])
                return
            item = items[0]
            if not isinstance(error, ValidationError):
                error = ModelError(f"model failed on request {item.request_id}: {type(error).__name__}: {error}")
            self._settle(item, None, error)
            return
        timed_out = tuple(i for i, item in enumerate(items) if item.settled)  # only the reaper settles them early
        offset = 0
        for item in items:
            self._settle(item, outputs[offset : offset + item.n], None)
            offset += item.n
        batch = Batch(self.adapter, items, rows, outputs, self.labels, timed_out=timed_out)
        for observe in self.observers:
            try:
                observe(batch)
            except Exception:  # metrics or the log failing must not stop the batching loop
                logger.exception("observing a batch of model %r failed", self.spec.name)

    def _inline(self, rows: int) -> bool:
        """Whether a predict of `rows` rows is expected to take at most ``inline_ms`` (module docstring).

        The estimate scales the last predict's time up by rows, never down: a predict's fixed cost
        dominates at serving batch sizes, so a larger batch is over-estimated, never under.
        """
        if not self._inline_works or self.spec.inline_ms <= 0:
            return False
        seconds, last_rows = self._last_predict
        return seconds * max(1.0, rows / last_rows) * 1000.0 <= self.spec.inline_ms

    async def _predict_inline(self, rows: Rows) -> np.ndarray:
        """Predict on the event loop; a failure is tried again in the worker thread.

        A model tied to the thread it first ran in (an SQLite handle opened in its first predict, an
        ``asyncio.run`` of its own) fails on the loop only: when the thread then succeeds, the model
        stays in the thread for good. When both fail, the rows were at fault and nothing changes.
        Requests whose deadline passed while the loop was busy predicting get their 504 now, as the
        reaper would have answered them during a predict in the thread.
        """
        try:
            return self._predict(rows)
        except Exception:
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self._predict, rows)
            self._inline_works = False
            logger.warning("model %r failed on the event loop but not in its worker thread; its predicts stay in "
                           "the thread", self.spec.name, exc_info=True)
            return outputs
        finally:
            # the reaper is set for the oldest unanswered request: before it is due, no deadline has passed
            if self._reaper is not None and self._reaper.when() <= asyncio.get_running_loop().time():
                self._reaper.cancel()
                self._reap()

    def _predict(self, rows: Rows) -> np.ndarray:
        if self.budget is not None:
            self.budget.ensure()
        started = time.perf_counter()
        outputs = self.adapter.run(rows)
        self._last_predict = (time.perf_counter() - started, max(1, n_rows(rows)))
        return outputs

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy and self.in_flight == 0 and not self._held

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Refuse new requests, finish the queued ones, stop the loop; True when all were answered in time.

        Requests not finished within `timeout_s` (default: 30 s, or the model's ``timeout_s`` and a
        second when that is longer) are answered with `DrainingError` (503, retry).
        """
        self._closed = True
        if timeout_s is None:
            timeout_s = max(30.0, self.spec.timeout_s + 1.0)
        deadline = time.perf_counter() + timeout_s
        while not self.idle and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        drained = self.idle and not self._abandoned
        if not self.idle:  # what is still waiting gets an answer (503, retry) rather than a closed connection
            self._abandoned = True
            error = DrainingError(f"model {self.spec.name!r} version {self.adapter.version} stopped before this "
                                  "request finished; retry")
            for item in [*self._running, *self._queue]:
                self._settle(item, None, error)
            self._queue.clear()
            self.queued_rows = 0
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # the loop died of a bug: still stop cleanly, so the log gets flushed
                logger.exception("the batching loop of model %r had failed", self.spec.name)
            self._task = None
        self._stopped = True
        return drained


def _settled(outputs: np.ndarray | None, error: BaseException | None) -> None:
    """What a settled item holds instead of its callback."""


def _settle_future(future: asyncio.Future[np.ndarray], outputs: np.ndarray | None,
                   error: BaseException | None) -> None:
    if future.done():  # the waiting caller was cancelled
        return
    if error is None:
        future.set_result(outputs)  # type: ignore[arg-type]
    else:
        future.set_exception(error)
