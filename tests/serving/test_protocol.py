"""The hot routes answered by uvicorn's HTTP protocol itself: the HTTP/1.1 that clients rely on still holds
(keep-alive, pipelining, Connection: close, HTTP/1.0, chunked bodies, Expect: 100-continue), over real sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.serving.conftest import SlowModel, running

from loopstack.serving import ModelSpec, create_app
from loopstack.serving.fastpath import Reply
from loopstack.serving.protocol import Encoder, hot_protocol

ROW = json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode()


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with running(create_app([ModelSpec(name="m", model=SlowModel(delay_s=0.0))])) as address:
        yield address


def _post(path: str, body: bytes, headers: str = "", version: str = "1.1") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n").encode() + body


@contextmanager
def _connect(address: str) -> Iterator[socket.socket]:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        yield sock


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` whole HTTP answers read off `sock` (each with a content-length)."""
    buffer, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(answers)} answers; left {buffer!r}")
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        size = int(headers["content-length"])
        while len(buffer) < size:
            buffer += sock.recv(65536)
        answers.append((int(status_line.split()[1]), headers, buffer[:size]))
        buffer = buffer[size:]
    return answers


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_serves_many_requests_on_one_connection(address: str) -> None:
    with _connect(address) as sock:
        for i in range(20):
            sock.sendall(_post("/v1/models/m:predict", json.dumps({"instances": [[i, 1.0, 1.0]]}).encode()))
            status, headers, body = _read_answers(sock, 1)[0]
            assert status == 200
            assert json.loads(body)["predictions"] == [i + 2.0]
            assert headers["server"] == "uvicorn" and "date" in headers  # uvicorn's default headers, as before
            assert "connection" not in headers


def test_pipelined_requests_are_answered_in_order_hot_and_not(address: str) -> None:
    """A hot request, a Starlette route and another hot request in one write: three answers, in order."""
    with _connect(address) as sock:
        sock.sendall(_post("/v1/models/m:predict", json.dumps({"instances": [[1.0, 0, 0]]}).encode())
                     + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
                     + _post("/v1/models/m:predict", json.dumps({"instances": [[5.0, 0, 0]]}).encode()))
        answers = _read_answers(sock, 3)
    assert [a[0] for a in answers] == [200, 200, 200]
    assert json.loads(answers[0][2])["predictions"] == [1.0]
    assert json.loads(answers[1][2]) == {"live": True}
    assert json.loads(answers[2][2])["predictions"] == [5.0]


def test_connection_close_and_http_1_0_close_after_the_answer(address: str) -> None:
    for request in (_post("/v1/models/m:predict", ROW, "Connection: close\r\n"),
                    _post("/v1/models/m:predict", ROW, version="1.0")):
        with _connect(address) as sock:
            sock.sendall(request)
            status, headers, body = _read_answers(sock, 1)[0]
            assert status == 200 and json.loads(body)["predictions"] == [6.0]
            assert headers["connection"] == "close"
            assert _closed(sock)


def test_chunked_and_large_bodies_reach_the_handler_whole(address: str) -> None:
    rows = np.random.default_rng(0).normal(size=(1500, 3))
    body = json.dumps({"instances": rows.tolist()}).encode()
    assert len(body) > 65536  # past uvicorn's flow-control high-water mark
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7000]), body[i:i + 7000]) for i in range(0, len(body), 7000))
    with _connect(address) as sock:
        sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunks + b"0\r\n\r\n")
        sock.sendall(_post("/v1/models/m:predict", body))
        answers = _read_answers(sock, 2)
    for status, _, answer in answers:
        assert status == 200
        np.testing.assert_allclose(json.loads(answer)["predictions"], rows.sum(axis=1))


def test_expect_100_continue_gets_its_interim_answer(address: str) -> None:
    with _connect(address) as sock:
        sock.sendall(_post("/v1/models/m:predict", b"", "Expect: 100-continue\r\n").replace(
            b"Content-Length: 0", f"Content-Length: {len(ROW)}".encode()))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(ROW)
        status, _, body = _read_answers(sock, 1)[0]
    assert status == 200 and json.loads(body)["predictions"] == [6.0]


def test_errors_keep_their_status_headers_and_the_connection(address: str) -> None:
    with _connect(address) as sock:
        sock.sendall(_post("/v1/models/nope:predict", ROW) + _post("/v1/models/m:predict", b"{not json")
                     + _post("/v1/models/m:predict", json.dumps({"id": "a\nb", "instances": [[1, 2, 3]]}).encode())
                     + _post("/v1/models/m:predict", ROW, "X-Request-Id: mine\r\n")
                     + _post("/v1/models/m:predict", json.dumps({"id": "café", "instances": [[1, 2, 3]]}).encode()))
        answers = _read_answers(sock, 5)
    assert [a[0] for a in answers] == [404, 400, 400, 200, 400]
    assert "request id 'a\\nb'" in json.loads(answers[2][2])["error"]
    assert answers[3][1]["x-request-id"] == "mine"
    # echoed as a Latin-1 header that httpx and requests could not decode; now refused with the reason
    assert "request id 'café' cannot go in an HTTP header: send printable ASCII" in json.loads(answers[4][2])["error"]


