"""The native JSON API on a real server: predictions, 4xx that name the field, log, feedback, metrics."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx2 as httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.conftest import running

import loopstack as ls
from loopstack.serving import ModelSpec, ServerSettings, create_app, read_feedback, read_prediction_log


@pytest.fixture(scope="module")
def shared(clf) -> Iterator[httpx.Client]:
    """One server for the read-only checks of this module."""
    with running(create_app([ModelSpec(name="m", model=clf)])) as address, \
            httpx.Client(base_url=f"http://{address}") as client:
        yield client


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_native_predict_matches_the_model_and_logs_every_row(clf, data, tmp_path: Path) -> None:
    X, _ = data
    app = create_app([ModelSpec(name="fraud", model=clf)], ServerSettings(log_dir=str(tmp_path), log_flush_s=0.1))
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        rows = client.post("/v1/models/fraud:predict", json={"instances": X[:3].tolist(), "id": "req-1"})
        named = {f"x{j}": X[3:5, j].tolist() for j in range(20)}
        cols = client.post("/v1/models/fraud:predict", json={"inputs": named})
        dicts = client.post("/v1/models/fraud:predict",
                            json={"instances": [{f"x{j}": X[5, j] for j in range(20)}]})
        fed = client.post("/v1/feedback", json=[{"request_id": "req-1", "label": 1}, {"request_id": "x", "label": 0}])
    assert rows.status_code == cols.status_code == dicts.status_code == 200
    body = rows.json()
    assert body["request_id"] == "req-1" and body["model"] == "fraud" and body["version"] == "1"
    np.testing.assert_allclose(body["predictions"], clf.predict_proba(X[:3]))
    np.testing.assert_allclose(cols.json()["predictions"], clf.predict_proba(X[3:5]))
    np.testing.assert_allclose(dicts.json()["predictions"], clf.predict_proba(X[5:6]))
    assert fed.status_code == 202 and fed.json() == {"accepted": 2}

    log = read_prediction_log(tmp_path, model="fraud")  # the server's shutdown flushed it
    assert log.num_rows == 6
    frame = log.flatten().to_pandas().sort_values(["time", "request_id", "row"])
    first = frame[frame.request_id == "req-1"]
    assert list(first.row) == [0, 1, 2]
    np.testing.assert_allclose(first[[f"inputs.x{j}" for j in range(20)]].to_numpy(), X[:3])
    np.testing.assert_allclose(np.stack(first["outputs.predict_proba"]), clf.predict_proba(X[:3]))
    assert (frame.latency_ms > 0).all() and set(frame.version) == {"1"}
    feedback = read_feedback(tmp_path).to_pandas()
    assert sorted(feedback.request_id) == ["req-1", "x"]
    joined = frame.merge(feedback[["request_id", "label_value"]], on="request_id")
    assert list(joined.label_value) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("payload", "status", "needle"), [
    ({"instances": [[1.0] * 19]}, 400, "rows of 20 values"),
    ({"instances": [[1.0] * 19 + ["a"]]}, 400, "field 'x19' must be a number"),
    ({"instances": [{f"x{j}": 1.0 for j in range(19)}]}, 400, "lacks field 'x19'"),
    ({"inputs": {"x0": [1.0]}}, 400, "lacks field 'x1'"),
    ({"inputs": {**{f"x{j}": [1.0] for j in range(20)}, "bogus": [1]}}, 400, "unknown field 'bogus'"),
    ({"inputs": {**{f"x{j}": [1.0] for j in range(20)}, "x3": [1.0, 2.0]}}, 400, "different lengths"),
    ({"instances": []}, 400, "non-empty list"),
    ({"rows": [[1.0] * 20]}, 400, "'instances'"),
    ({"entities": [{"user_id": 3}]}, 400, "takes no entity keys"),
    ([1, 2], 400, "JSON object"),
    ({"instances": [[1.0] * 19 + [10**400]]}, 400, "field 'x19' is too large"),
    ({"inputs": {**{f"x{j}": [1.0] for j in range(20)}, "x4": [10**400]}}, 400, "inputs.x4 holds a number too large"),
    ({"instances": [[1.0] * 19 + ["1.5"]]}, 400, "field 'x19' must be a number, got '1.5'"),
    ({"instances": [[1.0] * 19 + [None], [1.0] * 19 + ["2"]]}, 400, "instances[1] field 'x19' must be a number"),
    ({"inputs": {f"x{j}": [] for j in range(20)}}, 400, "hold no rows"),
    ({"inputs": {**{f"x{j}": [1.0, 2.0] for j in range(20)}, "x2": [1.0, [2.0]]}}, 400, "inputs.x2 must be a flat"),
])
def test_bad_requests_get_4xx_naming_the_field(shared, payload, status: int, needle: str) -> None:
    response = shared.post("/v1/models/m:predict", json=payload)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]
    assert shared.post("/v1/models/m:predict", json={"instances": [[0.0] * 20]}).status_code == 200


def test_garbage_and_unknown_models(shared) -> None:
    garbage = shared.post("/v1/models/m:predict", content=b"{not json")
    deep = shared.post("/v1/models/m:predict", content=b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
    missing = shared.post("/v1/models/nope:predict", json={"instances": [[0.0] * 20]})
    listed = shared.get("/v1/models").json()
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]
    assert missing.status_code == 404 and "served models: ['m']" in missing.json()["error"]
    assert listed["models"][0]["name"] == "m" and len(listed["models"][0]["inputs"]) == 20


def test_feedback_is_checked(clf, tmp_path: Path) -> None:
    app = create_app([ModelSpec(name="m", model=clf)], ServerSettings(log_dir=str(tmp_path)))
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        no_id = client.post("/v1/feedback", json={"label": 1})
        no_label = client.post("/v1/feedback", json={"request_id": "r"})
        not_finite = client.post("/v1/feedback", content=b'[{"request_id": "ok", "label": 1}, '
                                                            b'{"request_id": "r", "label": NaN}]')
    assert no_id.status_code == 400 and "request_id" in no_id.json()["error"]
    assert no_label.status_code == 400 and "'label'" in no_label.json()["error"]
    assert not_finite.status_code == 400 and "feedback[1] label nan" in not_finite.json()["error"]
    assert read_feedback(tmp_path).num_rows == 0  # nothing of a refused batch is kept


def test_feedback_refuses_what_the_log_cannot_store(clf, tmp_path: Path) -> None:
    """A non-string 'model' was accepted (202) and then failed the writer, losing every feedback row queued with it;
    a whole-number label too large for a float was a 500."""
    app = create_app([ModelSpec(name="m", model=clf)], ServerSettings(log_dir=str(tmp_path), log_flush_s=0.1))
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        kept = client.post("/v1/feedback", json={"request_id": "kept", "label": 1, "model": "m"})
        bad_model = client.post("/v1/feedback", json=[{"request_id": "ok", "label": 1},
                                                      {"request_id": "r", "label": 0, "model": 3}])
        huge = client.post("/v1/feedback", content=b'{"request_id": "h", "label": 1' + b"0" * 400 + b"}")
    assert kept.status_code == 202
    assert bad_model.status_code == 400 and "feedback[1] 'model'" in bad_model.json()["error"]
    assert huge.status_code == 400 and "feedback[0] label" in huge.json()["error"]
    assert read_feedback(tmp_path).to_pydict()["request_id"] == ["kept"]


def test_metrics_count_requests_batches_and_parse(clf, data) -> None:
    X, _ = data
    app = create_app([ModelSpec(name="m", model=clf)])
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        for i in range(5):
            client.post("/v1/models/m:predict", json={"instances": X[i : i + 2].tolist()})
        client.post("/v1/models/m:predict", json={"instances": [[1.0]]})
        text = client.get("/metrics").text
    samples = _samples(text)
    assert samples[("loopstack_requests_total", (("code", "200"), ("model", "m"), ("version", "1")))] == 5
    assert samples[("loopstack_requests_total", (("code", "400"), ("model", "m"), ("version", "1")))] == 1
    assert samples[("loopstack_batch_size_sum", (("model", "m"), ("version", "1")))] == 10
    assert samples[("loopstack_request_duration_seconds_count", (("model", "m"),))] == 6
    assert samples[("loopstack_queue_depth", (("model", "m"), ("version", "1")))] == 0
    assert ("loopstack_in_flight_requests", (("model", "m"), ("version", "1"))) in samples
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_metrics_price_the_held_gpu_per_1000_predictions(clf, data) -> None:
    from loopstack.economics import default_prices

    X, _ = data
    app = create_app([ModelSpec(name="m", model=clf)], ServerSettings(gpu="L4", gpus=2))
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        for i in range(4):
            client.post("/v1/models/m:predict", json={"instances": X[i * 5 : i * 5 + 5].tolist()})
        time.sleep(0.3)
        samples = _samples(client.get("/metrics").text)
    labels = (("gpu", "L4"), ("name", "serving"))
    gpu_seconds = samples[("loopstack_gpu_seconds_total", labels)]
    assert samples[("loopstack_predictions_total", labels)] == 20
    assert gpu_seconds >= 2 * 0.3  # two cards held for the server's whole uptime
    rate = default_prices().gpu("L4").hourly("on_demand")
    cost = samples[("loopstack_gpu_cost_total", labels)]
    assert cost == pytest.approx(gpu_seconds / 3600 * rate)
    assert samples[("loopstack_cost_per_1k_predictions", labels)] == pytest.approx(cost / 20 * 1000)


def test_prediction_log_is_written_off_the_request_path(clf, data, tmp_path: Path) -> None:
    X, _ = data
    app = create_app([ModelSpec(name="m", model=clf)], ServerSettings(log_dir=str(tmp_path), log_flush_s=0.2))
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        client.post("/v1/models/m:predict", json={"instances": X[:4].tolist()})
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob("predictions/m/1/*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_prediction_log(tmp_path).num_rows == 4  # while the server still runs


def _driver_features(project: Any) -> Any:
    """The feature view ``driver_stats`` (conv_rate, trips of drivers 1 and 2) applied and materialized;
    returns a model trained on those two features, answering ``2 * conv_rate + trips``."""
    from datetime import datetime, timedelta

    import pandas as pd
    import pyarrow as pa
    from sklearn.linear_model import LinearRegression

    from loopstack.features import Entity, FeatureView, Field, Float64, TableSource

    now = datetime.now()
    rows = pa.table({"driver_id": [1, 2], "conv_rate": [0.25, 0.75], "trips": [10.0, 30.0],
                     "event_timestamp": [now - timedelta(hours=1)] * 2})
    view = FeatureView(name="driver_stats", entities=[Entity(name="driver", join_keys=["driver_id"])],
                       schema=[Field(name="conv_rate", dtype=Float64), Field(name="trips", dtype=Float64)],
                       source=TableSource(rows), ttl=timedelta(days=1))
    store = project.feature_store
    store.apply([view])
    store.materialize(start=now - timedelta(days=1), end=now)
    train = pd.DataFrame({"conv_rate": [0.0, 1.0, 0.5], "trips": [0.0, 10.0, 20.0]})
    return LinearRegression().fit(train, train.conv_rate * 2 + train.trips)


DRIVER_FEATURES = ["driver_stats:conv_rate", "driver_stats:trips"]


def test_entity_keys_are_resolved_through_the_online_store(sqlite_project, tmp_path: Path) -> None:
    model = _driver_features(sqlite_project)
    spec = ModelSpec(name="eta", model=model, features=DRIVER_FEATURES)
    app = create_app([spec], ServerSettings(log_dir=str(tmp_path)), feature_store=sqlite_project.feature_store)
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        known = client.post("/v1/models/eta:predict", json={"entities": [{"driver_id": 1}, {"driver_id": 2}]})
        unknown = client.post("/v1/models/eta:predict", json={"entities": [{"driver_id": 9}]})
        malformed = client.post("/v1/models/eta:predict", json={"entities": [7]})
    assert known.status_code == 200, known.text
    np.testing.assert_allclose(known.json()["predictions"], [10.5, 31.5])
    assert unknown.status_code == 500 and "NaN" in unknown.json()["error"]  # LinearRegression refuses missing values
    assert malformed.status_code == 400 and "join keys" in malformed.json()["error"]
    logged = read_prediction_log(tmp_path, model="eta").flatten().to_pandas()
    assert sorted(logged["inputs.trips"]) == [10.0, 30.0]  # the feature vector read from the store


def test_a_model_logged_with_its_features_takes_entity_keys_on_its_route_and_its_endpoint(sqlite_project,
                                                                                          tmp_path: Path) -> None:
    """No ModelSpec(features=...): the registry model says what it reads, for `serve` and for deployments alike."""
    import pandas as pd

    model = _driver_features(sqlite_project)
    example = pd.DataFrame({"conv_rate": [0.5], "trips": [1.0]})
    with ls.start_run(project=sqlite_project) as run:
        run.log_model(model, "model", example=example, features=DRIVER_FEATURES)
    ls.register_model(run.id, "model", name="eta", project=sqlite_project)
    assert ls.load_model("eta/1", project=sqlite_project).features == tuple(DRIVER_FEATURES)
    sqlite_project.deployments.create("eta-api", "eta/1")
    app = create_app([ModelSpec.parse("eta/1")], ServerSettings(log_dir=str(tmp_path)),
                     loader=lambda ref: ls.load_model(ref, project=sqlite_project),
                     feature_store=sqlite_project.feature_store, deployments=sqlite_project.deployments)
    entities = {"entities": [{"driver_id": 1}, {"driver_id": 2}]}
    with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        by_model = client.post("/v1/models/eta:predict", json=entities)
        by_endpoint = client.post("/v1/endpoints/eta-api:predict", json={**entities, "unit_id": "u1"})
    for answer in (by_model, by_endpoint):
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], [10.5, 31.5])
    without_store = create_app([ModelSpec.parse("eta/1")], ServerSettings(),
                               loader=lambda ref: ls.load_model(ref, project=sqlite_project))
    with running(without_store) as address:
        refused = httpx.post(f"http://{address}/v1/models/eta:predict", json=entities)
    error = refused.json()["error"]
    assert refused.status_code == 400 and "no feature store" in error and "feature_store=project.feature_store" in error


def test_prediction_segments_come_in_write_order_across_version_folders(tmp_path: Path) -> None:
    """Version 10 of a model written after version 9: its segments come after 9's (in path order "10" < "9")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from loopstack.serving.predlog import prediction_segments

    written = []
    for version, time_ns in (("9", 1_700_000_000_000_000_000), ("10", 1_700_000_000_500_000_000),
                             ("9", 1_700_000_001_000_000_000)):
        folder = tmp_path / "predictions" / "m" / version
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time_ns}-1-{len(written):06d}.parquet"
        pq.write_table(pa.table({"request_id": [f"r{len(written)}"], "version": [version]}), path)
        written.append(path)
    assert prediction_segments(tmp_path, "m") == written
    assert read_prediction_log(tmp_path, "m").column("request_id").to_pylist() == ["r0", "r1", "r2"]


