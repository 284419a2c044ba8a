"""The online server: a Starlette ASGI app serving registered models.

Routes::

    POST /v1/models/{name}:predict        native JSON: {"instances": rows} or {"inputs": columns}
    GET  /v1/models[/{name}]              served models and their input fields
    POST /v1/models/{name}:load           hot swap: {"ref": "fraud/4"} (or re-resolve the alias)
    POST /v1/feedback                     outcomes/labels by request id
    GET  /v2/health/live | /v2/health/ready | /v2
    GET  /v2/models/{name}[/versions/{v}][/ready]
    POST /v2/models/{name}[/versions/{v}]/infer      Open Inference Protocol, JSON or binary tensors
    GET  /metrics                         Prometheus text

Every `LoopstackError` maps to its HTTP status with ``{"error": message}``; a
full queue is 503 with Retry-After, a request past its deadline 504, and
anything unexpected 500 with the message: no input crashes or hangs the server.
Requests may send entity keys instead of features (``{"entities": [...]}``)
for models served with ``ModelSpec(features=...)``: the features are read from
the feature store's online store, on-demand transforms applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loopstack.core.errors import (
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    LoopstackError,
    SignatureError,
    ValidationError,
)
from loopstack.serving import heap, jsonio, v2
from loopstack.serving.batcher import Batcher, QueueFullError
from loopstack.serving.config import ModelSpec, ServerSettings
from loopstack.serving.fastpath import Call, Endpoint, HotRoutes, Reply
from loopstack.serving.inputs import n_rows
from loopstack.serving.metrics import CONTENT_TYPE, ServingMetrics
from loopstack.serving.models import Loader
from loopstack.serving.predlog import PredictionLog
from loopstack.serving.repository import ModelRepository, Resolver
from loopstack.serving.threads import ThreadBudget

logger = logging.getLogger("loopstack.serving")
JSON = "application/json"
DEEP = "the body is not valid JSON: it is nested too deeply (more than 1,000 levels)"


class Server:
    """State behind the app: the models, their metrics, the prediction log."""

    def __init__(self, specs: Sequence[ModelSpec], settings: ServerSettings, loader: Loader | None,
                 resolver: Resolver | None) -> None:
        self.settings = settings
        self.budget = ThreadBudget(settings.threads())
        self.executor = ThreadPoolExecutor(max(1, len(specs)), thread_name_prefix="loopstack-predict")
        self.log = PredictionLog(settings.log_dir, settings.log_flush_s, settings.log_segment_rows) \
            if settings.log_dir else None
        self.repo = ModelRepository(specs, self.executor, loader=loader, budget=self.budget)
        self.metrics = ServingMetrics(self.batchers, settings.gpu, settings.gpus)
        self.repo.observers.append(self.metrics.observe_batch)
        if self.log is not None:
            self.repo.observers.append(self.log.observe)
        self.resolver = resolver
        self.feature_store: Any = None
        self._refresh: asyncio.Task[None] | None = None
        self.endpoints: Any = None  # deployment endpoints (loopstack.serving.routing), when served
        self.loop: asyncio.AbstractEventLoop | None = None  # for callers on other threads (tests, admin tools)
        self.hot = HotRoutes(predict=Endpoint(self.predict, self.predict_soon),
                             infer=Endpoint(self.infer, self.infer_soon), max_body_bytes=settings.max_body_bytes)
        self._tasks: set[asyncio.Task[None]] = set()
        self.settle_heap = False  # serve() sets it: the process is ours, so heap.settle() after start-up

    def batchers(self) -> list[Batcher]:
        """Every batcher answering requests: the served models' and the deployment endpoints' variants."""
        endpoints = self.endpoints.batchers() if self.endpoints is not None else []
        return [*self.repo.batchers(), *endpoints]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.loop = asyncio.get_running_loop()
        await self.repo.start()
        if self.endpoints is not None:
            await self.endpoints.start()
        if self.settings.refresh_s and self.resolver is not None:
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_loop(self.resolver))
        if self.settle_heap:
            heap.settle()
        logger.info("serving %s", self.repo.names())
        try:
            yield
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Flush the prediction log, finish accepted requests, then flush it again.

        The first flush (and the endpoints' traffic log's) writes what was answered before the stop, so
        a supervisor that kills the process while a stuck model or endpoint variant holds up the drain
        (Kubernetes after its grace period) loses none of it. A predict still running after the drain is
        stuck: the pools are not waited for.
        """
        if self._refresh is not None:
            self._refresh.cancel()
        if self.log is not None:
            await asyncio.to_thread(self.log.flush)
        if self.endpoints is not None:
            await self.endpoints.flush()
            await self.endpoints.stop()
        await self.repo.drain()
        if self.log is not None:
            await asyncio.to_thread(self.log.close)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _refresh_loop(self, resolver: Resolver) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            try:
                await self.repo.refresh(resolver)
            except Exception:  # a registry hiccup must not stop serving
                logger.exception("alias refresh failed")

    # -- handlers ---------------------------------------------------------------------------
    # Each hot route answers through a callback (`predict_soon`, `infer_soon`): the HTTP protocol calls
    # them without a task per request (`loopstack.serving.protocol`); the ASGI routes await `predict`/`infer`.
    async def predict(self, call: Call) -> Reply:
        return await awaited(self.predict_soon, call)

    async def infer(self, call: Call) -> Reply:
        return await awaited(self.infer_soon, call)

    def predict_soon(self, call: Call, respond: Callable[[Reply], None]) -> None:
        """Answer a native predict through `respond`, once, on the event loop."""
        answer = _Answer(self, call.path_params["name"], respond)
        try:
            batcher = self.repo.get(answer.name, call.path_params.get("version"))
            answer.version = batcher.adapter.version
            payload = json_object(self.decoded(call), parse=jsonio.loads)
            request_id = pick_request_id(payload.get("id"), call.headers)

            def build(outputs: Any) -> Reply:
                body = jsonio.dumps({"predictions": outputs.tolist(), "model": batcher.spec.name,
                                     "version": batcher.adapter.version, "request_id": request_id}, outputs)
                return Reply(200, body, headers={"x-request-id": request_id})

            self.enqueue(payload, batcher, request_id, call.headers.get("x-loopstack-variant"),
                         answer.settler(build), answer.fail)
        except Exception as error:
            answer.fail(error)

    def decoded(self, call: Call) -> bytes:
        """A native JSON body, decoded from gzip or deflate if it says so (read as JSON it was a misleading 400)."""
        encoding = call.headers.get("content-encoding")
        return v2.decoded_body(call.body, encoding, self.settings.max_body_bytes) if encoding else call.body

    def enqueue(self, payload: dict[str, Any], batcher: Batcher, request_id: str, variant: str | None,
                settle: Any, fail: Callable[[BaseException], None]) -> None:
        """Queue a native body's rows on `batcher`; entity keys are read from the feature store first, off the
        loop (a failed read goes to `fail`)."""
        rows = given_rows(payload, batcher.adapter.schema)
        if rows is not None:
            batcher.enqueue(rows, request_id, variant, None, settle)
        else:  # held from now, so that a swap during the read waits for the request instead of failing it
            batcher.hold()
            task = self.spawn(self._enqueue_entities(payload["entities"], batcher, request_id, variant, settle), fail)
            task.add_done_callback(lambda _: batcher.release())

    async def _enqueue_entities(self, entities: Any, batcher: Batcher, request_id: str, variant: str | None,
                                settle: Any) -> None:
        batcher.enqueue(await self.entity_rows(entities, batcher), request_id, variant, None, settle)

    def infer_soon(self, call: Call, respond: Callable[[Reply], None]) -> None:
        """Answer an Open Inference Protocol infer through `respond`, once, on the event loop."""
        answer = _Answer(self, call.path_params["name"], respond)
        try:
            batcher = self.repo.get(answer.name, call.path_params.get("version"))
            answer.version = batcher.adapter.version
            headers = call.headers
            payload, binary = v2.parse_body(call.body, headers.get(v2.HEADER), headers.get("content-encoding"),
                                            self.settings.max_body_bytes)
            rows = v2.decode_inputs(payload, binary, batcher.adapter)
            n = n_rows(rows)
            if n == 0:
                raise SignatureError("the input tensors hold no rows; send at least one")
            request_id = pick_request_id(payload.get("id"), headers)
            binary_outputs = v2.wants_binary(payload, batcher.adapter)

            def build(outputs: Any) -> Reply:
                body, header_length = v2.encode_response(batcher.adapter, outputs, request_id, binary_outputs)
                if header_length is None:
                    return Reply(200, body)
                return Reply(200, body, "application/octet-stream",
                             {"inference-header-content-length": str(header_length)})

            batcher.enqueue(rows, request_id, headers.get("x-loopstack-variant"), n, answer.settler(build))
        except Exception as error:
            answer.fail(error)

    def spawn(self, coroutine: Any, fail: Callable[[BaseException], None]) -> asyncio.Task[None]:
        """Run `coroutine` as a task, kept until it finishes; its error (or its cancellation) goes to `fail`."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                fail(BackendUnavailableError("the server stopped before the request was queued; retry"))
            elif task.exception() is not None:
                fail(task.exception())  # type: ignore[arg-type]

        task.add_done_callback(finished)
        return task

    async def rows(self, payload: dict[str, Any], batcher: Batcher, log: bool | None = None) -> Any:
        """A native body's input rows for `batcher`'s model: as sent (``instances`` or ``inputs``), or read
        from the feature store for ``entities`` (`entity_rows`; `log` goes to that read)."""
        rows = given_rows(payload, batcher.adapter.schema)
        return rows if rows is not None else await self.entity_rows(payload["entities"], batcher, log)

    async def entity_rows(self, entities: Any, batcher: Batcher, log: bool | None = None) -> Any:
        """Feature rows for entity keys, read from the online store (with on-demand transforms applied).

        The features are the model's: ``ModelSpec.features``, else what it was logged with
        (``log_model(..., features=...)``). Other fields of an entity row (request data) are
        inputs too, when the model takes them. `log` goes to the feature store's read (False for a
        shadow's mirrored copy, which would otherwise be logged as a second served read).
        """
        features = batcher.adapter.features
        if features is None:
            raise ConfigError(
                f"model {batcher.spec.name!r} takes no entity keys: it was logged without features "
                "(log_model(..., features=['view:feature', ...])) and served without ModelSpec(features=...); "
                "send 'instances' instead"
            )
        if self.feature_store is None:
            raise ConfigError(
                f"model {batcher.spec.name!r} reads features {features!r}, but this server has no feature store: "
                "start it with create_app(..., feature_store=project.feature_store) (`loopstack serve` and "
                "`loopstack deploy serve` pass the project's)"
            )
        if not isinstance(entities, list) or not entities or not all(isinstance(e, dict) for e in entities):
            raise ValidationError("'entities' must be a non-empty list of objects of join keys, e.g. [{'user_id': 7}]")
        refs = features if isinstance(features, str) else list(features)
        response = await asyncio.to_thread(self.feature_store.get_online_features, refs, entities, log=log)
        found = {**response.entities, **response.values}
        schema = batcher.adapter.schema
        return schema.from_columns({name: found[name] for name in schema.names if name in found})

    async def feedback(self, request: Request) -> Response:
        try:
            if self.log is None:
                raise ConflictError("feedback needs the prediction log; start the server with a log_dir")
            payload = json_object(await request.body(), allow_list=True)
            records = payload if isinstance(payload, list) else payload.get("feedback", [payload])
            if not isinstance(records, list) or not records:
                raise ValidationError("feedback must be an object {request_id, label} or a non-empty list of them")
            accepted = self.log.feedback(records)
        except Exception as error:
            return error_response(error, self.settings.retry_after_s)
        return _respond({"accepted": accepted}, 202)

    async def load(self, request: Request) -> Response:
        try:
            name = request.path_params["name"]
            payload = json_object(await request.body() or b"{}")
            ref = payload.get("ref")
            if ref is not None and not isinstance(ref, str):
                raise ValidationError(f"'ref' must be a registry reference like 'fraud/4', got {ref!r}")
            batcher = await self.repo.swap(name, ref)
        except Exception as error:
            return error_response(error, self.settings.retry_after_s)
        return _respond({"name": name, "version": batcher.adapter.version, "ref": batcher.spec.ref})

    async def models(self, request: Request) -> Response:
        name = request.path_params.get("name")
        action = name.rpartition(":")[2] if name and ":" in name else None
        if action in ("predict", "load"):  # `GET .../m:predict` matched this route: say which method it takes
            return Response(json.dumps({"error": f"{request.url.path} takes POST, not {request.method}"}), 405,
                            media_type=JSON, headers={"allow": "POST"})
        try:
            names = [name] if name else self.repo.names()
            described = [_describe(self.repo.get(n)) for n in names]
        except Exception as error:
            return error_response(error, self.settings.retry_after_s)
        return _respond(described[0] if name else {"models": described})

    async def model_metadata(self, request: Request) -> Response:
        try:
            batcher = self.repo.get(request.path_params["name"], request.path_params.get("version"))
        except Exception as error:
            return error_response(error, self.settings.retry_after_s)
        return _respond(v2.model_metadata(batcher.adapter))

    async def model_ready(self, request: Request) -> Response:
        try:
            self.repo.get(request.path_params["name"], request.path_params.get("version"))
        except Exception as error:
            return error_response(error, self.settings.retry_after_s)
        return _respond({"name": request.path_params["name"], "ready": self.repo.ready},
                        200 if self.repo.ready else 503)

    async def live(self, request: Request) -> Response:
        return _respond({"live": True})

    async def ready(self, request: Request) -> Response:
        return _respond({"ready": self.repo.ready}, 200 if self.repo.ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        from loopstack import __version__

        return _respond({"name": "loopstack", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def render_metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def routes(self) -> list[Route]:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        return [
            Route("/v1/models/{name}:predict", self.hot.predict, methods=["POST"]),
            Route("/v1/models/{name}:load", self.load, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{name}", self.models, methods=["GET"]),
            Route("/v1/feedback", self.feedback, methods=["POST"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            *(Route(f"{base}/infer", self.hot.infer, methods=["POST"]) for base in (model, versioned)),
            *(Route(f"{base}/ready", self.model_ready, methods=["GET"]) for base in (model, versioned)),
            *(Route(base, self.model_metadata, methods=["GET"]) for base in (model, versioned)),
            Route("/metrics", self.render_metrics, methods=["GET"]),
        ]


class ServingApp(Starlette):
    """Starlette, with the hot routes answered before its middleware and router (see `loopstack.serving.fastpath`)."""

    def __init__(self, hot: HotRoutes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot = hot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.user_middleware:  # added middleware must see every request
            found = self.hot.match(scope)
            if found is not None:
                endpoint, path_params = found
                await endpoint.respond(path_params, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    models: Iterable[ModelSpec],
    settings: ServerSettings | None = None,
    loader: Loader | None = None,
    resolver: Resolver | None = None,
    feature_store: Any = None,
    deployments: Any = None,
) -> Starlette:
    """The ASGI app serving `models`; run it with uvicorn (`loopstack serve` does).

    Parameters
    ----------
    models : iterable of ModelSpec
        What to serve, each with its batching settings.
    settings : ServerSettings, optional
        Prediction log folder, thread budget, retry hint, alias refresh.
    loader : callable, optional
        ``ref -> model``; defaults to `loopstack.registry.api.load_model` with ``compiled=True``.
    resolver : callable, optional
        ``"name@alias" -> version``; with ``settings.refresh_s`` it swaps a moved alias in.
    feature_store : FeatureStore, optional
        Where models with ``ModelSpec.features`` read features for entity-key requests.
    deployments : Deployments, optional
        ``project.deployments``: serve its endpoints at ``POST /v1/endpoints/{endpoint}:predict``,
        following deployment changes without a restart (`loopstack.serving.routing`).

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> from starlette.testclient import TestClient
    >>> model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    >>> with TestClient(create_app([ModelSpec(name="m", model=model)])) as client:
    ...     client.post("/v1/models/m:predict", json={"instances": [[0.5]]}).json()["predictions"]
    [[0.5, 0.5]]
    """
    specs = list(models)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValidationError(f"served model names must be unique, got {names}; rename with NAME=REF")
    server = Server(specs, settings or ServerSettings(), loader, resolver)
    server.feature_store = feature_store
    routes = server.routes()
    if deployments is not None:
        from loopstack.serving.routing import EndpointService

        server.endpoints = EndpointService(deployments, server)
        server.hot.endpoint = Endpoint(server.endpoints.predict, server.endpoints.predict_soon)
        routes.extend(server.endpoints.routes())
    app = ServingApp(server.hot, routes=routes, lifespan=server.lifespan)
    app.state.server = server
    return app


class _Answer:
    """One hot request's answer: counted in /metrics (status, latency), then handed to `respond`."""

    __slots__ = ("name", "respond", "server", "started", "version")

    def __init__(self, server: Server, name: str, respond: Callable[[Reply], None]) -> None:
        self.server, self.name, self.version, self.respond = server, name, "", respond
        self.started = time.perf_counter()

    def settler(self, build: Callable[[Any], Reply]) -> Callable[[Any, BaseException | None], None]:
        """The batcher's callback: the reply `build` makes of the outputs, or the error's."""

        def settle(outputs: Any, error: BaseException | None) -> None:
            if error is None:
                try:
                    reply = build(outputs)
                except Exception as failure:
                    error = failure
                else:
                    return self.send(reply)
            self.fail(error)

        return settle

    def send(self, reply: Reply) -> None:
        try:
            self.server.metrics.request(self.name, self.version, reply.status, time.perf_counter() - self.started)
        except Exception:  # counting must never cost the client its answer
            logger.exception("counting a request failed")
        self.respond(reply)

    def fail(self, error: BaseException) -> None:
        if self.name not in self.server.repo.names():
            self.name = ""  # typos must not grow the series without bound
        self.send(error_reply(error, self.server.settings.retry_after_s))


