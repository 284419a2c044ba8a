"""Incremental log reads: a ticking controller sees what a fresh one sees, and reads each segment once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from loopstack.core.project import Project
from loopstack.rollout import RolloutController
from loopstack.rollout.controller import VariantTraffic
from loopstack.serving import ServerSettings, create_app, read_feedback, read_prediction_log

from .conftest import register
from .test_controller import Scorer, simulate


@pytest.fixture
def refs(sqlite_project: Project) -> list[str]:
    return register(sqlite_project)


class FlakyScorer(Scorer):
    """A `Scorer` that fails on large first inputs, so the traffic log holds errors too."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if (np.asarray(X, dtype=float)[:, 0] > 0.9).any():
            raise RuntimeError("flaky")
        return super().predict_proba(X)


def assert_same(ticking: dict[str, VariantTraffic], fresh: dict[str, VariantTraffic]) -> None:
    """Equal per variant, value for value and in the same order."""
    assert list(ticking) == list(fresh)
    for name, t in ticking.items():
        f = fresh[name]
        assert (t.variant, t.requests, t.errors) == (f.variant, f.requests, f.errors)
        np.testing.assert_array_equal(t.latencies_ms, f.latencies_ms, strict=True)
        np.testing.assert_array_equal(t.rewards, f.rewards, strict=True)


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every Parquet file read from now on, by whichever pyarrow entry point."""
    reads: list[str] = []

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(source: Any, *args: Any, **kwargs: Any) -> Any:
            reads.extend([str(s) for s in source] if isinstance(source, list) else [str(source)])
            return original(source, *args, **kwargs)

        return call

    for module, name in ((pq, "read_table"), (pq, "read_schema"), (pq, "ParquetFile"), (ds, "dataset")):
        monkeypatch.setattr(module, name, counting(getattr(module, name)))
    return reads


def test_a_ticking_controller_sees_what_a_fresh_one_sees(sqlite_project: Project, refs: list[str],
                                                         tmp_path: Path) -> None:
    """Brier-scored canary after a shadow, with late and repeated feedback for old requests, then a new canary."""
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="brier")
    deployments.shadow("api", refs[1])
    models = {refs[0]: FlakyScorer(), refs[1]: FlakyScorer(inverted=True), refs[2]: Scorer()}
    app = create_app([], ServerSettings(log_dir=str(tmp_path), log_flush_s=3600), loader=models.__getitem__,
                     deployments=deployments)
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    rng = np.random.default_rng(21)
    answered: list[str] = []

    def tick(n: int, late: int, look: bool = True) -> None:
        """`n` requests, labels for most, `late` labels (new or changed) for earlier requests; then logs and a look."""
        feedback = []
        for _ in range(n):
            x, rid = float(rng.random()), f"r{len(answered)}"
            client.post("/v1/endpoints/api:predict", json={"id": rid, "instances": [[x, 0.0, 0.0]], "unit_id": rid})
            answered.append(rid)
            if rng.random() < 0.8:
                feedback.append({"request_id": rid, "label": int(rng.random() < 0.1 + 0.8 * x)})
        for rid in rng.choice(answered, size=min(late, len(answered)), replace=False):
            feedback.append({"request_id": str(rid), "label": int(rng.integers(2))})
            feedback.append({"request_id": str(rid), "label": "not a number"})  # never overrides a numeric label
        assert client.post("/v1/feedback", json=feedback).status_code == 202
        if not look:
            return  # left queued: the next segments straddle the next rollout's start
        client.portal.call(app.state.server.endpoints.settle)
        app.state.server.endpoints.log.flush()
        app.state.server.log.flush()
        d = deployments.get("api")
        if d.strategy == "canary":
            assert controller.evaluate().action == "hold"
        assert_same(controller.traffic(d), RolloutController(sqlite_project, "api", log_dir=tmp_path).traffic(d))

    with TestClient(app) as client:
        client.portal.call(app.state.server.endpoints.sync)
        for _ in range(2):
            tick(40, late=0)  # shadow: mirrored rows and the shadow's predictions are logged, never counted
        tick(20, late=5, look=False)
        deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=10_000, salt="ticks")
        client.portal.call(app.state.server.endpoints.sync)
        for _ in range(4):
            tick(60, late=15)
        d = deployments.get("api")
        assert all(len(t.rewards) > 20 and t.errors > 0 for t in controller.traffic(d).values())
        tick(20, late=5, look=False)
        deployments.rollback("api", reason="by hand")
        deployments.canary("api", refs[2], steps=[50, 100], min_requests_per_step=10_000, salt="again")
        client.portal.call(app.state.server.endpoints.sync)
        for _ in range(2):
            tick(40, late=10)
    assert controller.logs.traffic.reads == len(list((tmp_path / "endpoints" / "api").glob("*.parquet")))


def test_a_tick_without_new_segments_reads_no_file(sqlite_project: Project, refs: list[str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="conversion")
    deployments.canary("api", refs[1], steps=[10, 50, 100], min_requests_per_step=50_000, salt="fixed")
    rng = np.random.default_rng(8)
    rates, reward = {refs[0]: 0.01, refs[1]: 0.01}, {refs[0]: 0.1, refs[1]: 0.1}
    for k in range(3):
        simulate(sqlite_project, tmp_path, 500, rates, rng, reward, start=k * 500)  # a traffic and a feedback segment
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    first = controller.evaluate()
    reads = count_reads(monkeypatch)
    again = controller.evaluate()
    assert reads == []  # old code path: every segment again, on every tick
    assert (again.action, again.canary_requests) == (first.action, first.canary_requests)
    simulate(sqlite_project, tmp_path, 500, rates, rng, reward, start=1500)
    controller.evaluate()
    assert sorted(Path(r).parent.name for r in reads) == ["api", "feedback"]  # only the two new segments
    reads.clear()
    RolloutController(sqlite_project, "api", log_dir=tmp_path).evaluate()
    assert len(reads) == 8  # a new controller reads every segment once


def test_the_kept_tables_are_the_whole_log_readers_rows(sqlite_project: Project, refs: list[str],
                                                        tmp_path: Path) -> None:
    """What the controller keeps is what read_traffic_log / read_feedback / read_prediction_log return, selected."""
    from loopstack.rollout.segments import TRAFFIC_COLUMNS, ControllerLogs
    from loopstack.rollout.trafficlog import read_traffic_log

    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="brier")
    deployments.shadow("api", refs[1])
    models = {refs[0]: Scorer(), refs[1]: Scorer(inverted=True)}
    app = create_app([], ServerSettings(log_dir=str(tmp_path), log_flush_s=3600), loader=models.__getitem__,
                     deployments=deployments)
    logs = ControllerLogs(tmp_path)
    with TestClient(app) as client:
        for k in range(3):
            ids = [client.post("/v1/endpoints/api:predict", json={"instances": [[0.5, 0, 0], [0.2, 0, 0]],
                                                                  "unit_id": f"u{k}-{i}"}).headers["x-request-id"]
                   for i in range(10)]
            labels = [{"request_id": r, "label": i % 2} for i, r in enumerate(ids)] + [{"request_id": ids[0],
                                                                                        "label": "late"}]
            client.post("/v1/feedback", json=labels)
            client.portal.call(app.state.server.endpoints.settle)
            app.state.server.endpoints.log.flush()
            app.state.server.log.flush()
            since = deployments.get("api").state["started_at"] if k < 2 else None
            traffic = read_traffic_log(tmp_path, "api", since=since)
            assert logs.requests("api", since).equals(traffic.filter(pc.invert(traffic["shadow"])).select(
                TRAFFIC_COLUMNS))
            feedback = read_feedback(tmp_path)
            assert logs.labels().equals(feedback.filter(pc.is_valid(feedback["label_value"])).select(
                ["request_id", "label_value"]))
            predictions = read_prediction_log(tmp_path, "api")
            outputs = logs.outputs("api")
            assert outputs is not None and outputs.num_rows == 10 * (k + 1) * 2  # both variants' row 0
            assert outputs.equals(predictions.filter(pc.equal(predictions["row"], 0)).select(
                ["request_id", "variant", "outputs"]))


def test_a_new_window_drops_the_segments_before_it_and_a_window_reaching_back_reads_them_again(
        tmp_path: Path) -> None:
    from loopstack.rollout import TrafficLog
    from loopstack.rollout.segments import ControllerLogs

    log = TrafficLog(tmp_path, flush_s=3600)
    for t in (1, 2, 3):
        log.record(request_id=f"r{t}", endpoint="api", variant="a", ref="m/1", deployment_version=1, unit_id="u",
                   shadow=False, ok=True, status=200, latency_ms=1.0, time=t * 1_000_000)
        log.flush()
    log.close()
    logs = ControllerLogs(tmp_path)
    assert logs.requests("api", 1.0)["request_id"].to_pylist() == ["r1", "r2", "r3"]
    assert logs.requests("api", 2.5)["request_id"].to_pylist() == ["r3"]
    assert (logs.traffic.reads, len(logs.traffic.tables(sorted((tmp_path / "endpoints" / "api").iterdir())))) == (3, 1)
    assert logs.requests("api", 0.5)["request_id"].to_pylist() == ["r1", "r2", "r3"]
    assert logs.traffic.reads == 5  # the two dropped segments, read again
    assert logs.requests("api", None).num_rows == 3 and logs.traffic.reads == 5


def test_labels_and_outputs_written_well_before_the_rollout_are_neither_read_nor_kept(tmp_path: Path) -> None:
    """Segments named more than a minute before the window's start belong to earlier rollouts: a controller
    living through many rollouts must not keep every label ever given. Within the minute they still count."""
    from loopstack.rollout.segments import ControllerLogs
    from loopstack.serving.predlog import _feedback_schema

    start = 1_800_000_000.0
    for name, age_s in (("hour-old", 3600), ("in-slack", 30), ("after", -5)):
        written = f"{int((start - age_s) * 1e9)}-1-000001.parquet"
        feedback = pa.table({"request_id": [name], "time": [0], "model": [None], "label": ["1"], "label_value": [1.0]},
                            schema=_feedback_schema())
        (tmp_path / "feedback").mkdir(exist_ok=True)
        pq.write_table(feedback, tmp_path / "feedback" / written)
        folder = tmp_path / "predictions" / "api" / "1"
        folder.mkdir(parents=True, exist_ok=True)
        outputs = pa.StructArray.from_arrays([pa.array([0.5])], ["predict"])
        pq.write_table(pa.table({"request_id": [name], "row": [0], "variant": ["a"], "outputs": outputs}),
                       folder / written)
    logs = ControllerLogs(tmp_path)
    logs.requests("api", start)
    assert logs.labels()["request_id"].to_pylist() == ["in-slack", "after"]
    assert logs.outputs("api")["request_id"].to_pylist() == ["in-slack", "after"]  # type: ignore[index]
    assert logs.feedback.reads == logs.predictions.reads == 2
    logs.requests("api", start - 7200)  # a window reaching back reads them
    assert logs.labels()["request_id"].to_pylist() == ["hour-old", "in-slack", "after"]
    assert logs.outputs("api").num_rows == 3  # type: ignore[union-attr]


def test_a_segment_replaced_in_place_is_read_again(tmp_path: Path) -> None:
    from loopstack.rollout.segments import SegmentCache

    path = tmp_path / "1.parquet"
    pq.write_table(pa.table({"x": [1]}), path)
    cache = SegmentCache(pq.read_table)
    assert cache.tables([path])[0]["x"].to_pylist() == [1]
    pq.write_table(pa.table({"x": [1, 2]}), path)
    assert cache.tables([path])[0]["x"].to_pylist() == [1, 2] and cache.reads == 2
    path.unlink()
    assert cache.tables([]) == [] and cache.reads == 2


def test_a_torn_segment_is_skipped_with_a_warning_until_it_changes(tmp_path: Path, caplog) -> None:
    """A segment left empty by a machine crash stopped every later tick of the controller."""
    from loopstack.rollout.segments import SegmentCache

    good, torn = tmp_path / "1.parquet", tmp_path / "2.parquet"
    pq.write_table(pa.table({"x": [1]}), good)
    torn.write_bytes(b"")
    cache = SegmentCache(pq.read_table)
    with caplog.at_level("WARNING", logger="loopstack.rollout"):
        assert [t["x"].to_pylist() for t in cache.tables([good, torn])] == [[1]]
        assert [t["x"].to_pylist() for t in cache.tables([good, torn])] == [[1]] and cache.reads == 2
    assert sum("2.parquet" in r.getMessage() for r in caplog.records) == 1  # once, not once per tick
    pq.write_table(pa.table({"x": [2]}), torn)
    assert [t["x"].to_pylist() for t in cache.tables([good, torn])] == [[1], [2]]


def test_a_readable_segment_that_fails_otherwise_still_raises(tmp_path: Path) -> None:
    from loopstack.rollout.segments import SegmentCache

    path = tmp_path / "1.parquet"
    pq.write_table(pa.table({"x": [1]}), path)
    cache = SegmentCache(lambda p: pq.read_table(p, columns=["missing"]))
    with pytest.raises(pa.ArrowException):
        cache.tables([path])


class _Logs:
    """Hand-written log tables in place of `ControllerLogs`, to pin down how requests, labels and outputs join."""

    def __init__(self, requests: list[tuple[str, str, bool]], labels: list[tuple[str, float]],
                 outputs: list[tuple[str, str, float]]) -> None:
        self._requests = pa.table({"request_id": [r for r, _, _ in requests], "time": [0] * len(requests),
                                   "variant": [v for _, v, _ in requests], "ok": [ok for _, _, ok in requests],
                                   "latency_ms": [1.0] * len(requests)})
        self._labels = pa.table({"request_id": pa.array([r for r, _ in labels], pa.string()),
                                 "label_value": pa.array([y for _, y in labels], pa.float64())})
        self._outputs = pa.table({"request_id": [r for r, _, _ in outputs], "variant": [v for _, v, _ in outputs],
                                  "outputs": pa.array([{"p": [1 - p, p]} for _, _, p in outputs])})

    def requests(self, endpoint: str, since: float | None) -> pa.Table:
        return self._requests

    def labels(self) -> pa.Table:
        return self._labels

    def outputs(self, endpoint: str) -> pa.Table:
        return self._outputs


@pytest.mark.parametrize("metric", ["conversion", "brier"])
def test_each_label_counts_once_for_the_variant_that_answered_last(metric: str) -> None:
    """The latest numeric label of a request id counts for the variant of its latest answer, in traffic order;
    with a scoring rule, against that variant's latest logged output (never a shadow's or an older variant's)."""
    from loopstack.rollout.controller import variant_traffic
    from loopstack.rollout.deployment import Deployment

    d = Deployment("api", "canary", {"a": "m/1", "b": "m/2"}, "a", {"a": 0.5, "b": 0.5}, challenger="b",
                   steps=(0.5, 1.0), salt="s", primary_metric=metric, higher_is_better=metric == "conversion")
    requests = [("r1", "a", True), ("r2", "b", True), ("r3", "a", False), ("r4", "b", True),
                ("r2", "a", True),  # r2 retried: answered by "a" last, so its label is "a"'s (on both rows)
                ("r5", "a", True)]  # r5 has no label; "r9" (a label only) was never served
    labels = [("r1", 0.0), ("r2", 1.0), ("r1", 1.0), ("r3", 0.0), ("r4", 1.0), ("r9", 1.0)]
    outputs = [("r1", "a", 0.2), ("r1", "b", 0.9),  # "b" only mirrored r1: its output never counts
               ("r2", "b", 0.3), ("r2", "a", 0.6), ("r3", "a", 0.5), ("r4", "b", 0.1), ("r4", "b", 0.7)]
    traffic = variant_traffic("unused", d, logs=_Logs(requests, labels, outputs))  # type: ignore[arg-type]
    assert (traffic["a"].requests, traffic["a"].errors, traffic["b"].requests) == (4, 1, 2)
    if metric == "conversion":  # r1's latest label is 1.0; r2's counts on its "a" row only; r3, errors included
        assert traffic["a"].rewards.tolist() == [1.0, 0.0, 1.0] and traffic["b"].rewards.tolist() == [1.0]
    else:  # Brier of the answering variant's latest output against the label
        np.testing.assert_allclose(traffic["a"].rewards, [(0.2 - 1) ** 2, (0.5 - 0) ** 2, (0.6 - 1) ** 2])
        np.testing.assert_allclose(traffic["b"].rewards, [(0.7 - 1) ** 2])