def test_prediction_log_rows_keep_their_request_when_a_batch_holds_an_empty_request(clf) -> None:
    """An empty request and a two-row one in one batch: both rows are the two-row request's."""
    from loopstack.serving.batcher import Batch, Item
    from loopstack.serving.models import adapt
    from loopstack.serving.predlog import predictions_table

    adapter = adapt(clf, ModelSpec(name="m", model=clf))
    rows = np.zeros((2, 20))
    items = [Item(rows[:0], 0, None, 0.0, "empty", "a"), Item(rows, 2, None, 0.0, "two", "b")]  # type: ignore[arg-type]
    table = predictions_table([Batch(adapter, items, rows, clf.predict_proba(rows))])
    assert table.select(["request_id", "row", "variant"]).to_pylist() == [
        {"request_id": "two", "row": 0, "variant": "b"}, {"request_id": "two", "row": 1, "variant": "b"}]


def test_a_prediction_segment_that_fails_to_write_costs_no_other_model_and_is_retried(clf, tmp_path: Path) -> None:
    """Before, one failed write ended the flush: the other models' rows and the feedback queued with it were lost."""
    from loopstack.serving.batcher import Batch, Item
    from loopstack.serving.models import adapt
    from loopstack.serving.predlog import PredictionLog, read_feedback, read_prediction_log

    rows = np.zeros((1, 20))
    log = PredictionLog(tmp_path, flush_s=3600)
    for name in ("a", "b"):
        adapter = adapt(clf, ModelSpec(name=name, model=clf))
        log.observe(Batch(adapter, [Item(rows, 1, None, 0.0, f"{name}-1", None)], rows,  # type: ignore[arg-type]
                          clf.predict_proba(rows)))
    log.feedback([{"request_id": "b-1", "label": 1}])
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "a").write_text("a file where model a's folder goes: its write fails")
    log.flush()
    assert read_prediction_log(tmp_path, "b").column("request_id").to_pylist() == ["b-1"]
    assert read_feedback(tmp_path).column("request_id").to_pylist() == ["b-1"]
    (tmp_path / "predictions" / "a").unlink()
    log.close()  # the next flush writes what the failed one kept
    assert read_prediction_log(tmp_path, "a").column("request_id").to_pylist() == ["a-1"]
    assert log.rows_written == 2


