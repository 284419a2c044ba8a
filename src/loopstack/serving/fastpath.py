"""The two hot routes (native predict, v2 infer) as raw ASGI endpoints, matched before Starlette.

Starlette's Request and Response objects and its request/response wrapper cost
about a third of the event loop's time per single-row request, and its
middleware stack and router (two error middlewares wrapping ``send`` twice, a
regex per route) another eighth. The hot routes therefore read the body and
write the answer with the bare ASGI messages, and `HotRoutes` finds them by
splitting the path, in front of the Starlette app; every other route (and a
hot route under a ``root_path``) goes through Starlette as usual. The
endpoints also stay registered as Starlette routes, so both ways reach them.
Under `loopstack serve`, uvicorn's protocol answers these routes before any
ASGI app is called (`loopstack.serving.protocol`); this module is the path
every other ASGI server (and Starlette's TestClient) takes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Call:
    """What a hot handler needs from a request: path parameters, a few headers, the body."""

    path_params: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Reply:
    """A finished answer."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what an HTTP header value cannot carry (as uvicorn checks)
WANTED = frozenset({b"x-request-id", b"x-loopstack-variant", b"x-unit-id", b"inference-header-content-length",
                    b"content-encoding"})


class Endpoint:
    """A raw ASGI app calling ``handler(call) -> Reply``.

    `soon`, when given, is the same handler in callback form, ``soon(call, respond)``: it calls
    ``respond(reply)`` once, on the event loop, and spares the HTTP protocol a task per request
    (`loopstack.serving.protocol`).

    Examples
    --------
    >>> import asyncio
    >>> async def echo(call): return Reply(200, call.body)
    >>> sent = []
    >>> async def receive(): return {"type": "http.request", "body": b"hi", "more_body": False}
    >>> async def send(message): sent.append(message)
    >>> asyncio.run(Endpoint(echo)({"type": "http", "headers": [], "path_params": {}}, receive, send))
    >>> sent[1]["body"]
    b'hi'
    """

    def __init__(self, handler: Callable[[Call], Awaitable[Reply]],
                 soon: Callable[[Call, Callable[[Reply], None]], None] | None = None) -> None:
        self.handler = handler
        self.soon = soon

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.respond(scope.get("path_params", {}), scope, receive, send)

    async def respond(self, path_params: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request whose path parameters were already matched."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in WANTED}
        reply = await self.handler(Call(path_params, headers, await read_body(receive)))
        raw = [(b"content-type", reply.media_type.encode()), (b"content-length", str(len(reply.body)).encode())]
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items())
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        await send({"type": "http.response.body", "body": reply.body})


class HotRoutes:
    """Find ``POST /v1/models/{name}:predict``, ``POST /v2/models/{name}[/versions/{version}]/infer`` and,
    when the server serves deployments, ``POST /v1/endpoints/{endpoint}:predict``.

    A path parameter matches what Starlette's ``{name}`` matches: one or more
    characters other than ``/``.

    Examples
    --------
    >>> routes = HotRoutes(predict="P", infer="I")
    >>> routes.match({"method": "POST", "path": "/v1/models/fraud:predict"})
    ('P', {'name': 'fraud'})
    >>> routes.match({"method": "POST", "path": "/v2/models/fraud/versions/3/infer"})
    ('I', {'name': 'fraud', 'version': '3'})
    >>> routes.match({"method": "GET", "path": "/v1/models/fraud:predict"}) is None
    True
    >>> routes.endpoint = "E"
    >>> routes.match({"method": "POST", "path": "/v1/endpoints/fraud-api:predict"})
    ('E', {'endpoint': 'fraud-api'})
    """

    def __init__(self, predict: Any, infer: Any, endpoint: Any = None, max_body_bytes: int = 64 * 2**20) -> None:
        self.predict = predict
        self.infer = infer
        self.endpoint = endpoint
        self.max_body_bytes = max_body_bytes  # the server's protocol refuses a longer body (413) as it arrives

    def match(self, scope: Scope) -> tuple[Any, dict[str, str]] | None:
        """The endpoint and path parameters of a hot request, or None to let Starlette route it."""
        if scope.get("method") != "POST" or scope.get("root_path"):
            return None
        return self.match_path(scope["path"])

    def match_path(self, path: str) -> tuple[Any, dict[str, str]] | None:
        """`match` for a POST to `path` (`loopstack.serving.protocol` calls it before any scope exists)."""
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            name = path[len("/v1/models/") : -len(":predict")]
            return (self.predict, {"name": name}) if name and "/" not in name else None
        if self.endpoint is not None and path.startswith("/v1/endpoints/") and path.endswith(":predict"):
            name = path[len("/v1/endpoints/") : -len(":predict")]
            return (self.endpoint, {"endpoint": name}) if name and "/" not in name else None
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path.split("/")
            if len(parts) == 5 and parts[3]:
                return self.infer, {"name": parts[3]}
            if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
                return self.infer, {"name": parts[3], "version": parts[5]}
        return None


async def read_body(receive: Receive) -> bytes:
    """The whole request body (clients send small bodies in one message; large ones in several)."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)
