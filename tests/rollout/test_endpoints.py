"""Deployment endpoints in the real app: routing, logging, live changes, shadows that never hurt."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.core.project import Project
from loopstack.rollout import compare_shadow, read_traffic_log
from loopstack.serving import ServerSettings, create_app, read_prediction_log

from .conftest import Stub, register


@contextmanager
def serving(project: Project, log_dir: Path, models: dict[str, Any]) -> Iterator[tuple[TestClient, Any]]:
    """The app serving the project's deployments, with `models` (ref -> object) standing in for the registry."""
    settings = ServerSettings(log_dir=str(log_dir), log_flush_s=0.05)
    app = create_app([], settings, loader=models.__getitem__, deployments=project.deployments)
    with TestClient(app) as client:
        yield client, app.state.server.endpoints


def ask(client: TestClient, unit: str | None = None, endpoint: str = "api", **extra: Any) -> Any:
    body: dict[str, Any] = {"instances": [[1.0, 2.0, 3.0]], **extra}
    if unit is not None:
        body["unit_id"] = unit
    return client.post(f"/v1/endpoints/{endpoint}:predict", json=body)


def flush(endpoints: Any, client: TestClient) -> None:
    """Write both logs now (mirrored requests first)."""
    client.portal.call(endpoints.settle)
    endpoints.log.flush()
    endpoints.server.log.flush()


@pytest.fixture
def refs(sqlite_project: Project) -> list[str]:
    return register(sqlite_project)


def test_the_traffic_log_records_the_unit_id_the_router_hashed(sqlite_project: Project, refs: list[str],
                                                               tmp_path: Path) -> None:
    """A unit id 2.0 was logged as "2.0" while the split hashed "2": the log and the assignment disagreed."""
    from loopstack.rollout.assignment import unit_key

    sqlite_project.deployments.create("api", refs[0])
    with serving(sqlite_project, tmp_path, {refs[0]: Stub(offset=0, version=1)}) as (client, endpoints):
        for unit in (2.0, True, "u-7", 42):
            assert ask(client, unit).status_code == 200  # type: ignore[arg-type]
        flush(endpoints, client)
    logged = read_traffic_log(tmp_path, "api").column("unit_id").to_pylist()
    assert logged == ["2", "true", "u-7", "42"] == [unit_key(u) for u in (2.0, True, "u-7", 42)]