def test_a_multi_output_classifier_answers_each_row_with_its_own_probabilities(data) -> None:
    """predict_proba of a multi-output classifier is a list, one (rows, classes) array per output: it was read as
    (outputs, rows, classes), so with as many rows as outputs each row got another output's column (a 200), and
    otherwise the request was a 400 blaming the client."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier

    X, y = data
    model = MultiOutputClassifier(LogisticRegression()).fit(X, np.stack([y, 1 - y], axis=1))
    with running(create_app([ModelSpec(name="multi", model=model)])) as address, \
            httpx.Client(base_url=f"http://{address}") as client:
        two = client.post("/v1/models/multi:predict", json={"instances": X[:2].tolist()})
        three = client.post("/v2/models/multi/infer", json={
            "inputs": [{"name": "input", "shape": [3, 20], "datatype": "FP64", "data": X[:3].ravel().tolist()}]})
    assert two.status_code == 200 and three.status_code == 200, (two.text, three.text)
    np.testing.assert_allclose(two.json()["predictions"], np.stack(model.predict_proba(X[:2]), axis=1))
    tensor = three.json()["outputs"][0]
    assert tensor["shape"] == [3, 2, 2]
    np.testing.assert_allclose(np.reshape(tensor["data"], (3, 2, 2)), np.stack(model.predict_proba(X[:3]), axis=1))


def test_a_model_returning_the_wrong_number_of_outputs_is_a_server_error() -> None:
    """It was a 400, which tells the client to change a request that was fine."""

    class OneAnswer:
        n_features_in_ = 2

        def predict(self, X: Any) -> np.ndarray:
            return np.zeros(1)

    with running(create_app([ModelSpec(name="short", model=OneAnswer())])) as address:
        response = httpx.post(f"http://{address}/v1/models/short:predict", json={"instances": [[1, 2], [3, 4]]})
    assert response.status_code == 500 and "returned shape [1] for 2 rows" in response.json()["error"]


def test_a_body_over_the_limit_is_refused_as_it_arrives_on_every_route(clf, data, tmp_path: Path) -> None:
    """Neither uvicorn nor Starlette limits a request body: a client could make the server hold any amount."""
    import json

    X, _ = data
    row = {"instances": [X[0].tolist()]}
    big = json.dumps({"instances": [X[0].tolist()] * 200}).encode()
    app = create_app([ModelSpec(name="fraud", model=clf)], ServerSettings(max_body_bytes=10_000, log_dir=tmp_path))
    with running(app) as served:
        def post(path: str, **kwargs: Any) -> httpx.Response:
            with httpx.Client(base_url=f"http://{served}") as client:  # a refused body closes its connection
                return client.post(path, **kwargs)

        refused = [
            post("/v1/models/fraud:predict", content=big, headers={"content-type": "application/json"}),
            post("/v2/models/fraud/infer", content=iter([b" " * 6_000] * 3)),  # chunked: no length up front
            post("/v1/feedback", content=b"x" * 20_000),  # a route Starlette answers
        ]
        under = post("/v1/models/fraud:predict", json=row)
    assert len(big) > 10_000
    for response in refused:
        assert response.status_code == 413, response.text
        assert "10000 bytes" in response.json()["error"] and response.headers["connection"] == "close"
    assert under.status_code == 200


def test_a_compressed_native_body_is_decoded_and_an_unknown_encoding_is_a_415(clf, data) -> None:
    """A gzip body was read as JSON and answered "not valid JSON", where the v2 route decoded it."""
    import gzip
    import json
    import zlib

    X, _ = data
    body = json.dumps({"instances": [X[0].tolist()]}).encode()
    app = create_app([ModelSpec(name="fraud", model=clf)], ServerSettings(max_body_bytes=10_000))
    with running(app) as served, httpx.Client(base_url=f"http://{served}") as client:
        def post(content: bytes, encoding: str) -> httpx.Response:
            headers = {"content-type": "application/json", "content-encoding": encoding}
            return client.post("/v1/models/fraud:predict", content=content, headers=headers)

        zipped, deflated = post(gzip.compress(body), "gzip"), post(zlib.compress(body), "deflate")
        unknown = post(body, "br")
        bomb = post(gzip.compress(b" " * 1_000_000), "gzip")
    for response in (zipped, deflated):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], clf.predict_proba(X[:1]))
    assert unknown.status_code == 415 and "'br' is not supported" in unknown.json()["error"]
    assert bomb.status_code == 413


def test_a_get_of_a_post_route_is_a_405_naming_the_method(clf) -> None:
    """GET /v1/models/m:predict matched the model route and said model 'm:predict' was not served."""
    app = create_app([ModelSpec(name="fraud", model=clf)])
    with running(app) as served, httpx.Client(base_url=f"http://{served}") as client:
        predict, load = client.get("/v1/models/fraud:predict"), client.get("/v1/models/fraud:load")
        described = client.get("/v1/models/fraud")
    for response in (predict, load):
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert "takes POST, not GET" in response.json()["error"]
    assert described.status_code == 200 and described.json()["name"] == "fraud"


@pytest.mark.parametrize("value", [b"ab\tcd", b"caf\xe9"])
def test_an_x_request_id_header_that_is_not_printable_ascii_is_refused(shared, value: bytes) -> None:
    """The body's `id` was checked but the header's value was echoed back as sent, a tab or byte 0xe9 too."""
    refused = shared.post("/v1/models/m:predict", json={"instances": [[0.0] * 20]}, headers={"X-Request-Id": value})
    assert refused.status_code == 400, refused.text
    assert "X-Request-Id header" in refused.json()["error"] and "printable ASCII" in refused.json()["error"]
    kept = shared.post("/v1/models/m:predict", json={"instances": [[0.0] * 20]}, headers={"X-Request-Id": "r-1 a"})
    assert kept.status_code == 200 and kept.headers["x-request-id"] == "r-1 a" == kept.json()["request_id"]


class _Mixed:
    """A model taking a string field beside numbers; it predicts the length of `s`."""

    signature: ClassVar[dict[str, Any]] = {"inputs": {"columns": {"n": "int64", "s": "str", "x": "float64"}}}

    def predict(self, X: Any) -> Any:
        return np.array([len(s or "") for s in X["s"]], dtype=float)


def test_string_and_row_checks_are_400s_over_http(tmp_path: Path) -> None:
    """A lone surrogate in a string field was a 500 (pandas, the log's Arrow conversion), a one-value list in
    a row's field was unwrapped (a 200), and `[true, null]` in a float field a 400 where `[true]` was a 200."""
    settings = ServerSettings(log_dir=str(tmp_path), log_flush_s=3600)
    with running(create_app([ModelSpec(name="m", model=_Mixed())], settings)) as address, \
            httpx.Client(base_url=f"http://{address}") as client:
        def post(body: bytes) -> Any:
            return client.post("/v1/models/m:predict", content=body, headers={"content-type": "application/json"})

        cases = [
            (b'{"instances": [{"n": 1, "s": "\\ud800", "x": 1}]}', "instances[0] field 's' is not valid Unicode"),
            (b'{"instances": [[1, "ok", 1], [1, "a\\udfff", 1]]}', "instances[1] field 's' is not valid Unicode"),
            (b'{"inputs": {"n": [1], "s": ["\\ud800"], "x": [1]}}', "inputs.s[0] is not valid Unicode"),
            (b'{"instances": [{"n": 1, "s": "a", "x": [1.5]}]}', "instances[0] field 'x' must be one value"),
        ]
        for body, needle in cases:
            answer = post(body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"].startswith(needle), answer.text
        good = post(b'{"instances": [{"n": true, "s": "caf\\u00e9", "x": null}]}')
        columns = post(b'{"inputs": {"n": [1, 2], "s": [["ab"], ["c"]], "x": [[true], [null]]}}')
    assert good.status_code == 200 and good.json()["predictions"] == [4.0], good.text
    assert columns.status_code == 200 and columns.json()["predictions"] == [2.0, 1.0], columns.text
    assert read_prediction_log(tmp_path, "m").num_rows == 3
