"""The monitor: events with every column's score, a model version's training data as reference, schedules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import loopstack as ls
from loopstack.core.errors import ConfigError, IntegrityError, NotFoundError
from loopstack.drift import Monitor, load_reference, training_datasets


def _data(seed: int, n: int = 1500, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.normal(40 + shift, 10, n), "city": rng.choice(["a", "b", "c"], n)})


def test_run_emits_checked_with_every_score_and_detected_with_cause(sqlite_project: ls.Project) -> None:
    monitor = Monitor(sqlite_project, "fraud", reference=_data(0))
    assert not monitor.run(_data(1)).dataset_drift
    result = monitor.run(_data(2, shift=10.0))
    assert result.dataset_drift
    checked = sqlite_project.events.list(kind="drift.checked")
    assert len(checked) == 2 and checked[0].subject == "fraud"
    assert set(checked[0].payload["columns"]) == {"age", "city"}
    assert checked[0].payload["columns"]["age"]["score"] == pytest.approx(result.columns["age"].score)
    [detected] = sqlite_project.events.list(kind="drift.detected")
    assert detected.cause == checked[0].id and detected.payload["drifted_columns"] == ["age"]


def test_scheduled_runs_pull_current_from_a_callable(sqlite_project: ls.Project) -> None:
    batches = iter([_data(3), _data(4), _data(5)])
    monitor = Monitor(sqlite_project, "m", reference=_data(0), current=lambda: next(batches), drift_share=0.5)
    seen = []
    assert monitor.run_every(0.01, max_runs=3, on_result=seen.append) == 3
    assert len(seen) == 3 and len(sqlite_project.events.list(kind="drift.checked")) == 3
    with pytest.raises(ConfigError, match="no current data"):
        Monitor(sqlite_project, "empty", reference=_data(0)).run()


def test_a_scheduled_run_that_fails_is_recorded_and_the_schedule_goes_on(sqlite_project: ls.Project) -> None:
    """Before, one error (a log or database briefly unreachable) ended the monitor's thread without a word."""
    pulls = iter([OSError("the log's disk is gone for a moment"), _data(4), _data(5)])

    def current() -> pd.DataFrame:
        item = next(pulls)
        if isinstance(item, Exception):
            raise item
        return item

    monitor = Monitor(sqlite_project, "m", reference=_data(0), current=current)
    assert monitor.run_every(0.01, max_runs=3) == 3
    [failed] = sqlite_project.events.list(kind="drift.failed")
    assert failed.subject == "m" and failed.payload["error"] == "OSError: the log's disk is gone for a moment"
    assert len(sqlite_project.events.list(kind="drift.checked")) == 2
    with pytest.raises(ConfigError, match="no current data"):  # set up wrong: every run would fail alike
        Monitor(sqlite_project, "empty", reference=_data(0)).run_every(0.01, max_runs=3)


def test_an_empty_batch_is_skipped_and_an_empty_reference_recorded_as_failed(sqlite_project: ls.Project) -> None:
    """An empty batch gave a drift.checked of "no drift"; now it is a drift.skipped, as an empty log window is."""
    batches = iter([_data(3, n=0), _data(4)])
    monitor = Monitor(sqlite_project, "m", reference=_data(0), current=lambda: next(batches))
    assert monitor.run_every(0.01, max_runs=2) == 2
    [skipped] = sqlite_project.events.list(kind="drift.skipped")
    assert "current sample has 0 rows" in skipped.payload["reason"]
    assert len(sqlite_project.events.list(kind="drift.checked")) == 1
    Monitor(sqlite_project, "r", reference=_data(0, n=0), current=lambda: _data(4)).run_every(0.01, max_runs=1)
    [failed] = sqlite_project.events.list(kind="drift.failed")
    assert failed.subject == "r" and "reference sample has 0 rows" in failed.payload["error"]


def test_start_and_stop_a_background_monitor(sqlite_project: ls.Project) -> None:
    monitor = Monitor(sqlite_project, "bg", reference=_data(0), current=_data(1))
    monitor.start(0.05)
    import time

    deadline = time.time() + 10
    while not sqlite_project.events.list(kind="drift.checked") and time.time() < deadline:
        time.sleep(0.02)
    monitor.stop(timeout=10)
    assert sqlite_project.events.list(kind="drift.checked")


def test_a_monitor_still_finishing_a_run_after_stop_is_not_started_twice(sqlite_project: ls.Project) -> None:
    """stop(timeout) forgot a thread still in its run, and start() cleared the stop flag it was waiting on:
    two threads then watched one monitor."""
    import threading

    from loopstack.core.errors import ConflictError

    release = threading.Event()
    monitor = Monitor(sqlite_project, "slow", reference=_data(0), current=_data(1))
    run = monitor.run
    monitor.run = lambda *args, **kwargs: (release.wait(10), run(*args, **kwargs))[1]  # a run that hangs
    monitor.start(0.01)
    monitor.stop(timeout=0.05)  # gives up waiting: the run is still going
    with pytest.raises(ConflictError, match="still finishing a run"):
        monitor.start(0.01)
    release.set()
    monitor.stop(timeout=10)
    monitor.start(0.01)  # finished: it starts again
    monitor.stop(timeout=10)


def test_adwin_settings_it_cannot_run_with_are_refused() -> None:
    from loopstack.drift import ADWIN

    for settings, named in (({"max_buckets": 1}, "max_buckets=1"), ({"delta": 0}, "delta=0"),
                            ({"clock": 0}, "clock=0")):
        with pytest.raises(ConfigError, match=named):
            ADWIN(**settings)
    assert ADWIN(max_buckets=np.int64(3)).max_buckets == 3


def test_reference_is_the_training_set_the_registry_recorded(sqlite_project: ls.Project, tmp_path) -> None:
    train = _data(0)
    path = tmp_path / "train.parquet"
    train.to_parquet(path)
    with ls.start_run(project=sqlite_project) as run:
        run.log_input(train, name=str(path), context="training")
        run.log_input(_data(9, n=10), name="holdout", context="evaluation")
        model = LogisticRegression().fit(train[["age"]], train["city"] == "a")
        run.log_model(model, "model", example=train[["age"]].head())
    ls.register_model(run.id, "model", name="fraud", alias="champion", project=sqlite_project)

    rows = training_datasets(sqlite_project, "fraud", "champion")
    assert [r["context"] for r in rows] == ["training", "evaluation"]
    assert load_reference(sqlite_project, "fraud").num_rows == 1500
    custom = load_reference(sqlite_project, "fraud", 1, loader=lambda row: train.head(row["num_rows"] // 3))
    assert custom.num_rows == 500
    monitor = Monitor.for_model(sqlite_project, "fraud", "champion", current=_data(7, shift=10))
    assert monitor.run().dataset_drift
    assert sqlite_project.events.list(kind="drift.checked")[0].subject == "fraud@champion"

    _data(1, n=20).to_parquet(path)  # the file changed under the recorded version
    with pytest.raises(IntegrityError, match="changed since training"):
        load_reference(sqlite_project, "fraud")
    with pytest.raises(NotFoundError, match="alias 'nope'"):
        load_reference(sqlite_project, "fraud", "nope")