async def awaited(start: Callable[[Call, Callable[[Reply], None]], None], call: Call) -> Reply:
    """The reply of a callback-style handler, awaited."""
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    def respond(reply: Reply) -> None:
        if not future.done():
            future.set_result(reply)

    start(call, respond)
    return await future


def given_rows(payload: dict[str, Any], schema: Any) -> Any:
    """The input rows a native body sends (``instances`` or ``inputs``); None when it sends ``entities``."""
    if "instances" in payload:
        return schema.from_instances(payload["instances"])
    if "inputs" in payload:
        return schema.from_columns(payload["inputs"])
    if "entities" in payload:
        return None
    raise ValidationError("the body needs 'instances' (a list of rows), 'inputs' (an object of columns) or "
                          "'entities' (a list of objects of join keys)")


def error_response(error: BaseException, retry_after_s: int = 1) -> Response:
    """The JSON error response for any exception."""
    reply = error_reply(error, retry_after_s)
    return Response(reply.body, reply.status, reply.headers, media_type=JSON)


def error_reply(error: BaseException, retry_after_s: int = 1) -> Reply:
    """The JSON error reply for any exception (the one place errors become statuses)."""
    headers = {}
    if isinstance(error, TimeoutError):
        status, message = 504, "the request did not finish within the model's timeout_s; retry or raise timeout_s"
    elif isinstance(error, LoopstackError):
        status, message = error.http_status, str(error)
    else:
        logger.exception("unexpected error", exc_info=error)
        status, message = 500, f"{type(error).__name__}: {error}"
    if status == 503 or isinstance(error, QueueFullError):
        headers["retry-after"] = str(retry_after_s)
    return Reply(status, json.dumps({"error": message}).encode(), headers=headers)


