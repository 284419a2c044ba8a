"""The model server, in process: the real Starlette app on its own event loop thread, called over ASGI.

No socket and no port: each request is handed to the same ASGI app
`loopstack serve` runs (scope, receive, send, as uvicorn would), with its lifespan (batchers, prediction log)
started and stopped here. Synchronous callers (the traffic replay, loop
actions) submit coroutines to the server's loop and wait for the answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from loopstack.core.errors import BackendUnavailableError


@dataclass
class Answer:
    """One request's outcome as the client saw it."""

    request_id: str
    variant: str
    status: int
    score: float | None
    latency_ms: float


class InProcessServer:
    """Run `create_app(specs, settings, deployments=...)` on a background event loop.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> from loopstack.serving import ModelSpec, ServerSettings
    >>> model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    >>> with InProcessServer([ModelSpec(name="m", model=model)], ServerSettings()) as server:
    ...     [a.status for a in server.predict("/v1/models/m:predict", [("r1", [0.5])])]
    [200]
    """

    def __init__(self, specs: Sequence[Any], settings: Any, concurrency: int = 32, deployments: Any = None) -> None:
        from loopstack.serving import create_app

        self.app = create_app(specs, settings, deployments=deployments)
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._state: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="loopstack-demo-server", daemon=True)

    def __enter__(self) -> InProcessServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or not self._ready.is_set():
            raise BackendUnavailableError(f"the in-process model server did not start: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            async with self.app.router.lifespan_context(self.app) as state:
                self._state = dict(state or {})
                self._ready.set()
                await self._stopping.wait()
        except BaseException as error:  # surfaced to start()
            self._error = error
            self._ready.set()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 300) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def predict(self, path: str, requests: Sequence[tuple[str, list[float]]]) -> list[Answer]:
        """POST each ``(request_id, features)`` to `path` concurrently; answers in order.

        The request id is also the unit an endpoint (``/v1/endpoints/{name}:predict``) splits
        traffic by, so a request's variant is stable and request counts are not clustered.
        """
        return self.call(self._predict_all(path, requests))

    async def _predict_all(self, path: str, requests: Sequence[tuple[str, list[float]]]) -> list[Answer]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(request_id: str, row: list[float]) -> Answer:
            async with limit:
                started = time.perf_counter()
                body = json.dumps({"instances": [row], "id": request_id, "unit_id": request_id}).encode()
                status, answer, headers = await self._asgi("POST", path, body)
                latency = (time.perf_counter() - started) * 1e3
                if status != 200:  # an endpoint names the variant that failed, once it had chosen one
                    return Answer(request_id, headers.get("x-loopstack-variant", ""), status, None, latency)
                reply = json.loads(answer)
                return Answer(request_id, reply.get("variant", ""), status, reply["predictions"][0][1], latency)

        return list(await asyncio.gather(*(one(*r) for r in requests)))

    async def _asgi(self, method: str, path: str, body: bytes = b"",
                    headers: Sequence[tuple[bytes, bytes]] = ()) -> tuple[int, bytes, dict[str, str]]:
        """One HTTP request straight into the ASGI app: what a socket server would hand it, minus the socket."""
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *headers],
            "client": ("127.0.0.1", 0), "server": ("demo", 80), "state": self._state,
        }
        sent = False
        status = 500
        chunks: list[bytes] = []
        answered: dict[str, str] = {}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # no disconnect: wait forever, as an open connection does
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                answered.update((k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks), answered

    def post(self, path: str, payload: Any) -> Any:
        """POST JSON to the app (feedback, hot swaps); returns the decoded answer."""
        status, body, _ = self.call(self._asgi("POST", path, json.dumps(payload).encode()))
        if status >= 400:
            raise BackendUnavailableError(f"POST {path} answered {status}: {body.decode(errors='replace')}")
        return json.loads(body)

    def sync_deployments(self) -> None:
        """Apply deployment changes now, rather than at the server's next poll."""
        endpoints = self.app.state.server.endpoints
        if endpoints is not None:
            self.call(endpoints.sync())

    def flush_logs(self) -> None:
        """Write the buffered prediction and traffic logs, so readers see every answer so far.

        Mirrored (shadow) requests run after their answers went out: they are waited for first,
        or a shadow's failures could miss the report that judges it.
        """
        server = self.app.state.server
        if server.endpoints is not None:
            self.call(server.endpoints.settle())
        for log in (server.log, getattr(server.endpoints, "log", None)):
            if log is not None:
                log.flush()

    def get(self, path: str) -> Any:
        """GET a JSON resource of the app."""
        return json.loads(self.call(self._asgi("GET", path))[1])

    def close(self) -> None:
        """Drain requests, flush the prediction log, stop the loop thread."""
        if self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(60)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()