def test_a_client_that_leaves_before_its_answer_does_not_disturb_the_others() -> None:
    app = create_app([ModelSpec(name="slow", model=SlowModel(delay_s=0.3))])
    with running(app) as address:
        with _connect(address) as leaving:
            leaving.sendall(_post("/v1/models/slow:predict", ROW))
            time.sleep(0.05)
        with _connect(address) as sock:
            sock.sendall(_post("/v1/models/slow:predict", ROW))
            status, _, body = _read_answers(sock, 1)[0]
        assert status == 200 and json.loads(body)["predictions"] == [6.0]
        assert app.state.server.repo.get("slow").in_flight == 0


def test_an_answer_given_at_once_does_not_leave_the_keep_alive_timer_on_the_next_request() -> None:
    """A 404 written inside the parser's callback arms the keep-alive timer; a slower request pipelined in the
    same packet must still get its answer (it was cut off when the timer fired)."""
    app = create_app([ModelSpec(name="slow", model=SlowModel(delay_s=1.5))])
    with running(app, timeout_keep_alive=1) as address, _connect(address) as sock:
        sock.sendall(_post("/v1/models/nope:predict", ROW) + _post("/v1/models/slow:predict", ROW))
        answers = _read_answers(sock, 2)
    assert [a[0] for a in answers] == [404, 200]


@pytest.mark.parametrize("route", ["/v1/models/slow:predict", "/v2/health/ready"])
def test_keep_alive_closes_an_idle_connection_and_keeps_an_active_one(route: str) -> None:
    """The keep-alive timer is armed once per idle spell and checks when it fires, instead of being armed and
    cancelled on every request: an idle connection must still close after the timeout, on the hot routes and
    uvicorn's own, and one that keeps asking must not."""
    app = create_app([ModelSpec(name="slow", model=SlowModel(delay_s=0.0))])
    request = _post(route, ROW) if "predict" in route else b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
    with running(app, timeout_keep_alive=1) as address, _connect(address) as active, _connect(address) as idle:
        idle.sendall(request)
        assert _read_answers(idle, 1)[0][0] == 200
        started = time.monotonic()
        for _ in range(8):  # 2.4 s of requests 0.3 s apart: longer than the timeout, never idle for it
            active.sendall(request)
            assert _read_answers(active, 1)[0][0] == 200
            time.sleep(0.3)
        assert _closed(idle) and time.monotonic() - started < 5  # closed by the timer, not by the test
        active.sendall(request)
        assert _read_answers(active, 1)[0][0] == 200


class _Transport(asyncio.Transport):
    """A transport that keeps what is written (the protocol reads no socket from it)."""

    def __init__(self) -> None:
        super().__init__()
        self.written, self.closed = b"", False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_an_answer_waiting_for_a_slow_reader_says_close_when_a_shutdown_began_meanwhile() -> None:
    """A client not reading pauses the writes; a shutdown begins while an answer waits: written once the client
    reads, the answer must carry "connection: close", since the connection closes after it."""
    from uvicorn.server import ServerState

    from loopstack.serving.fastpath import Endpoint
    from loopstack.serving.protocol import HotCycle
    from loopstack.serving.server import uvicorn_config

    config = uvicorn_config(create_app([ModelSpec(name="m", model=SlowModel(delay_s=0.0))]))
    config.load()

    async def main() -> _Transport:
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.cycle = cycle = HotCycle(Endpoint(None), {}, {}, keep_alive=True)  # type: ignore[arg-type]
        protocol.pause_writing()  # the client stopped reading
        protocol._respond(cycle, Reply(200, b"{}"))
        await asyncio.sleep(0.01)
        assert transport.written == b""  # held back until the client reads
        protocol.shutdown()  # SIGTERM: uvicorn asks every connection to close after its answer
        protocol.resume_writing()
        await asyncio.sleep(0.01)
        return transport

    transport = asyncio.run(main())
    head = transport.written.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in head and transport.closed


def test_the_protocol_answers_hot_routes_without_the_asgi_app(address: str, monkeypatch) -> None:
    """The point of the protocol: no RequestResponseCycle for a hot route; one for anything else."""
    from uvicorn.protocols.http import httptools_impl

    cycles: list[Any] = []
    original = httptools_impl.RequestResponseCycle

    def counting(*args: Any, **kwargs: Any) -> Any:
        cycles.append(kwargs["scope"]["path"])
        return original(*args, **kwargs)

    monkeypatch.setattr(httptools_impl, "RequestResponseCycle", counting)
    v2 = json.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})
    with _connect(address) as sock:
        health = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
        for request in (_post("/v1/models/m:predict", ROW), _post("/v2/models/m/infer", v2.encode()),
                        _post("/v1/models/m:predict?debug=1", ROW), health):
            sock.sendall(request)
            assert _read_answers(sock, 1)[0][0] == 200
    assert cycles == ["/v1/models/m:predict", "/v2/health/ready"]  # a query string takes uvicorn's own path


