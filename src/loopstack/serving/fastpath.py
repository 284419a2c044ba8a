"""The two hot routes (native predict, v2 infer) as raw ASGI endpoints inside the Starlette app.

Starlette's Request and Response objects and its request/response wrapper cost
about a third of the event loop's time per single-row request. The hot routes
still go through Starlette's router and error middleware, but read the body
and write the answer with the bare ASGI messages; every other route is a plain
Starlette endpoint.
"""

from __future__ import annotations

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


WANTED = frozenset({b"x-request-id", b"x-loopstack-variant", b"inference-header-content-length", b"content-encoding"})


class Endpoint:
    """A raw ASGI app calling ``handler(call) -> Reply``.

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

    def __init__(self, handler: Callable[[Call], Awaitable[Reply]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in WANTED}
        reply = await self.handler(Call(scope.get("path_params", {}), headers, await read_body(receive)))
        raw = [(b"content-type", reply.media_type.encode()), (b"content-length", str(len(reply.body)).encode())]
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items())
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        await send({"type": "http.response.body", "body": reply.body})


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