def json_object(body: bytes, allow_list: bool = False, parse: Any = json.loads) -> Any:
    """The request body as a JSON object (or list, with `allow_list`); a ValidationError otherwise."""
    try:
        payload = parse(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationError(f"the body is not valid JSON ({error})") from None
    except RecursionError:  # json.loads, where orjson stops at 1024 levels
        raise ValidationError(DEEP) from None
    if not isinstance(payload, dict) and not (allow_list and isinstance(payload, list)):
        raise ValidationError(f"the body must be a JSON object, got {type(payload).__name__}")
    return payload


def pick_request_id(given: Any, headers: dict[str, str]) -> str:
    """The body's ``id``, else the X-Request-Id header, else a new random id.

    The id goes back in the X-Request-Id header, so one a header cannot carry is refused (the header's
    own value included: it is echoed as sent), and so is
    one that is not a string (it was replaced by a random id, and feedback sent under it never joined).
    """
    if isinstance(given, str) and given:
        if not (given.isascii() and given.isprintable()):
            raise ValidationError(f"the request id {given!r} cannot go in an HTTP header: send printable ASCII "
                                  "(it comes back as X-Request-Id, and clients decode headers as ASCII)")
        return given
    if given is not None and given != "":  # a number: feedback takes string ids only, so it could never join
        raise ValidationError(f"the request id {given!r:.40} must be a string (send \"id\": \"{given!s:.40}\"); "
                              "feedback finds the prediction by that string")
    header = headers.get("x-request-id")
    if header:
        if not (header.isascii() and header.isprintable()):  # it goes back as sent: a tab or byte 0xff too
            raise ValidationError(f"the X-Request-Id header {header!r:.60} is not printable ASCII; send printable "
                                  "ASCII (it comes back as X-Request-Id, and clients decode headers as ASCII)")
        return header
    return new_request_id()


def new_request_id() -> str:
    """A random 128-bit id in hex, like ``uuid4().hex`` without its system call (os.urandom) per request.

    The module-level generator is seeded from the OS and re-seeded in a forked child, so worker
    processes do not repeat each other's ids.
    """
    return f"{random.getrandbits(128):032x}"


def _respond(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status, media_type=JSON)


def _describe(batcher: Batcher) -> dict[str, Any]:
    adapter = batcher.adapter
    return {"name": adapter.name, "version": adapter.version, "ref": batcher.spec.ref, "method": adapter.method,
            "inputs": [{"name": c.name, "dtype": str(c.dtype)} for c in adapter.schema.columns]}