def test_encoder_refuses_a_header_that_would_split_the_answer() -> None:
    encoder = Encoder()
    data = encoder.encode(Reply(404, b"{}", headers={"x-request-id": "r1"}), False, [(b"server", b"uvicorn")])
    assert data == (b"HTTP/1.1 404 Not Found\r\nserver: uvicorn\r\ncontent-type: application/json\r\n"
                    b"content-length: 2\r\nx-request-id: r1\r\nconnection: close\r\n\r\n{}")
    with pytest.raises(ValueError, match="control character"):
        encoder.encode(Reply(200, b"{}", headers={"x-request-id": "a\r\nset-cookie: x"}), True, [])


def test_an_app_without_hot_routes_gets_uvicorns_own_protocol() -> None:
    assert hot_protocol(object()) == "auto"


def test_a_failing_metrics_update_still_answers_the_request(monkeypatch) -> None:
    app = create_app([ModelSpec(name="m", model=SlowModel(delay_s=0.0))])

    def broken(*args: Any) -> None:
        raise RuntimeError("metrics backend gone")

    monkeypatch.setattr(app.state.server.metrics, "request", broken)
    with running(app) as address, _connect(address) as sock:
        sock.sendall(_post("/v1/models/m:predict", ROW) + _post("/v1/models/nope:predict", ROW))
        answers = _read_answers(sock, 2)
    assert [a[0] for a in answers] == [200, 404]


def _request(kind: str, i: int) -> tuple[bytes, int, float | None]:
    """A request of `kind` for row ``[i, 1, 1]``: its bytes, the status it must get and the prediction."""
    body = json.dumps({"instances": [[i, 1.0, 1.0]]}).encode()
    if kind == "hot":
        return _post("/v1/models/m:predict", body), 200, i + 2.0
    if kind == "chunked":
        return (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)), 200, i + 2.0
    if kind == "query":  # uvicorn's own path
        return _post("/v1/models/m:predict?x=1", body), 200, i + 2.0
    if kind == "unknown":  # answered inside the parser's callback
        return _post("/v1/models/nope:predict", body), 404, None
    if kind == "bad-json":
        return _post("/v1/models/m:predict", b"{x"), 400, None
    return b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n", 200, None


@settings(max_examples=25, deadline=None)
@given(kinds=st.lists(st.sampled_from(["hot", "chunked", "query", "unknown", "bad-json", "health"]), min_size=1,
                      max_size=8),
       cuts=st.lists(st.floats(0, 1), max_size=4))
def test_every_pipelined_request_gets_one_answer_in_order_however_the_bytes_arrive(address: str, kinds: list[str],
                                                                                   cuts: list[float]) -> None:
    requests = [_request(kind, i) for i, kind in enumerate(kinds)]
    blob = b"".join(raw for raw, _, _ in requests)
    offsets = sorted({0, len(blob), *(int(c * len(blob)) for c in cuts)})
    with _connect(address) as sock:
        for start, end in itertools.pairwise(offsets):
            sock.sendall(blob[start:end])
            time.sleep(0.001)
        answers = _read_answers(sock, len(requests))
    assert [status for status, _, _ in answers] == [status for _, status, _ in requests]
    for (_, _, body), (_, _, prediction) in zip(answers, requests, strict=True):
        if prediction is not None:
            assert json.loads(body)["predictions"] == [prediction]


def test_a_coroutine_handler_that_raises_gets_uvicorns_500_and_a_closed_connection() -> None:
    from loopstack.serving.fastpath import Call, Endpoint

    async def broken(call: Call) -> Reply:
        raise RuntimeError("a bug")

    app = create_app([ModelSpec(name="m", model=SlowModel(delay_s=0.0))])
    app.state.server.hot.infer = Endpoint(broken)  # no callback form: the protocol runs it in a task
    with running(app) as address, _connect(address) as sock:
        sock.sendall(_post("/v2/models/m/infer", b"{}"))
        status, headers, body = _read_answers(sock, 1)[0]
        assert (status, body, headers["connection"]) == (500, b"Internal Server Error", "close")
        assert _closed(sock)


def test_a_request_id_that_is_not_a_string_is_refused(address: str) -> None:
    """It was replaced by a random id, so feedback sent under the number the client chose never joined."""
    with _connect(address) as sock:
        sock.sendall(_post("/v1/models/m:predict", json.dumps({"id": 5, "instances": [[1, 2, 3]]}).encode())
                     + _post("/v2/models/m/infer", json.dumps({"id": 5.5, "inputs": [
                         {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}).encode())
                     + _post("/v1/models/m:predict", json.dumps({"id": "", "instances": [[1, 2, 3]]}).encode()))
        answers = _read_answers(sock, 3)
    assert [a[0] for a in answers] == [400, 400, 200]
    assert 'the request id 5 must be a string (send "id": "5")' in json.loads(answers[0][2])["error"]
    assert "the request id 5.5 must be a string" in json.loads(answers[1][2])["error"]
