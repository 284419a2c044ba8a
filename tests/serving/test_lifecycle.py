"""Backpressure, deadlines, hot swaps under load, SIGTERM drain, and models from the registry."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx2 as httpx
import numpy as np
import pytest
from tests.serving.conftest import SlowModel, running

import loopstack as ls
from loopstack.serving import ModelSpec, ServerSettings, create_app, read_prediction_log

ROW = {"instances": [[1.0, 2.0, 3.0]]}


async def _burst(address: str, count: int, path: str = "/v1/models/slow:predict") -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client:
        return await asyncio.gather(*(client.post(path, json=ROW) for _ in range(count)))


def test_full_queue_is_503_with_retry_after() -> None:
    app = create_app([ModelSpec(name="slow", model=SlowModel(0.3), max_batch_size=1, max_queue=2)],
                     ServerSettings(retry_after_s=3))
    with running(app) as address:
        responses = asyncio.run(_burst(address, 10))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and codes.count(503) >= 5 and set(codes) <= {200, 503}
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "3" and "queue is full" in refused.json()["error"]


def test_request_past_its_deadline_is_504() -> None:
    app = create_app([ModelSpec(name="slow", model=SlowModel(0.5), timeout_s=0.1)])
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        response = client.post("/v1/models/slow:predict", json=ROW)
    assert response.status_code == 504 and "timeout_s" in response.json()["error"]


def test_hot_swap_under_load_fails_no_request(tmp_path: Path) -> None:
    old, new = SlowModel(0.02, offset=0.0, version=1), SlowModel(0.02, offset=100.0, version=2)
    app = create_app([ModelSpec(name="slow", model=old, max_batch_size=4)],
                     ServerSettings(log_dir=str(tmp_path), log_flush_s=0.1))
    server = app.state.server
    with running(app) as address:
        async def scenario() -> tuple[list[httpx.Response], str]:
            load = asyncio.ensure_future(_burst(address, 120))
            deadline = time.monotonic() + 20
            while server.repo.get("slow").in_flight < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # until requests are queued and in flight on version 1
            swap = asyncio.run_coroutine_threadsafe(server.repo.swap("slow", model=new), server.loop)
            swapped = await asyncio.wrap_future(swap)
            return await load, swapped.adapter.version

        responses, version = asyncio.run(scenario())
        after = httpx.post(f"http://{address}/v1/models/slow:predict", json=ROW).json()
    assert version == "2"
    assert [r.status_code for r in responses] == [200] * 120
    versions = {r.json()["version"]: r.json()["predictions"][0] for r in responses}
    assert versions == {"1": 6.0, "2": 106.0}  # each request ran whole on one version
    assert after["version"] == "2" and after["predictions"] == [106.0]
    logged = read_prediction_log(tmp_path, model="slow").to_pandas()
    assert len(logged) == 121 and set(logged.version) == {"1", "2"}


class _PausedFeatureStore:
    """An online store whose read waits for the test: a swap lands while a request is reading."""

    def __init__(self) -> None:
        self.reading, self.go_on = threading.Event(), threading.Event()

    def get_online_features(self, refs, entities, log=None):
        self.reading.set()
        self.go_on.wait(10)
        n = len(entities)
        return SimpleNamespace(entities={}, values={"x0": [1.0] * n, "x1": [2.0] * n, "x2": [3.0] * n})


def test_a_hot_swap_during_an_entity_requests_feature_read_fails_no_request() -> None:
    """The batcher was chosen before the read: the swap closed it meanwhile, and the request got a 503."""
    store = _PausedFeatureStore()
    spec = ModelSpec(name="slow", model=SlowModel(0.0), features=("v:x0", "v:x1", "v:x2"))
    app = create_app([spec], feature_store=store)
    server = app.state.server
    with running(app) as address, httpx.Client(base_url=f"http://{address}", timeout=10) as client:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, "/v1/models/slow:predict", json={"entities": [{"id": 1}]})
            assert store.reading.wait(10)
            swap = asyncio.run_coroutine_threadsafe(
                server.repo.swap("slow", model=SlowModel(0.0, offset=100.0, version=2)), server.loop
            )
            assert swap.result(5).adapter.version == "2"
            store.go_on.set()
            during = pending.result(10)
        after = client.post("/v1/models/slow:predict", json={"entities": [{"id": 1}]})
    assert during.status_code == 200, during.text
    assert during.json()["predictions"] == [6.0] and during.json()["version"] == "1"
    assert after.json()["predictions"] == [106.0] and after.json()["version"] == "2"


def _wait_ready(address: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://{address}/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.fixture
def registered(sqlite_project, data):
    from sklearn.linear_model import LogisticRegression

    X, y = data
    versions = []
    for c in (1.0, 0.01):
        model = LogisticRegression(C=c).fit(X, y)
        with ls.start_run(project=sqlite_project) as run:
            run.log_model(model, "model", example=X[:5])
        ls.register_model(run.id, "model", name="m", alias="champion", project=sqlite_project)
        versions.append(model)
    ls.set_alias("m", "champion", 1, project=sqlite_project)
    return sqlite_project, versions


def test_serves_registry_models_and_follows_a_moved_alias(registered, data) -> None:
    project, (first, second) = registered
    X, _ = data
    app = create_app(
        [ModelSpec.parse("m@champion"), ModelSpec.parse("pinned=m/2")],
        ServerSettings(refresh_s=0.1),
        loader=lambda ref: ls.load_model(ref, project=project),
        resolver=lambda ref: str(ls.get_model_version(ref, project=project).version)
        if hasattr(ls, "get_model_version") else str(project.registry.get_model_version(ref).version),
    )
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        body = {"instances": X[:3].tolist()}
        before = client.post("/v1/models/m:predict", json=body).json()
        pinned = client.post("/v1/models/pinned:predict", json=body).json()
        bad = client.post("/v1/models/m:predict", json={"instances": [[1.0] * 3]})
        ls.set_alias("m", "champion", 2, project=project)
        deadline = time.monotonic() + 15
        after = before
        while after["version"] == "1" and time.monotonic() < deadline:
            time.sleep(0.05)
            after = client.post("/v1/models/m:predict", json=body).json()
    assert before["version"] == "1" and pinned["version"] == "2" and after["version"] == "2"
    np.testing.assert_allclose(before["predictions"], first.predict_proba(X[:3]))
    np.testing.assert_allclose(after["predictions"], second.predict_proba(X[:3]))
    assert bad.status_code == 400 and "20 values" in bad.json()["error"]


def _slow_sum(x: np.ndarray) -> np.ndarray:
    """A registered model that takes 0.4 s per batch: long enough to catch requests in flight."""
    import time

    time.sleep(0.4)
    return x.sum(axis=1)


def _register_slow(project: ls.Project, alias: str | None = None) -> None:
    with ls.start_run(project=project) as run:
        run.log_model(_slow_sum, "model", example=np.ones((2, 3)))
    ls.register_model(run.id, "model", name="slow", alias=alias, project=project)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _in_flight(address: str, model: str, count: int, version: str = "1", timeout: float = 20) -> None:
    """Wait until /metrics shows `count` requests of `model` in flight."""
    line = f'loopstack_in_flight_requests{{model="{model}",version="{version}"}} {float(count)}'
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        while time.monotonic() < deadline:
            if line in (await client.get("/metrics")).text:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"never saw {line}")


def test_cli_serve_drains_in_flight_requests_on_sigterm(sqlite_project, tmp_path: Path) -> None:
    _register_slow(sqlite_project, alias="champion")
    port = _free_port()
    code = "from loopstack.serving.cli import serve; serve()"
    args = ["slow@champion", "--port", str(port), "--refresh", "0", "--max-batch-size", "2"]
    env = {**os.environ, "LOOPSTACK_PROJECT": str(sqlite_project.root)}
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(f"127.0.0.1:{port}", process)

        async def scenario() -> list[httpx.Response]:
            load = asyncio.ensure_future(_burst(f"127.0.0.1:{port}", 6))
            await _in_flight(f"127.0.0.1:{port}", "slow", 6)  # every request is queued or running
            process.send_signal(signal.SIGTERM)
            return await load

        responses = asyncio.run(scenario())
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after draining
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["predictions"] for r in responses] == [[6.0]] * 6
    assert read_prediction_log(sqlite_project.root / ".loopstack" / "logs").num_rows == 6  # flushed on exit


def test_cli_deploy_serve_counts_endpoint_requests_and_drains_on_sigterm(sqlite_project, tmp_path: Path) -> None:
    """`loopstack deploy serve` is the same server as `loopstack serve`: metrics per endpoint, a drained exit."""
    from prometheus_client.parser import text_string_to_metric_families

    _register_slow(sqlite_project)
    sqlite_project.deployments.create("api", "slow/1")
    port = _free_port()
    code = "import sys; from loopstack.cli import main; sys.argv = ['loopstack', *sys.argv[1:]]; main()"
    args = ["-p", str(sqlite_project.root), "deploy", "serve", "--port", str(port)]
    process = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    path = "/v1/endpoints/api:predict"

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response], str, list[httpx.Response]]:
        load = asyncio.ensure_future(_burst(address, 6, path))
        await _in_flight(address, "api", 6, version="slow/1")  # the endpoint's variant reports its requests
        answered = await load
        unknown = await _burst(address, 2, "/v1/endpoints/nope:predict")
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            metrics = (await client.get("/metrics")).text
        load = asyncio.ensure_future(_burst(address, 3, path))
        await _in_flight(address, "api", 3, version="slow/1")
        process.send_signal(signal.SIGTERM)
        return answered, unknown, metrics, await load

    try:
        _wait_ready(address, process)
        answered, unknown, metrics, drained = asyncio.run(scenario())
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after draining
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [r.json()["predictions"] for r in answered] == [[6.0]] * 6
    assert [r.status_code for r in unknown] == [404, 404]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    assert samples[("loopstack_requests_total", (("code", "200"), ("model", "api"), ("version", "slow/1")))] == 6
    assert samples[("loopstack_requests_total", (("code", "404"), ("model", ""), ("version", "")))] == 2
    assert [r.status_code for r in drained] == [200] * 3  # accepted before SIGTERM, answered before the exit
    assert read_prediction_log(sqlite_project.root / ".loopstack" / "logs", "api").num_rows == 9  # flushed on exit


class _Stuck:
    """Never returns from predict until released: a model hung in native code."""

    n_features_in_ = 3

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()

    def predict(self, X):  # type: ignore[no-untyped-def]
        self.release.wait()
        return np.zeros(len(X))


def test_a_stuck_model_neither_holds_up_exit_nor_the_log_of_what_was_answered(tmp_path: Path, monkeypatch) -> None:
    """Shutdown waited for the predict pool, so a model that never returned kept the process alive until
    SIGKILL; and the log was written only after the drain, so that SIGKILL lost what had been answered."""
    from loopstack.serving.repository import ModelRepository

    stuck = _Stuck()
    on_disk_when_drain_began: list[int] = []
    drain = ModelRepository.drain

    async def short_drain(self, timeout_s=None):  # type: ignore[no-untyped-def]
        try:
            on_disk_when_drain_began.append(read_prediction_log(tmp_path).num_rows)
        except ls.ValidationError:  # no segment yet
            on_disk_when_drain_began.append(0)
        return await drain(self, 0.3)  # instead of the model's 30 s

    monkeypatch.setattr(ModelRepository, "drain", short_drain)
    specs = [ModelSpec(name="slow", model=SlowModel(0.0)), ModelSpec(name="stuck", model=stuck, timeout_s=0.5)]
    app = create_app(specs, ServerSettings(log_dir=str(tmp_path)))
    try:
        with running(app) as address:
            assert [r.status_code for r in asyncio.run(_burst(address, 3))] == [200] * 3
            assert asyncio.run(_burst(address, 1, "/v1/models/stuck:predict"))[0].status_code == 504
            started = time.monotonic()
        assert time.monotonic() - started < 10  # was: the server thread still waiting after running()'s 30 s
        assert on_disk_when_drain_began == [3]
    finally:
        stuck.release.set()


def test_a_stuck_endpoint_variant_neither_holds_up_exit_nor_the_log_of_what_was_answered(
        sqlite_project, tmp_path: Path, monkeypatch) -> None:
    """The endpoints' pool was waited for, and before the prediction log was flushed: a variant that never
    returned kept the process alive until SIGKILL, which lost the plain models' answered predictions."""
    from loopstack.serving.batcher import Batcher

    with ls.start_run(project=sqlite_project) as run:
        run.log_model(SlowModel(0.0), "model", example=np.zeros((1, 3)))
    ls.register_model(run.id, "model", name="m", project=sqlite_project)
    sqlite_project.deployments.create("api", "m/1")
    stuck = _Stuck()
    threading.Timer(15, stuck.release.set).start()  # so that a regression fails the test instead of hanging it
    on_disk_when_drain_began: list[int] = []
    drain = Batcher.drain

    async def short_drain(self, timeout_s=None):  # type: ignore[no-untyped-def]
        if not on_disk_when_drain_began:
            try:
                on_disk_when_drain_began.append(read_prediction_log(tmp_path / "log").num_rows)
            except ls.ValidationError:  # no segment yet
                on_disk_when_drain_began.append(0)
        return await drain(self, 0.3)

    monkeypatch.setattr(Batcher, "drain", short_drain)
    app = create_app([ModelSpec(name="slow", model=SlowModel(0.0))],
                     ServerSettings(log_dir=str(tmp_path / "log"), log_flush_s=60),
                     loader=lambda ref: stuck, deployments=sqlite_project.deployments)
    try:
        with running(app, timeout_graceful_shutdown=1) as address:  # as `serve` passes its drain_timeout_s
            assert [r.status_code for r in asyncio.run(_burst(address, 2))] == [200] * 2
            endpoint = threading.Thread(target=lambda: asyncio.run(_burst(address, 1, "/v1/endpoints/api:predict")))
            endpoint.start()
            time.sleep(0.3)
            started = time.monotonic()
        assert time.monotonic() - started < 10  # was: until the stuck predict returned
        assert on_disk_when_drain_began == [2]  # was: nothing, until the endpoints had stopped
    finally:
        stuck.release.set()
        endpoint.join()