def test_read_traffic_log_since_skips_segments_written_well_before(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments named over a minute before `since` are not opened; a name without a time always is."""
    import time

    from loopstack.rollout import TrafficLog, read_traffic_log

    log = TrafficLog(tmp_path, flush_s=3600)
    now = time.time()

    def segment(rid: str, at: float | None = None, name: str | None = None) -> None:
        log.record(request_id=rid, endpoint="api", variant="m/1", ref="m/1", deployment_version=1, unit_id=None,
                   shadow=False, ok=True, status=200, latency_ms=1.0, **({"time": int(at * 1e6)} if at else {}))
        log.flush()
        written = max((tmp_path / "endpoints" / "api").glob("*.parquet"), key=lambda f: f.stat().st_mtime_ns)
        if name is not None:
            written.rename(written.with_name(name))

    segment("hours-old", at=now - 7200, name=f"{int((now - 7200) * 1e9)}-1-000001.parquet")
    segment("restored", at=now + 5, name="restored.parquet")  # no time in its name: it must be read
    segment("explicit", at=now + 10)  # recorded with a time after its segment's name: the slack keeps it
    segment("new")
    log.close()
    reads = count_reads(monkeypatch)
    recent = read_traffic_log(tmp_path, "api", since=now + 5)  # after "explicit"'s segment was named
    assert sorted(recent["request_id"].to_pylist()) == ["explicit", "restored"]
    assert len(reads) == 3  # only the hours-old segment was not opened
    assert len(read_traffic_log(tmp_path, "api")) == 4


def test_a_label_the_rule_cannot_score_is_left_out_instead_of_stalling_the_canary() -> None:
    from loopstack.rollout.controller import variant_traffic
    from loopstack.rollout.deployment import Deployment

    d = Deployment("api", "canary", {"a": "m/1", "b": "m/2"}, "a", {"a": 0.5, "b": 0.5}, challenger="b",
                   steps=(0.5, 1.0), salt="s", primary_metric="brier", higher_is_better=False)
    requests = [("r1", "a", True), ("r2", "a", True), ("r3", "b", True)]
    labels = [("r1", 1.0), ("r2", 2.0), ("r3", 0.5)]  # 2.0 and 0.5 are no class index of a 2-class output
    outputs = [("r1", "a", 0.8), ("r2", "a", 0.3), ("r3", "b", 0.4)]
    traffic = variant_traffic("unused", d, logs=_Logs(requests, labels, outputs))  # type: ignore[arg-type]
    np.testing.assert_allclose(traffic["a"].rewards, [(0.8 - 1) ** 2])
    assert traffic["b"].rewards.size == 0


def test_a_segment_that_fails_to_write_loses_no_other_endpoints_records_and_is_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """One endpoint's failed write took every endpoint's queued records of that flush with it."""
    from loopstack.rollout import TrafficLog, read_traffic_log, trafficlog

    log = TrafficLog(tmp_path, flush_s=3600)
    write = pq.write_table

    def full_disk_for_a(table: pa.Table, where: Any, *args: Any, **kwargs: Any) -> None:
        if Path(where).parent.name == "a":
            raise OSError(28, "No space left on device")
        write(table, where, *args, **kwargs)

    monkeypatch.setattr(trafficlog, "RETRY_ROWS", 3)
    monkeypatch.setattr(pq, "write_table", full_disk_for_a)
    for i in range(5):
        for endpoint in ("a", "b"):
            log.record(request_id=f"{endpoint}{i}", endpoint=endpoint, variant="m/1", ref="m/1", deployment_version=1,
                       unit_id=None, shadow=False, ok=True, status=200, latency_ms=1.0)
    log.flush()
    assert read_traffic_log(tmp_path, "b")["request_id"].to_pylist() == [f"b{i}" for i in range(5)]
    assert "endpoint 'a'" in caplog.text and "3 kept for the next flush" in caplog.text
    monkeypatch.setattr(pq, "write_table", write)  # the disk has room again
    log.close()
    assert read_traffic_log(tmp_path, "a")["request_id"].to_pylist() == ["a2", "a3", "a4"]  # the newest RETRY_ROWS


def test_timeouts_count_in_the_latency_tail_and_other_errors_do_not() -> None:
    """A 504 was left out of the latencies: a canary whose slow requests time out looked fast in the tail."""
    from loopstack.rollout.controller import variant_traffic
    from loopstack.rollout.deployment import Deployment

    d = Deployment("api", "canary", {"a": "m/1", "b": "m/2"}, "a", {"a": 0.5, "b": 0.5}, challenger="b",
                   steps=(0.5, 1.0), salt="s")
    logs = _Logs([("r1", "a", True), ("r2", "b", True), ("r3", "b", False), ("r4", "b", False)], [], [])
    logs._requests = (logs._requests.drop_columns(["latency_ms"])
                      .append_column("status", pa.array([200, 200, 504, 400], pa.int32()))
                      .append_column("latency_ms", pa.array([2.0, 3.0, 10_000.0, 0.4])))
    traffic = variant_traffic("unused", d, logs=logs)  # type: ignore[arg-type]
    assert traffic["b"].errors == 2
    assert traffic["b"].latencies_ms.tolist() == [3.0, 10_000.0]  # the timeout, not the fast 400
    assert traffic["a"].latencies_ms.tolist() == [2.0]
