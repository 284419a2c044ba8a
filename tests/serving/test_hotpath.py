"""The request path's shortcuts: hot routes before Starlette, orjson with the standard library's answers,
request ids without a system call, and the start-up heap frozen out of the garbage collector."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from loopstack.serving import ModelSpec, create_app, heap, jsonio
from loopstack.serving.app import new_request_id


class NanModel:
    """Answers NaN for every row, and takes NaN inputs."""

    n_features_in_ = 2

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), np.nan)


async def _call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b"",
             "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("test", 1)}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _exploding(*args: Any) -> Any:
    raise AssertionError("a hot route went through Starlette's middleware")


def test_hot_routes_skip_starlette_and_everything_else_goes_through_it() -> None:
    app = create_app([ModelSpec(name="m", model=NanModel())])
    server = app.state.server
    row = json.dumps({"instances": [[1.0, 2.0]]}).encode()
    v2 = json.dumps({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}).encode()

    async def main() -> list[tuple[int, bytes]]:
        async with server.lifespan(app):
            app.middleware_stack = _exploding
            answers = [await _call(app, "POST", "/v1/models/m:predict", row),
                       await _call(app, "POST", "/v1/models/a:b:predict", row),
                       await _call(app, "POST", "/v2/models/m/infer", v2),
                       await _call(app, "POST", "/v2/models/m/versions/1/infer", v2),
                       await _call(app, "POST", "/v2/models/m/versions/7/infer", v2)]
            with pytest.raises(AssertionError, match="Starlette"):
                await _call(app, "GET", "/v1/models/m:predict")
            return answers

    predicted, colon, infer, pinned, wrong = asyncio.run(main())
    assert predicted[0] == infer[0] == pinned[0] == 200
    assert colon[0] == 404 and "'a:b'" in json.loads(colon[1])["error"]  # Starlette's {name}: anything but '/'
    assert wrong[0] == 404 and "version '7'" in json.loads(wrong[1])["error"]


def test_non_finite_outputs_and_nan_literals_keep_the_standard_library_behaviour() -> None:
    app = create_app([ModelSpec(name="m", model=NanModel())])

    async def main() -> tuple[int, bytes]:
        async with app.state.server.lifespan(app):
            return await _call(app, "POST", "/v1/models/m:predict", b'{"instances": [[NaN, 1.0]]}')

    status, body = asyncio.run(main())
    assert status == 200 and b"[NaN]" in body  # orjson alone would refuse the request and write null
    assert np.isnan(json.loads(body)["predictions"][0])


def test_jsonio_falls_back_for_what_orjson_refuses() -> None:
    assert jsonio.loads('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert jsonio.loads(b'{"n": 123456789012345678901234567890}')["n"] == float(123456789012345678901234567890)
    with pytest.raises(json.JSONDecodeError, match="property name"):  # the standard library's own error
        jsonio.loads(b"{not json")
    assert jsonio.dumps({"p": [1.5]}, np.array([1.5])) == b'{"p":[1.5]}'
    assert jsonio.dumps({"p": ["yes"]}, np.array(["yes"], dtype=object)) == b'{"p":["yes"]}'


def test_request_ids_are_random_128_bit_hex() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_the_serving_process_settles_its_heap_once_models_are_loaded(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "settle", lambda: calls.append(1))
    embedded = create_app([ModelSpec(name="m", model=NanModel())])
    owned = create_app([ModelSpec(name="m", model=NanModel())])
    owned.state.server.settle_heap = True  # what loopstack.serving.serve sets

    async def start(app: Any) -> bool:
        async with app.state.server.lifespan(app):
            return app.state.server.repo.ready

    assert asyncio.run(start(embedded)) and calls == []
    assert asyncio.run(start(owned)) and calls == [1]


def test_request_tally_exposes_what_prometheus_client_counters_would() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from loopstack.serving.metrics import LATENCY_BUCKETS, ServingMetrics

    metrics, registry = ServingMetrics(lambda: []), CollectorRegistry()
    counter = Counter("loopstack_requests", "Prediction requests by model, version and HTTP status code.",
                      ["model", "version", "code"], registry=registry)
    histogram = Histogram("loopstack_request_duration_seconds", "Time from request received to response ready.",
                          ["model"], buckets=LATENCY_BUCKETS, registry=registry)
    answered = [("m", 200, 0.003), ("m", 200, 0.005), ("m", 400, 0.5), ("n", 503, 12.0), ("m", 200, 0.0005)]
    for model, code, seconds in answered:  # 0.005 and 0.0005 sit exactly on bucket bounds
        metrics.request(model, "1", code, seconds)
        counter.labels(model, "1", str(code)).inc()
        histogram.labels(model).observe(seconds)

    def lines(text: bytes) -> list[str]:
        return [line for line in text.decode().splitlines() if "loopstack_request" in line and "_created" not in line]

    assert lines(generate_latest(metrics.registry)) == lines(generate_latest(registry))
