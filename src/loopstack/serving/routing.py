"""Deployment endpoints inside the server: route each request to a variant, mirror shadows, follow changes.

Routes (added by ``create_app(..., deployments=project.deployments)``)::

    POST /v1/endpoints/{endpoint}:predict   {"instances": rows, "unit_id": "user-42"} (or header X-Unit-Id)
    GET  /v1/endpoints                      served endpoints, their version and variants

Every variant of every deployment is loaded and gets its own batcher (named
after the endpoint, so the prediction log keeps an endpoint's predictions
together with a ``variant`` column). A `TrafficRouter` built per deployment
version picks the variant; shadow variants get the same request from a
background task after the answer is on its way, and whatever happens to them
(errors, timeouts, a full queue) is logged and never reaches the caller. The
predict route is a hot route (answered by the HTTP protocol under `serve`,
`loopstack.serving.protocol`; before Starlette otherwise), and its requests
count in ``/metrics`` under ``model=<endpoint>`` and ``version=<variant>``
(variants of two models may share a version number).

A poller compares the deployments' versions in the metadata DB every
``poll_s`` seconds. A changed deployment gets its new variants loaded first,
then one assignment swaps the new router and batchers in; batchers no longer
used drain the requests they accepted and stop. So a canary step, a
promotion or a rollback takes effect within about a second, without a
restart, and a blue-green rollback is instant because the old side never
left memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loopstack.core.errors import NotFoundError, ValidationError
from loopstack.rollout.assignment import unit_key
from loopstack.serving import jsonio
from loopstack.serving.app import awaited, error_reply, json_object, pick_request_id
from loopstack.serving.batcher import Batcher
from loopstack.serving.fastpath import Call, Endpoint, Reply
from loopstack.serving.inputs import is_text
from loopstack.serving.models import load

if TYPE_CHECKING:
    from loopstack.rollout import Deployments, TrafficRouter
    from loopstack.serving.app import Server

logger = logging.getLogger("loopstack.serving")
Key = tuple[str, str, str]  # (endpoint, variant, ref)


@dataclass(frozen=True)
class Live:
    """What one endpoint serves right now: its router and a batcher per variant."""

    router: TrafficRouter
    batchers: dict[str, Batcher]


class EndpointService:
    """The deployment endpoints of one server process.

    Parameters
    ----------
    deployments : Deployments
        Where deployments are read (``project.deployments``).
    server : Server
        The app's state: prediction log observers, thread budget, error mapping.
    poll_s : float
        Seconds between checks of the deployments' versions.
    """

    def __init__(self, deployments: Deployments, server: Server, poll_s: float = 1.0) -> None:
        from loopstack.rollout import TrafficLog

        self.deployments = deployments
        self.server = server
        self.poll_s = poll_s
        self.live: dict[str, Live] = {}
        self.executor = ThreadPoolExecutor(8, thread_name_prefix="loopstack-endpoint")
        log_dir = server.settings.log_dir
        self.log = TrafficLog(log_dir, server.settings.log_flush_s) if log_dir else None
        self._batchers: dict[Key, Batcher] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._syncing = asyncio.Lock()  # the poller and an explicit sync must not load one variant twice
        self._stopped = False

    def routes(self) -> list[Route]:
        return [
            Route("/v1/endpoints/{endpoint}:predict", Endpoint(self.predict, self.predict_soon), methods=["POST"]),
            Route("/v1/endpoints", self.describe, methods=["GET"]),
        ]

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every deployment, then follow changes."""
        await self.sync()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def flush(self) -> None:
        """Write the traffic log so far: the server calls this before the drain, which a stuck variant may hold up."""
        if self.log is not None:
            await asyncio.to_thread(self.log.flush)

    async def stop(self) -> None:
        """Stop following, finish mirrored requests, drain every variant, write the traffic log.

        A predict still running after the drain is stuck: the pool is not waited for (SIGTERM hung on it).
        """
        if self._poller is not None:
            self._poller.cancel()
        async with self._syncing:  # a sync in flight finishes first; any later one finds the service stopped
            if self._stopped:
                return
            self._stopped = True
            await self.settle()
            await asyncio.gather(*(b.drain() for b in self._batchers.values()))
            if self.log is not None:
                await asyncio.to_thread(self.log.close)
            self.executor.shutdown(wait=False, cancel_futures=True)

    def batchers(self) -> list[Batcher]:
        """The variants' batchers (for metrics: queue depth and in-flight requests)."""
        return list(self._batchers.values())

    async def settle(self) -> None:
        """Wait until the mirrored requests (and draining variants) in flight are done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.sync()
            except Exception:  # a database hiccup must not stop serving the current split
                logger.exception("deployment refresh failed")

    async def sync(self) -> list[str]:
        """Apply every deployment whose version moved; returns the endpoints that changed."""
        async with self._syncing:
            return [] if self._stopped else await self._sync()

    async def _sync(self) -> list[str]:
        from loopstack.rollout import TrafficRouter

        versions = await asyncio.to_thread(self.deployments.versions)
        changed = []
        for endpoint, version in versions.items():
            current = self.live.get(endpoint)
            if current is not None and current.router.version == version:
                continue
            try:
                deployment = await asyncio.to_thread(self.deployments.get, endpoint)
            except NotFoundError:  # deleted since the version query
                continue
            batchers = {v: await self._batcher((endpoint, v, ref)) for v, ref in deployment.variants.items()}
            self.live[endpoint] = Live(TrafficRouter(deployment), batchers)  # the switch: one assignment
            changed.append(endpoint)
            logger.info("endpoint %s: deployment version %s, weights %s", endpoint, version, deployment.weights)
        for endpoint in set(self.live) - set(versions):
            del self.live[endpoint]
        self._retire_unused()
        return changed

    async def _batcher(self, key: Key) -> Batcher:
        batcher = self._batchers.get(key)
        if batcher is None:
            endpoint, variant, ref = key
            spec = self.server.settings.variant_spec(endpoint, ref, variant)
            adapter = await asyncio.to_thread(load, spec, self.server.repo.loader or self._registry_loader)
            if self.server.budget is not None:
                self.server.budget.bump()
            batcher = self._batchers[key] = Batcher(adapter, spec, self.executor, self.server.repo.observers,
                                                    self.server.budget)
            batcher.labels = (endpoint, variant)  # two variants may be versions of one number of two models
        return batcher

    def _registry_loader(self, ref: str) -> Any:
        return self.deployments.project.registry.load_model(ref, compiled=True)

    def _retire_unused(self) -> None:
        used = {id(b) for live in self.live.values() for b in live.batchers.values()}
        for key, batcher in list(self._batchers.items()):
            if id(batcher) not in used:
                del self._batchers[key]
                self._spawn(batcher.drain())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests -----------------------------------------------------------------------------
    async def predict(self, call: Call) -> Reply:
        return await awaited(self.predict_soon, call)

    def predict_soon(self, call: Call, respond: Callable[[Reply], None]) -> None:
        """Route one request to its variant, answer it through `respond`, record it; then mirror it to the shadows.

        In ``/metrics`` it counts under ``model=<endpoint>, version=<variant>`` (an unknown endpoint
        under ``model=""``: a client's typos must not grow the series without bound).
        """
        answer = _EndpointAnswer(self, call.path_params["endpoint"], respond)
        try:
            answer.live = live = self._live(answer.endpoint)
            payload = json_object(self.server.decoded(call), parse=jsonio.loads)
            answer.unit = _unit(payload, call.headers.get("x-unit-id"))
            answer.request_id = pick_request_id(payload.get("id"), call.headers)
            answer.variant = variant = live.router.choose(answer.unit)
            batcher = live.batchers[variant]
            self.server.enqueue(payload, batcher, answer.request_id, variant, partial(answer.settle, payload, batcher),
                                answer.fail)
        except Exception as error:
            answer.fail(error)

    async def _mirror(self, endpoint: str, live: Live, variant: str, payload: dict[str, Any], request_id: str,
                      unit: Any) -> None:
        """The shadow's copy: logged, compared later, never returned, never raised."""
        started = time.perf_counter()
        try:
            batcher = live.batchers[variant]
            batcher.hold()  # a deployment change during the feature read waits for this copy
            try:
                rows = await self.server.rows(payload, batcher, log=False)
                await batcher.submit(rows, request_id, variant, shadow=True)
            finally:
                batcher.release()
        except Exception as error:
            self._record(endpoint, live, variant, request_id, unit, False, _status(error), started, error, True)
            return
        self._record(endpoint, live, variant, request_id, unit, True, 200, started, shadow=True)

    async def describe(self, request: Request) -> Response:
        endpoints = [{"endpoint": e, "version": live.router.version, "strategy": live.router.deployment.strategy,
                      "weights": live.router.deployment.weights, "shadow": list(live.router.shadows),
                      "variants": {v: b.spec.ref for v, b in live.batchers.items()}}
                     for e, live in sorted(self.live.items())]
        return Response(json.dumps({"endpoints": endpoints}), media_type="application/json")

    def _live(self, endpoint: str) -> Live:
        live = self.live.get(endpoint)
        if live is None:
            raise NotFoundError(f"endpoint {endpoint!r} is not deployed here; deployed: {sorted(self.live)}. "
                                f"Create it with `loopstack deploy create {endpoint} MODEL/VERSION`")
        return live

    def _record(self, endpoint: str, live: Live, variant: str, request_id: str, unit: Any, ok: bool, status: int,
                started: float, error: BaseException | None = None, shadow: bool = False) -> None:
        if self.log is None:
            return
        self.log.record(request_id=request_id, endpoint=endpoint, variant=variant,
                        ref=live.router.deployment.variants.get(variant), deployment_version=live.router.version,
                        unit_id=unit_key(unit), shadow=shadow, ok=ok, status=status,
                        latency_ms=(time.perf_counter() - started) * 1e3,
                        error=None if error is None else f"{type(error).__name__}: {error}"[:500])


class _EndpointAnswer:
    """One endpoint request's answer: recorded in the traffic log and /metrics, then handed to `respond`."""

    __slots__ = ("endpoint", "live", "request_id", "respond", "service", "started", "unit", "variant")

    def __init__(self, service: EndpointService, endpoint: str, respond: Callable[[Reply], None]) -> None:
        self.service, self.endpoint, self.respond = service, endpoint, respond
        self.started = time.perf_counter()
        self.live: Live | None = None
        self.variant: str | None = None
        self.request_id: str | None = None
        self.unit: Any = None

    def settle(self, payload: dict[str, Any], batcher: Batcher, outputs: Any, error: BaseException | None) -> None:
        """The batcher's callback: answer with the outputs (and mirror to the shadows), or with the error."""
        if error is not None:
            return self.fail(error)
        live, variant, request_id = self.live, self.variant, self.request_id
        assert live is not None and variant is not None and request_id is not None
        try:
            body = jsonio.dumps({"predictions": outputs.tolist(), "endpoint": self.endpoint, "variant": variant,
                                 "model": batcher.spec.ref, "version": batcher.adapter.version,
                                 "deployment_version": live.router.version, "request_id": request_id}, outputs)
        except Exception as failure:
            return self.fail(failure)
        service = self.service
        _quietly(service._record, self.endpoint, live, variant, request_id, self.unit, True, 200, self.started)
        _quietly(service.server.metrics.request, self.endpoint, variant, 200, time.perf_counter() - self.started)
        for shadow in live.router.shadows:
            _quietly(service._spawn, service._mirror(self.endpoint, live, shadow, payload, request_id, self.unit))
        self.respond(Reply(200, body, headers={"x-request-id": request_id, "x-loopstack-variant": variant}))

    def fail(self, error: BaseException) -> None:
        service = self.service
        reply = error_reply(error, service.server.settings.retry_after_s)
        if self.variant is not None:  # the variant was chosen: the request counts against it, and says which
            assert self.live is not None and self.request_id is not None
            reply.headers.update({"x-request-id": self.request_id, "x-loopstack-variant": self.variant})
            _quietly(service._record, self.endpoint, self.live, self.variant, self.request_id, self.unit, False,
                     reply.status, self.started, error)
        _quietly(service.server.metrics.request, self.endpoint if self.endpoint in service.live else "",
                 self.variant or "", reply.status, time.perf_counter() - self.started)
        self.respond(reply)


def _quietly(bookkeeping: Callable[..., Any], *args: Any) -> None:
    """Run one piece of a request's bookkeeping; its failure is logged, never the client's (nor the rest's)."""
    try:
        bookkeeping(*args)
    except Exception:
        logger.exception("bookkeeping of an endpoint request failed")


def _unit(payload: dict[str, Any], header: str | None) -> Any:
    """The unit the split hashes: the body's ``unit_id`` (or ``user_id``), else the X-Unit-Id header.

    A string or an integer; ``true``/``false`` and whole floats (``2.0``) as well, which the assignment
    hashes as GrowthBook does (``"true"``, ``"2"``). An object or list (hashed as its Python repr), another
    float, or a lone surrogate (no UTF-8 text: hashing it was a 500) is a 400 naming the field.
    """
    for key in ("unit_id", "user_id"):
        value = payload.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            if not is_text(value):
                raise ValidationError(f"{key} {value!r:.60} is not valid Unicode text (a lone surrogate); "
                                      "send a string or an integer")
            return value
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return value
        raise ValidationError(f"{key} must be a string or an integer, got {value!r:.60}")
    return header or None


def _status(error: BaseException) -> int:
    return error_reply(error).status


__all__ = ["EndpointService", "Live"]
