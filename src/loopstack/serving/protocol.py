"""The hot routes answered inside uvicorn's HTTP protocol, without an ASGI request cycle.

With the hot routes already raw ASGI (`loopstack.serving.fastpath`), what
bounded a single-row request under load was uvicorn's own per-request work:
a scope dict, a `RequestResponseCycle`, the ``receive`` and ``send``
coroutines and their header checks, the event that hands the body over. A
bare ASGI app answering a constant on uvicorn served 42k requests/s on the
2-core dev VM, while a bare protocol on the same uvloop and httptools served
150k (as many as nginx: the load generator's limit).

`hot_protocol` subclasses uvicorn's httptools protocol with one change: when
a request's line and headers name a hot route, the protocol keeps the body
itself and hands it to the route's callback form (`Endpoint.soon`); the
batcher's callback then writes the whole answer to the transport in one call,
with no task per request (a route with only a coroutine handler runs it in a
task). Every other request, and every case the fast path leaves out
(``Expect: 100-continue``, a request pipelined behind an unfinished one,
``limit_concurrency``, a ``root_path``, a query string or a percent-encoded
path, middleware added to the app), takes uvicorn's own path unchanged;
pipelining, flow control and the graceful drain on SIGTERM stay uvicorn's.
Keep-alive keeps uvicorn's timeout, with one timer per idle spell that checks
when it fires, rather than uvicorn's timer armed and cancelled per request.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from loopstack.serving.fastpath import HEADER_CONTROL, WANTED, Call, HotRoutes, Reply

logger = logging.getLogger("loopstack.serving")
CLOSE = b"connection: close\r\n"
INTERNAL_ERROR = Reply(500, b"Internal Server Error", "text/plain; charset=utf-8")  # uvicorn's answer to a bug


class _NoEvent:
    """Stands in for the cycle's message event, which uvicorn's protocol sets on a disconnect."""

    __slots__ = ()

    def set(self) -> None:
        pass


class HotCycle:
    """One hot request, with the attributes uvicorn's protocol reads from its own request cycle."""

    __slots__ = ("body", "disconnected", "endpoint", "headers", "keep_alive", "path_params", "response_complete")
    message_event = _NoEvent()

    def __init__(self, endpoint: Any, path_params: dict[str, str], headers: dict[str, str], keep_alive: bool) -> None:
        self.endpoint = endpoint
        self.path_params = path_params
        self.headers = headers
        self.body = bytearray()
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False