def test_canary_split_is_sticky_logged_and_follows_changes_without_restart(sqlite_project: Project, refs: list[str],
                                                                            tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    models = {refs[0]: Stub(offset=0, version=1), refs[1]: Stub(offset=100, version=2)}
    with serving(sqlite_project, tmp_path, models) as (client, endpoints):
        r = ask(client, "u1")
        assert r.status_code == 200 and r.json()["predictions"] == [6.0] and r.json()["variant"] == refs[0]
        deployments.canary("api", refs[1], steps=[50, 100])
        client.portal.call(endpoints.sync)  # what the poller does every second
        answers = {u: ask(client, f"user-{u}").json() for u in range(300)}
        canary = [u for u, a in answers.items() if a["variant"] == refs[1]]
        assert 0.35 < len(canary) / 300 < 0.65
        assert all(answers[u]["predictions"] == [106.0] for u in canary)  # the variant really answered
        assert all(ask(client, f"user-{u}").json()["variant"] == refs[1] for u in canary[:20])  # sticky
        assert ask(client, None, user_id="user-1").json()["variant"] == answers[1]["variant"]
        header = client.post("/v1/endpoints/api:predict", json={"instances": [[1, 2, 3]]},
                             headers={"X-Unit-Id": "user-2"})
        assert header.json()["variant"] == answers[2]["variant"]
        listed = client.get("/v1/endpoints").json()["endpoints"][0]
        assert listed["strategy"] == "canary" and listed["weights"] == {refs[0]: 0.5, refs[1]: 0.5}
        flush(endpoints, client)
        # the poller alone picks up a rollback within about a second
        deployments.rollback("api")
        deadline = time.monotonic() + 5
        while ask(client, f"user-{canary[0]}").json()["variant"] != refs[0]:
            assert time.monotonic() < deadline, "the server did not apply the rollback"
            time.sleep(0.1)
        assert ask(client, "nope", endpoint="missing").status_code == 404
    predictions = read_prediction_log(tmp_path, "api")
    variants = predictions.column("variant").to_pylist()
    assert variants.count(refs[1]) >= len(canary) + 20
    traffic = read_traffic_log(tmp_path, "api")
    assert traffic.num_rows >= 320 and all(traffic.column("ok").to_pylist())


def test_concurrent_syncs_load_a_new_variant_once(sqlite_project: Project, refs: list[str], tmp_path: Path) -> None:
    """The poller and an explicit sync racing on one change must not load (and orphan) a second copy."""
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    loads: list[str] = []
    models = {refs[0]: Stub(offset=0, version=1), refs[1]: Stub(offset=100, version=2)}

    def slow_loader(ref: str) -> Any:
        loads.append(ref)
        time.sleep(0.2)  # a model load: long enough for the other sync to arrive meanwhile
        return models[ref]

    settings = ServerSettings(log_dir=str(tmp_path), log_flush_s=0.05)
    app = create_app([], settings, loader=slow_loader, deployments=deployments)
    with TestClient(app) as client:
        endpoints = app.state.server.endpoints
        deployments.canary("api", refs[1], steps=[50, 100])

        async def both() -> Any:
            import asyncio

            return await asyncio.gather(endpoints.sync(), endpoints.sync())

        changed = client.portal.call(both)
        assert sum(c.count("api") for c in changed) <= 1  # the poller may have applied it first: then neither
        assert loads.count(refs[1]) == 1
        assert endpoints.live["api"].batchers[refs[1]] is endpoints._batchers[("api", refs[1], refs[1])]


def test_blue_green_rollback_is_instant_because_the_old_side_stays_loaded(sqlite_project: Project, refs: list[str],
                                                                         tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    models = {refs[0]: Stub(offset=0, version=1), refs[1]: Stub(offset=100, version=2)}
    with serving(sqlite_project, tmp_path, models) as (client, endpoints):
        old = endpoints.live["api"].batchers[refs[0]]
        deployments.blue_green("api", refs[1])
        client.portal.call(endpoints.sync)
        assert {ask(client, f"u{i}").json()["predictions"][0] for i in range(20)} == {106.0}
        assert endpoints.live["api"].batchers[refs[0]] is old  # still loaded, not serving
        deployments.rollback("api")
        started = time.perf_counter()
        client.portal.call(endpoints.sync)
        assert time.perf_counter() - started < 0.5  # no model load on the way back
        assert endpoints.live["api"].batchers[refs[0]] is old
        assert ask(client, "u1").json()["predictions"] == [6.0]


def test_shadow_never_changes_the_answer_and_survives_a_failing_challenger(sqlite_project: Project,
                                                                          refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.shadow("api", refs[1])
    broken = Stub(offset=1, error_rate=0.5, seed=1, version=2)
    models = {refs[0]: Stub(offset=0, version=1), refs[1]: broken}
    with serving(sqlite_project, tmp_path, models) as (client, endpoints):
        answers = [ask(client, f"u{i}", id=f"req-{i}") for i in range(200)]
        flush(endpoints, client)
    assert all(a.status_code == 200 and a.json()["predictions"] == [6.0] for a in answers)
    assert {a.json()["variant"] for a in answers} == {refs[0]}
    assert broken.rows >= 200  # every request was mirrored (batched together under load)
    report = compare_shadow(tmp_path, "api", refs[0], refs[1])
    assert 60 < report.shadow_errors < 140 and report.shadow_error_rate == report.shadow_errors / 200
    assert report.pairs == 200 - report.shadow_errors
    assert report.agreement == 0.0 and report.mean_abs_diff == pytest.approx(1.0)
    assert report.ks_statistic == 1.0  # every output moved by +1


def test_a_slow_shadow_does_not_slow_the_answer(sqlite_project: Project, refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.shadow("api", refs[1])
    models = {refs[0]: Stub(offset=0, version=1), refs[1]: Stub(offset=0, delay_s=0.3, version=2)}
    with serving(sqlite_project, tmp_path, models) as (client, endpoints):
        started = time.perf_counter()
        answers = [ask(client, f"u{i}") for i in range(5)]
        elapsed = time.perf_counter() - started
        flush(endpoints, client)
    assert all(a.status_code == 200 for a in answers)
    assert elapsed < 1.0  # five answers did not wait for five 0.3 s shadow predicts
    report = compare_shadow(tmp_path, "api", refs[0], refs[1])
    assert report.agreement == 1.0 and report.latency_p50_delta_ms > 100


def test_metrics_tell_variants_apart_and_errors_name_their_variant(sqlite_project: Project, tmp_path: Path) -> None:
    """Two variants whose versions share a number (m/1, other/1) are two series; typos add none."""
    from prometheus_client.parser import text_string_to_metric_families

    refs = [*register(sqlite_project, "m", 1), *register(sqlite_project, "other", 1)]
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[50, 100])
    models = {refs[0]: Stub(offset=0, version=1), refs[1]: Stub(offset=100, version=1)}
    with serving(sqlite_project, tmp_path, models) as (client, endpoints):
        client.portal.call(endpoints.sync)
        answers = [ask(client, f"u{i}") for i in range(40)]
        bad = client.post("/v1/endpoints/api:predict", json={"instances": [[1.0]], "unit_id": "u1"})
        for name in ("typo-1", "typo-2"):
            ask(client, "u1", endpoint=name)
        text = client.get("/metrics").text
    assert {a.json()["variant"] for a in answers} == set(refs)
    assert bad.status_code == 400 and bad.headers["x-loopstack-variant"] == answers[1].json()["variant"]
    samples = [(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text)
               for s in f.samples]
    assert len(samples) == len(set(samples))  # no duplicate series
    counted = {dict(labels)["version"] for name, labels in samples if name == "loopstack_batch_size_count"}
    assert counted == set(refs)
    requests = {labels: name for name, labels in samples if name == "loopstack_requests_total"}
    assert (("code", "404"), ("model", ""), ("version", "")) in requests  # both typos, one series
    assert not any(dict(labels)["model"].startswith("typo") for labels in requests)


def test_shadow_outputs_of_different_forms_are_named_not_broadcast(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    # a champion giving two class probabilities and a shadow giving one score were "compared" by broadcasting:
    # agreement and mean_abs_diff came out as numbers that meant nothing
    import pyarrow as pa

    import loopstack.serving

    ids = ["r1", "r2", "r1", "r2"]
    outputs = pa.array([[0.9, 0.1], [0.2, 0.8], [0.1], [0.8]], pa.list_(pa.float64()))
    table = pa.table({"request_id": ids, "row": [0, 0, 0, 0], "variant": ["m/1", "m/1", "m/2", "m/2"],
                      "outputs": pa.StructArray.from_arrays([outputs], ["output"]), "latency_ms": [1.0] * 4})
    monkeypatch.setattr(loopstack.serving, "read_prediction_log", lambda root, endpoint: table)
    with pytest.raises(ValidationError, match=r"'m/1' answered with 2 values per row and 'm/2' with 1"):
        compare_shadow(tmp_path, "api", "m/1", "m/2")


def test_shadow_errors_count_only_the_window_the_pairs_come_from(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    # an earlier shadow of the same variant failed 4 of 5 requests: its failures were counted against this one
    import pyarrow as pa

    import loopstack.serving
    from loopstack.rollout import TrafficLog

    started = time.time() - 10
    earlier, now = started - 3600, started + 5
    failed = {"o2", "o3", "o4", "o5", "r4"}
    requests = [(f"o{i}", earlier) for i in range(1, 6)] + [(f"r{i}", now) for i in range(1, 5)]
    log = TrafficLog(tmp_path, flush_s=3600)
    for rid, at in requests:
        for variant, mirrored in (("m/1", False), ("m/2", True)):
            ok = not (mirrored and rid in failed)
            log.record(request_id=rid, endpoint="api", variant=variant, ref=variant, deployment_version=2,
                       unit_id=None, shadow=mirrored, ok=ok, status=200 if ok else 500, latency_ms=1.0,
                       time=int(at * 1e6))
    log.close()
    answered = [(rid, at, v) for rid, at in requests for v in ("m/1", "m/2") if v == "m/1" or rid not in failed]
    outputs = pa.array([[1.0]] * len(answered), pa.list_(pa.float64()))
    table = pa.table({"request_id": [a[0] for a in answered], "row": [0] * len(answered),
                      "time": pa.array([int(a[1] * 1e6) for a in answered], pa.timestamp("us", tz="UTC")),
                      "variant": [a[2] for a in answered], "latency_ms": [1.0] * len(answered),
                      "outputs": pa.StructArray.from_arrays([outputs], ["output"])})
    monkeypatch.setattr(loopstack.serving, "read_prediction_log", lambda root, endpoint: table)
    whole = compare_shadow(tmp_path, "api", "m/1", "m/2")
    assert (whole.pairs, whole.shadow_errors, whole.shadow_error_rate) == (4, 5, 5 / 9)
    current = compare_shadow(tmp_path, "api", "m/1", "m/2", since=started)
    assert (current.pairs, current.shadow_errors, current.shadow_error_rate) == (3, 1, 1 / 4)


def test_shadow_copies_are_not_counted_as_predictions_served(sqlite_project: Project, refs: list[str],
                                                             tmp_path: Path) -> None:
    """Every mirrored batch counted in loopstack_predictions_total, so a 100 % shadow halved the cost per 1,000."""
    from prometheus_client.parser import text_string_to_metric_families

    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.shadow("api", refs[1])
    models = {refs[0]: Stub(offset=0, version=1), refs[1]: Stub(offset=1, version=2)}
    with serving(sqlite_project, tmp_path, models) as (client, endpoints):
        assert all(ask(client, f"u{i}").status_code == 200 for i in range(30))
        client.portal.call(endpoints.settle)  # every mirrored copy has run
        assert models[refs[1]].rows >= 30
        metrics = client.get("/metrics").text
    served = [sample.value for family in text_string_to_metric_families(metrics)
              for sample in family.samples if sample.name == "loopstack_predictions_total"]
    assert served == [30.0]


def test_a_unit_id_must_be_a_string_or_an_integer_of_valid_text(sqlite_project: Project, refs: list[str],
                                                                tmp_path: Path) -> None:
    """A lone surrogate ("\\ud800") was a 500 from the hash's UTF-16 encoding, and an object was hashed as its
    Python repr: every client sending {"a": [1]} shared one bucket that no other client could reproduce."""
    sqlite_project.deployments.create("api", refs[0])
    with serving(sqlite_project, tmp_path, {refs[0]: Stub(offset=0, version=1)}) as (client, _):
        body = b'{"instances": [[1, 2, 3]], "unit_id": "\\ud800"}'
        surrogate = client.post("/v1/endpoints/api:predict", content=body, headers={"content-type": "application/json"})
        assert surrogate.status_code == 400, surrogate.text
        assert surrogate.json()["error"].startswith("unit_id '\\ud800' is not valid Unicode text")
        for unit in ({"a": [1]}, [1], 1.5):
            refused = ask(client, unit)  # type: ignore[arg-type]
            assert refused.status_code == 400 and "unit_id must be a string or an integer" in refused.json()["error"]
        by_user = ask(client, None, user_id={"a": 1})
        assert by_user.status_code == 400 and by_user.json()["error"].startswith("user_id must be")
        for unit in ("u-é", 7, 2**70):
            assert ask(client, unit).status_code == 200  # type: ignore[arg-type]


def test_variants_are_batched_with_the_servers_variant_batching(sqlite_project: Project, refs: list[str],
                                                                  tmp_path: Path) -> None:
    """Every variant was served with ModelSpec's defaults, whatever the server was started with."""
    sqlite_project.deployments.create("api", refs[0])
    settings = ServerSettings(log_dir=None, variant_batching={"max_queue": 2, "inline_ms": 0})
    app = create_app([], settings, loader={refs[0]: Stub(offset=0, version=1)}.__getitem__,
                     deployments=sqlite_project.deployments)
    with TestClient(app) as client:
        assert ask(client, "u1").status_code == 200
        refused = client.post("/v1/endpoints/api:predict", json={"instances": [[1.0, 2.0, 3.0]] * 3})
        (batcher,) = app.state.server.endpoints.live["api"].batchers.values()
    assert refused.status_code == 400 and "queues at most 2" in refused.json()["error"]
    assert (batcher.spec.max_queue, batcher.spec.inline_ms, batcher.spec.max_batch_size) == (2, 0, 64)


@pytest.mark.parametrize(("batching", "message"), [
    ({"max_queue": 0}, "max_queue=0 for deployment variants must be a positive number"),
    ({"max_batch": 8}, "['max_batch'] are not batching settings"),
])
def test_variant_batching_is_checked_when_the_server_is_configured(batching: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ServerSettings(variant_batching=batching)
