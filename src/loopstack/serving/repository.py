"""The models a server holds, and swapping a new version in while requests are in flight.

Each served name points at one `Batcher` (one model version). A swap loads the
new version in a worker thread, starts its batcher, and then moves the
pointer in one assignment on the event loop: requests that arrive after it go
to the new version, while the old batcher finishes every request it already
accepted before it stops. No request is dropped or failed by a swap, and each
request runs on the version whose schema checked it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from loopstack.core.errors import NotFoundError
from loopstack.serving.batcher import Batch, Batcher
from loopstack.serving.config import ModelSpec
from loopstack.serving.models import Loader, load
from loopstack.serving.threads import ThreadBudget

logger = logging.getLogger("loopstack.serving")
Resolver = Callable[[str], str]


class ModelRepository:
    """Served models by name, each the current `Batcher` of one version.

    Examples
    --------
    >>> import asyncio
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from sklearn.dummy import DummyClassifier
    >>> model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    >>> repo = ModelRepository([ModelSpec(name="m", model=model)], ThreadPoolExecutor(1))
    >>> async def main():
    ...     await repo.start()
    ...     names = repo.names()
    ...     await repo.drain()
    ...     return names
    >>> asyncio.run(main())
    ['m']
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        executor: Executor,
        observers: list[Callable[[Batch], None]] | None = None,
        loader: Loader | None = None,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.budget = budget
        self.specs = {spec.name: spec for spec in specs}
        self.executor = executor
        self.observers = observers if observers is not None else []
        self.loader = loader
        self.ready = False
        self._current: dict[str, Batcher] = {}
        self._retiring: set[Batcher] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._swapping: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        """Load every model (in worker threads, concurrently) and open their queues."""
        batchers = await asyncio.gather(*(self._open(spec) for spec in self.specs.values()))
        self._current = {b.spec.name: b for b in batchers}
        self.ready = True

    async def _open(self, spec: ModelSpec) -> Batcher:
        adapter = await asyncio.to_thread(load, spec, self.loader)
        if self.budget is not None:
            self.budget.bump()
        return Batcher(adapter, spec, self.executor, self.observers, self.budget)

    def get(self, name: str, version: str | None = None) -> Batcher:
        """The batcher serving `name` (and `version`, when a client pins one)."""
        batcher = self._current.get(name)
        if batcher is None:
            raise NotFoundError(f"model {name!r} is not served here; served models: {sorted(self._current)}")
        if version is not None and version != batcher.adapter.version:
            raise NotFoundError(
                f"model {name!r} version {version!r} is not served; the served version is {batcher.adapter.version}"
            )
        return batcher

    def names(self) -> list[str]:
        return sorted(self._current)

    def batchers(self) -> list[Batcher]:
        """Current and retiring batchers (for metrics)."""
        return [*self._current.values(), *self._retiring]

    async def swap(self, name: str, ref: str | None = None, model: Any = None) -> Batcher:
        """Serve a new version under `name`: a registry ref, a model object, or the same ref re-resolved.

        Swaps of one name run one after another: two at once both took the same old version to retire,
        and the batcher of the first was replaced without ever being drained.
        """
        self.get(name)  # an unknown name fails before it gets a lock
        async with self._swapping.setdefault(name, asyncio.Lock()):
            return await self._swap(name, ref, model)

    async def _swap(self, name: str, ref: str | None, model: Any) -> Batcher:
        old = self.get(name)
        spec = old.spec
        if model is not None:
            spec = replace(spec, model=model)
        elif ref is not None:
            spec = spec.with_ref(ref)
        new = await self._open(spec)
        self.specs[name] = spec
        self._current[name] = new  # the swap: one assignment on the loop thread
        self._retire(old)
        logger.info("model %s: version %s -> %s", name, old.adapter.version, new.adapter.version)
        return new

    def _retire(self, old: Batcher) -> None:
        self._retiring.add(old)

        async def finish() -> None:
            await old.drain()
            self._retiring.discard(old)

        task = asyncio.get_running_loop().create_task(finish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self, resolve: Resolver) -> list[str]:
        """Swap in every aliased model whose alias now names another version; returns the swapped names."""
        swapped = []
        for name, batcher in list(self._current.items()):
            ref = batcher.spec.ref
            if batcher.spec.model is not None or ref is None or "@" not in ref:
                continue
            version = await asyncio.to_thread(resolve, ref)
            if version != batcher.adapter.version:
                await self.swap(name)
                swapped.append(name)
        return swapped

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking requests and answer every accepted one; True when all finished in time."""
        self.ready = False
        results = await asyncio.gather(*(b.drain(timeout_s) for b in self.batchers()))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return all(results)