class Encoder:
    """Writes whole HTTP/1.1 answers: status line, uvicorn's default headers (server, date), ours, the body.

    uvicorn replaces its default-header list once a second (the date); the encoder joins it once per list.

    Examples
    --------
    >>> Encoder().encode(Reply(200, b"{}"), True, [])
    b'HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: 2\\r\\n\\r\\n{}'
    """

    def __init__(self) -> None:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE

        self.status_lines: dict[int, bytes] = STATUS_LINE
        self._defaults: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")

    def encode(self, reply: Reply, keep_alive: bool, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        cached, joined = self._defaults
        if cached is not default_headers:
            joined = b"".join(b"%s: %s\r\n" % pair for pair in default_headers)
            self._defaults = (default_headers, joined)
        head = b"%s%scontent-type: %s\r\ncontent-length: %d\r\n" % (
            self.status_lines[reply.status], joined, reply.media_type.encode(), len(reply.body))
        parts = [head]
        for name, text in reply.headers.items():
            if HEADER_CONTROL.search(text):
                raise ValueError(f"header {name!r} has a control character: {text!r}")
            parts.append(f"{name}: {text}\r\n".encode("latin-1"))
        if not keep_alive:
            parts.append(CLOSE)
        parts.append(b"\r\n")
        parts.append(reply.body)
        return b"".join(parts)


def hot_protocol(app: Any) -> type | str:
    """The uvicorn ``http`` setting for `app`: a protocol class answering its hot routes, or ``"auto"``.

    "auto" when `app` has no hot routes or httptools (uvicorn[standard]) is missing.
    """
    routes: HotRoutes | None = getattr(app, "hot", None)
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"
    if routes is None:
        return "auto"

    encoder = Encoder()

    class HotProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        """uvicorn's httptools protocol, answering `routes` itself (see the module docstring)."""

        _idle_since: float | None = None  # when the last answer completed; None while a request is in

        # -- keep-alive: one timer per idle spell, not a call_later and a cancel per request ---------------
        def _unset_keepalive_if_required(self) -> None:
            # uvicorn calls this on every chunk received and cancels the timer that its every answer arms: a
            # call_later and a cancel per request, about a fifteenth of a single-row request's cost. Here the
            # connection is marked busy instead, and the timer, armed once, checks when it fires.
            self._idle_since = None

        def on_response_complete(self) -> None:
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self.flow.resume_reading()
            if self.pipeline:
                cycle, pipelined_app = self.pipeline.pop()
                self._start_asgi_task(cycle, pipelined_app)
                return
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

        def _keep_alive_due(self) -> None:
            """Close the connection if it stayed idle for the whole keep-alive timeout since its last answer."""
            self.timeout_keep_alive_task = None
            if self.transport.is_closing() or self._idle_since is None:
                return  # closed, or a request is in: its answer arms the timer again
            left = self._idle_since + self.timeout_keep_alive - self.loop.time()
            if left > 0:
                self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
                return
            self.timeout_keep_alive_handler()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None

        def on_message_begin(self) -> None:
            # uvicorn's builds the ASGI scope here; a hot request needs none, so it waits for on_headers_complete.
            # A request answered at once (a 404, a full queue) arms the keep-alive timer inside feed_data; one
            # pipelined behind it in the same packet must not run under that timer.
            self._unset_keepalive_if_required()
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self.body_size = 0

        def on_headers_complete(self) -> None:
            found = self._hot_route()
            if found is None:
                url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
                super().on_message_begin()
                self.url, self.expect_100_continue = url, expect_100_continue
                self.headers.extend(headers)  # the list the new scope holds
                super().on_headers_complete()
                return
            endpoint, path_params = found
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers if k in WANTED}
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            self.cycle = HotCycle(endpoint, path_params, headers, keep_alive)  # type: ignore[assignment]

        def _hot_route(self) -> tuple[Any, dict[str, str]] | None:
            if self.expect_100_continue or self.limit_concurrency is not None or self.root_path:
                return None
            if self.cycle is not None and not self.cycle.response_complete:
                return None  # pipelined behind an unfinished request: uvicorn queues it
            if self.parser.get_method() != b"POST" or self.parser.should_upgrade() or app.user_middleware:
                return None
            url: bytes = self.url
            if b"%" in url or b"?" in url or not url.startswith(b"/"):
                return None
            return routes.match_path(url.decode("ascii"))

        def on_body(self, body: bytes) -> None:
            self.body_size += len(body)
            if self.body_size > routes.max_body_bytes:  # on every route: neither uvicorn nor Starlette has a limit
                self._refuse_body()
                return
            cycle = self.cycle
            if isinstance(cycle, HotCycle):
                if not cycle.response_complete:
                    cycle.body += body
                return
            super().on_body(body)

        def _refuse_body(self) -> None:
            """A 413 and a closed connection once a body passes the limit, before all of it is in memory."""
            if self.transport.is_closing():
                return
            limit = routes.max_body_bytes
            message = (f'{{"error": "the request body is longer than {limit} bytes, the server\'s limit '
                       f'(ServerSettings.max_body_bytes); send fewer rows per request"}}')
            reply = Reply(413, message.encode())
            cycle = self.cycle
            if isinstance(cycle, HotCycle):
                cycle.body, cycle.keep_alive = bytearray(), False
                self._write(cycle, reply)
                return
            if cycle is not None and not cycle.response_started:  # the app has not begun an answer of its own
                self.transport.write(encoder.encode(reply, False, self.server_state.default_headers))
            self.transport.close()

        def on_message_complete(self) -> None:
            if self.body_size > routes.max_body_bytes:
                return  # refused: the app never sees a cut-off body as a whole one
            cycle = self.cycle
            if not isinstance(cycle, HotCycle):
                super().on_message_complete()
                return
            call = Call(cycle.path_params, cycle.headers, bytes(cycle.body))
            if cycle.endpoint.soon is not None:
                cycle.endpoint.soon(call, partial(self._respond, cycle))
                return
            task = self.loop.create_task(self._answer(cycle, call))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

        async def _answer(self, cycle: HotCycle, call: Call) -> None:
            try:
                reply = await cycle.endpoint.handler(call)
            except Exception:  # as uvicorn answers an app's exception
                logger.exception("a hot route's handler failed")
                cycle.keep_alive = False
                reply = INTERNAL_ERROR
            self._respond(cycle, reply)

        def _respond(self, cycle: HotCycle, reply: Reply) -> None:
            if cycle.disconnected:
                return
            if self.flow.write_paused:  # the client is not reading: write once it does, as uvicorn's send waits
                task = self.loop.create_task(self._write_drained(cycle, reply))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
            self._write(cycle, reply)

        async def _write_drained(self, cycle: HotCycle, reply: Reply) -> None:
            await self.flow.drain()
            if not cycle.disconnected:
                self._write(cycle, reply)  # encoded now: a shutdown meanwhile adds "connection: close"

        def _write(self, cycle: HotCycle, reply: Reply) -> None:
            try:
                data = encoder.encode(reply, cycle.keep_alive, self.server_state.default_headers)
            except Exception:  # as uvicorn answers an app's exception
                logger.exception("answering a hot route failed")
                cycle.keep_alive = False
                data = encoder.encode(INTERNAL_ERROR, False, self.server_state.default_headers)
            if self.transport.is_closing():
                return
            self.transport.write(data)
            cycle.response_complete = True
            if not cycle.keep_alive:
                self.transport.close()
            self.on_response_complete()

    return HotProtocol
