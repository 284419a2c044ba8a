"""Monitoring a served model from its prediction log and feedback: drift of inputs, outputs, labels; performance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from starlette.testclient import TestClient

import loopstack as ls
from loopstack.core.errors import ValidationError
from loopstack.drift import Monitor, PredictionLogSource
from loopstack.drift.sources import join_feedback
from loopstack.pipelines import drift_detected, performance_below
from loopstack.registry.api import load_model
from loopstack.serving import ModelSpec, ServerSettings, create_app

FEATURES = ["a", "b", "c"]


def _frame(seed: int, n: int, shift: float = 0.0, concept: str = "a + b") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n), "c": rng.normal(0, 1, n)})
    frame["y"] = (frame.eval(concept) > 0).astype(int)
    return frame


@pytest.fixture
def served(sqlite_project: ls.Project, tmp_path: Path) -> dict[str, Any]:
    """A registered classifier whose training set was logged, and a server over it with a prediction log."""
    train = _frame(0, 2000)
    path = tmp_path / "train.parquet"
    train.to_parquet(path)
    with ls.start_run(project=sqlite_project) as run:
        run.log_input(train, name=str(path), context="training", targets="y")
        model = LogisticRegression().fit(train[FEATURES], train["y"])
        run.log_model(model, "model", example=train[FEATURES].head())
    ls.register_model(run.id, "model", name="fraud", alias="champion", project=sqlite_project)
    logs = sqlite_project.root / ".loopstack" / "logs"
    app = create_app([ModelSpec.parse("fraud@champion")], ServerSettings(log_dir=str(logs), log_flush_s=0.05),
                     loader=lambda ref: load_model(ref, project=sqlite_project))
    return {"app": app, "model": model, "train": train}


def _traffic(client: TestClient, frame: pd.DataFrame, prefix: str, label_every: int | None) -> None:
    """One request per row (so each label is one row's), then feedback for some of them."""
    for i, row in enumerate(frame[FEATURES].to_dict("records")):
        response = client.post("/v1/models/fraud:predict", json={"instances": [row], "id": f"{prefix}{i}"})
        assert response.status_code == 200, response.text
    if label_every:
        labels = [{"request_id": f"{prefix}{i}", "label": int(y)}
                  for i, y in enumerate(frame["y"]) if i % label_every]
        assert client.post("/v1/feedback", json=labels).status_code == 202


def _flushed(source: PredictionLogSource, rows: int, timeout_s: float = 10.0) -> None:
    """Wait for the server's prediction log (flushed every 50 ms here) to hold `rows` predictions."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if source.read().rows >= rows:
                return
        except ValidationError:  # nothing written yet
            pass
        time.sleep(0.02)
    raise AssertionError(f"the prediction log did not reach {rows} rows in {timeout_s} s")


def _events(project: ls.Project, kind: str) -> list[Any]:
    return project.events.list(kind=kind)[::-1]  # oldest first


def test_monitor_over_the_log_finds_shifted_inputs_outputs_labels_and_lost_accuracy(
    sqlite_project: ls.Project, served: dict[str, Any]
) -> None:
    before, after = _frame(1, 200), _frame(2, 200, shift=2.0, concept="b - a")  # covariate shift + new concept
    with TestClient(served["app"]) as client:
        _traffic(client, before, "p", label_every=3)
        time.sleep(0.2)
        middle = time.time()
        _traffic(client, after, "q", label_every=3)
    # 200 rows a window: Evidently's Wasserstein threshold (0.1) is within sampling noise there, so 0.2.
    monitor = Monitor.for_model(sqlite_project, "fraud", "champion", target="y", drift_share=0.3, threshold=0.2)
    first = monitor.run(PredictionLogSource(sqlite_project, "fraud", since=0.0).read(now=middle))
    source = PredictionLogSource(sqlite_project, "fraud", since=middle)
    second = monitor.run(source)

    assert not first.dataset_drift and second.dataset_drift
    assert second.columns["a"].drifted and not second.columns["c"].drifted
    [ok, shifted] = _events(sqlite_project, "drift.checked")
    assert ok.payload["window"]["rows"] == 200 and shifted.payload["window"]["start"] == middle
    predictions = _events(sqlite_project, "drift.predictions")
    assert [e.payload["dataset_drift"] for e in predictions] == [False, True]
    assert predictions[1].payload["against"] == "reference" and predictions[1].payload["columns"]["score"]["drifted"]
    assert [e.payload["dataset_drift"] for e in _events(sqlite_project, "drift.labels")] == [False, True]

    good, bad = (e.payload for e in _events(sqlite_project, "performance.checked"))
    labelled = np.arange(200) % 3 != 0
    for payload, frame in ((good, before), (bad, after)):
        assert payload["basis"] == "labels" and payload["labelled_share"] == pytest.approx(labelled.mean())
        y, x = frame["y"][labelled], frame[FEATURES][labelled]
        expected = {"accuracy": accuracy_score(y, served["model"].predict(x)),
                    "f1": f1_score(y, served["model"].predict(x)),
                    "auc": roc_auc_score(y, served["model"].predict_proba(x)[:, 1])}
        assert payload["metrics"] == pytest.approx(expected)
    assert good["metrics"]["accuracy"] > 0.9 > 0.5 > bad["metrics"]["accuracy"]

    # The loop engine's triggers fire on the second window only.
    falls, drifts = performance_below("accuracy", 0.8), drift_detected()
    assert [falls.matches(e) for e in _events(sqlite_project, "performance.checked")] == [False, True]
    assert [drifts.matches(e) for e in _events(sqlite_project, "drift.detected")] == [True]


def test_without_labels_performance_is_the_cbpe_estimate(sqlite_project: ls.Project, served: dict[str, Any]) -> None:
    current = _frame(3, 120)
    with TestClient(served["app"]) as client:
        _traffic(client, current, "u", label_every=None)
    monitor = Monitor(sqlite_project, "fraud", reference=served["train"], current=PredictionLogSource(sqlite_project,
                      "fraud"), reference_outputs="previous")
    monitor.run()
    [payload] = [e.payload for e in _events(sqlite_project, "performance.checked")]
    assert payload["basis"] == "estimate" and payload["labelled_share"] == 0.0
    p = served["model"].predict_proba(current[FEATURES])[:, 1]
    expected = np.mean(np.where(p >= 0.5, p, 1 - p))  # calibrated scores: P(right) is the winning probability
    assert payload["metrics"]["accuracy"] == pytest.approx(expected)
    assert payload["metrics"] == payload["estimated"]
    assert not _events(sqlite_project, "drift.predictions")  # "previous": nothing to compare with yet
    monitor.run()
    [same] = _events(sqlite_project, "drift.predictions")
    assert same.payload["against"] == "previous" and not same.payload["dataset_drift"]
    assert not _events(sqlite_project, "drift.labels")  # no target given, no labels arrived


def test_a_window_whose_check_failed_is_not_the_next_ones_previous(
    sqlite_project: ls.Project, served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopstack.drift import logcheck

    source = PredictionLogSource(sqlite_project, "fraud")
    monitor = Monitor(sqlite_project, "fraud", reference=served["train"], current=source,
                      reference_outputs="previous")
    with TestClient(served["app"]) as client:
        _traffic(client, _frame(5, 6), "first", label_every=None)
        _flushed(source, rows=6)
        monitor.run()
        _traffic(client, _frame(6, 4), "second", label_every=None)
        _flushed(source, rows=10)

    def broken(window: Any) -> dict[str, Any]:
        raise RuntimeError("the check broke after comparing outputs")

    monkeypatch.setattr(logcheck, "performance_payload", broken)
    with pytest.raises(RuntimeError):
        monitor.run()
    against, previous = monitor.reference_outputs_for(source.read())
    assert against == "previous" and previous.num_rows == 6  # the last window checked whole, not the failed one


def test_window_filters_and_empty_window_error(sqlite_project: ls.Project, served: dict[str, Any]) -> None:
    frame = _frame(4, 5)
    with TestClient(served["app"]) as client:
        _traffic(client, frame, "w", label_every=2)
    source = PredictionLogSource(sqlite_project, "fraud", window=3600)
    window = source.read()
    assert window.rows == 5 and window.features == ["a", "b", "c"] and window.outputs == ["prediction", "score"]
    assert window.table.sort_by("request_id").column("label").to_pylist() == [None, frame.y[1], None, frame.y[3], None]
    assert window.labelled_share == 0.4
    with pytest.raises(ValidationError, match="no predictions of model 'fraud'"):
        source.read(now=time.time() + 7200)  # the last hour, two hours from now: no traffic yet
    with pytest.raises(ValidationError, match="no predictions"):
        PredictionLogSource(sqlite_project, "fraud", version=2).read()


def test_a_scheduled_monitor_skips_an_empty_window_and_keeps_running(
    sqlite_project: ls.Project, served: dict[str, Any]
) -> None:
    quiet = PredictionLogSource(sqlite_project, "fraud", version=99)  # a version that never served
    monitor = Monitor(sqlite_project, "fraud", reference=served["train"], current=quiet)
    assert monitor.run_every(0.01, max_runs=3) == 3
    skipped = _events(sqlite_project, "drift.skipped")
    assert len(skipped) == 3 and "no predictions" in skipped[0].payload["reason"]


def test_latest_feedback_wins_and_text_labels_stay_text() -> None:
    ids = pa.chunked_array([["r1", "r2", "r3"]])
    feedback = pa.table({
        "request_id": ["r1", "r2", "r1"], "time": pa.array([1, 2, 3], pa.timestamp("us", tz="UTC")),
        "model": [None, None, None], "label": ['"cat"', '"dog"', '"cow"'],
        "label_value": pa.array([None, None, None], pa.float64()),
    })
    assert join_feedback(ids, feedback).to_pylist() == ["cow", "dog", None]
    numbers = feedback.set_column(4, "label_value", pa.array([0.0, 1.0, 1.0])).set_column(
        3, "label", pa.array(["0", "1", "1"]))
    joined = join_feedback(ids, numbers)
    assert joined.type == pa.int64() and joined.to_pylist() == [1, 1, None]
