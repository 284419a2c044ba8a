import math
import random
from pathlib import Path

import numpy as np
import pytest

import loopstack as ls
from loopstack.core.errors import ConflictError, NotFoundError, ValidationError
from loopstack.core.project import Project


def test_run_logs_params_metrics_tags_and_reads_them_back(project: Project) -> None:
    ls.set_experiment("fraud")
    with ls.start_run(run_name="baseline", params={"lr": 0.01, "depth": 6}, tags={"team": "risk"}) as run:
        for step in range(5):
            ls.log_metric("loss", 1.0 / (step + 1), step=step)
        ls.log_metrics({"auc": 0.91, "f1": 0.7}, step=4)
        ls.set_tag("stage", "dev")
    stored = ls.Client(project).get_run(run.id)
    assert stored.info.name == "baseline"
    assert stored.status == "FINISHED"
    assert stored.params == {"lr": "0.01", "depth": "6"}
    assert stored.metrics["loss"] == pytest.approx(0.2)
    assert stored.metrics["auc"] == 0.91
    assert stored.tags["team"] == "risk" and stored.tags["stage"] == "dev"
    assert ls.Client(project).get_experiment_by_name("fraud").id == stored.info.experiment_id


def test_metric_history_keeps_every_point_in_step_order(project: Project) -> None:
    with ls.start_run() as run:
        steps = list(range(200))
        random.Random(1).shuffle(steps)
        for step in steps:
            run.log_metric("acc", step / 200, step=step)
    history = ls.Client(project).get_metric_history(run.id, "acc")
    assert [m.step for m in history] == list(range(200))
    assert [m.value for m in history] == [s / 200 for s in range(200)]


def test_latest_metric_is_highest_step_not_last_logged(project: Project) -> None:
    with ls.start_run() as run:
        run.log_metric("loss", 0.1, step=10)
        run.log_metric("loss", 0.9, step=3)  # logged later, earlier step
    assert ls.Client(project).get_run(run.id).metrics["loss"] == 0.1


def test_nan_and_infinity_survive_the_round_trip(project: Project) -> None:
    with ls.start_run() as run:
        run.log_metric("a", float("nan"), step=0)
        run.log_metric("b", float("inf"), step=0)
    history = ls.Client(project).get_metric_history(run.id, "a")
    assert math.isnan(history[0].value)
    assert ls.Client(project).get_run(run.id).metrics["b"] == math.inf


def test_params_are_immutable(project: Project) -> None:
    with ls.start_run():
        ls.log_param("lr", 0.1)
        ls.log_param("lr", 0.1)  # same value is fine
        with pytest.raises(ConflictError, match="immutable"):
            ls.log_param("lr", 0.2)


@pytest.mark.parametrize("key", ["", "a;DROP TABLE runs", "../x", "x" * 300, "-leading"])
def test_bad_keys_are_rejected(project: Project, key: str) -> None:
    with ls.start_run(), pytest.raises(ValidationError, match="invalid metric key"):
        ls.log_metric(key, 1.0)


def test_non_numeric_metric_is_rejected(project: Project) -> None:
    with ls.start_run(), pytest.raises(ValidationError, match="pass a number"):
        ls.log_metric("acc", "high")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("step", "timestamp", "value", "message"),
    [
        (2**70, None, 1.0, "step"),
        (float("nan"), None, 1.0, "step"),
        (1.5, None, 1.0, "step"),
        ("three", None, 1.0, "step"),
        (0, float("nan"), 1.0, "timestamp"),
        (0, float("inf"), 1.0, "timestamp"),
        (0, None, 10**400, "pass a number"),
    ],
)
def test_a_point_the_database_cannot_hold_is_refused_and_the_run_keeps_its_other_points(
    project: Project, step: object, timestamp: object, value: object, message: str
) -> None:
    """One bad point used to be buffered, fail every flush after it, and lose the whole run."""
    with ls.start_run() as run:
        run.log_metric("loss", 0.5, step=1)
        with pytest.raises(ValidationError, match=message):
            run.log_metric("bad", value, step=step, timestamp=timestamp)  # type: ignore[arg-type]
        run.log_metric("loss", 0.25, step=2)
    stored = ls.Client(project).get_run(run.id)
    assert stored.status == "FINISHED"
    assert stored.metrics["loss"] == 0.25 and "bad" not in stored.metrics


@pytest.mark.parametrize("timestamp", ["x", float("nan"), [1.0]], ids=["text", "nan", "list"])
def test_log_metrics_checks_its_timestamp_as_log_metric_does(sqlite_project: Project, timestamp: object) -> None:
    """log_metrics called float() on it: 'x' raised a bare ValueError naming no metric and no fix."""
    with ls.start_run() as run:
        run.log_metrics({"b": 2.0}, timestamp=12.5)
        with pytest.raises(ValidationError, match=r"metric 'a' got timestamp .*pass epoch seconds as a finite number"):
            run.log_metrics({"a": 1.0}, timestamp=timestamp)  # type: ignore[arg-type]
    assert [m.timestamp for m in ls.Client(sqlite_project).get_metric_history(run.id, "b")] == [12.5]


@pytest.mark.parametrize("value", ["a\x00b", "data/\udcff.csv"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("kind", ["param", "tag"])
def test_a_text_the_database_cannot_store_is_refused_and_the_run_keeps_its_other_values(
    project: Project, kind: str, value: str
) -> None:
    """PostgreSQL text cannot hold NUL and no backend can encode a lone surrogate (os.fsdecode makes them
    from undecodable file names); such a value used to fail every later flush, and the run was lost."""
    with ls.start_run() as run:
        run.log_metric("loss", 0.5)
        log = run.log_param if kind == "param" else run.set_tag
        with pytest.raises(ValidationError, match=f"{kind} 'source'.*cannot store"):
            log("source", value)
        log("kept", "yes")
    stored = ls.Client(project).get_run(run.id)
    assert stored.status == "FINISHED" and stored.metrics["loss"] == 0.5
    assert (stored.params if kind == "param" else stored.tags)["kept"] == "yes"


@pytest.mark.parametrize(("name", "position"), [("a\x00b", 1), ("data-\udcff", 5)], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("kind", ["run", "experiment"])
def test_a_name_the_database_cannot_store_is_refused_with_its_position(
    project: Project, kind: str, name: str, position: int
) -> None:
    """Such a run or experiment name failed with the driver's raw error (PostgreSQL's, or UnicodeEncodeError)."""
    start = {"run_name": name} if kind == "run" else {"experiment": name}
    with pytest.raises(ValidationError, match=f"{kind} name .* at position {position}, which the metadata database"):
        ls.start_run(**start)
    assert ls.active_run() is None
    with ls.start_run(run_name="fine") as run:
        run.log_metric("loss", 0.5)
    assert ls.Client(project).get_run(run.id).status == "FINISHED"


def test_ending_with_a_bad_status_leaves_the_run_open_to_end_properly(project: Project) -> None:
    """The run used to count as ended (so a second end did nothing) while its row stayed RUNNING."""
    run = ls.start_run()
    with pytest.raises(ValidationError, match="invalid run status 'DONE'"):
        run.end("DONE")
    ls.end_run("FINISHED")
    assert ls.active_run() is None
    assert ls.Client(project).get_run(run.id).status == "FINISHED"


def test_a_run_ended_by_its_own_end_is_no_longer_the_active_run(project: Project) -> None:
    """ActiveRun.end left the run on the fluent stack, so the next start_run said it 'is already active'."""
    parent = ls.start_run()
    child = ls.start_run(nested=True)
    child.end()
    assert ls.active_run() is parent
    grandchild = ls.start_run(nested=True)
    parent.end("FAILED")  # the runs nested in it end with it, as with end_run
    assert ls.active_run() is None
    with ls.start_run() as later:
        later.log_metric("loss", 0.5)
    client = ls.Client(project)
    statuses = [client.get_run(r.id).status for r in (parent, child, grandchild, later)]
    assert statuses == ["FAILED", "FINISHED", "FAILED", "FINISHED"]


def test_integral_steps_of_any_numeric_type_are_kept(project: Project) -> None:
    with ls.start_run() as run:
        run.log_metric("loss", 0.5, step=np.int64(3))  # type: ignore[arg-type]
        run.log_metric("loss", 0.25, step=4.0)  # type: ignore[arg-type]
    assert [m.step for m in ls.Client(project).get_metric_history(run.id, "loss")] == [3, 4]


def test_nested_runs_record_their_parent(project: Project) -> None:
    with ls.start_run(run_name="sweep") as parent:
        with pytest.raises(ValidationError, match="nested=True"):
            ls.start_run()
        for i in range(2):
            with ls.start_run(nested=True, params={"i": i}) as child:
                assert ls.active_run() is child
        assert ls.active_run() is parent
    children = ls.Client(project).search_runs(f"parent_id = '{parent.id}'")
    assert sorted(r.params["i"] for r in children) == ["0", "1"]


def test_threads_each_get_their_own_runs_and_a_helper_thread_logs_to_the_main_run(project: Project) -> None:
    """The run stack was process-wide: a second thread's start_run refused ("already active") or, with
    nested=True, nested under whatever run another thread happened to have open."""
    import threading

    started, finish = threading.Barrier(2), threading.Event()
    runs: dict[str, str] = {}

    def train(name: str) -> None:
        with ls.start_run(run_name=name) as run:  # both open at the same time
            started.wait(10)
            for step in range(3):
                ls.log_metric("loss", 1.0 / (step + 1), step=step)
            runs[name] = run.id
            finish.wait(10)

    threads = [threading.Thread(target=train, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    while len(runs) < 2 and all(t.is_alive() for t in threads):
        threading.Event().wait(0.01)
    assert ls.active_run() is None  # the main thread has no run: another thread's is not this one's
    finish.set()
    for thread in threads:
        thread.join(10)
    client = ls.Client(project)
    for name, run_id in runs.items():
        stored = client.get_run(run_id)
        assert stored.info.name == name and stored.info.parent_id is None and stored.info.status == "FINISHED"
        assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5, 1 / 3]
    with ls.start_run() as main:
        helper = threading.Thread(target=ls.log_metric, args=("rows_loaded", 128))  # a data-loader thread
        helper.start()
        helper.join(10)
        child = []
        nested = threading.Thread(target=lambda: child.append(ls.start_run(nested=True)))
        nested.start()
        nested.join(10)
        child[0].end()
    assert client.get_run(main.id).metrics["rows_loaded"] == 128
    assert client.get_run(child[0].id).info.parent_id == main.id


def test_a_run_left_open_by_an_exited_thread_is_not_a_later_threads(project: Project) -> None:
    """Stacks were keyed by thread id, which Python reuses: a new thread inherited a dead one's open run and
    its start_run refused ("already active")."""
    import threading

    leaked: list[str] = []
    seen: list[object] = []

    def leaky() -> None:
        leaked.append(ls.start_run(run_name="leaked").id)  # never ended

    def fresh() -> None:
        seen.append(ls.active_run())
        with ls.start_run(run_name="fresh") as run:
            seen.append(run.info.parent_id)

    for target in (leaky, fresh):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join(10)
    assert seen == [None, None]
    assert ls.Client(project).get_run(leaked[0]).info.status == "FAILED"  # its thread exited without ending it


def test_ending_a_run_ends_its_children_in_other_threads(project: Project) -> None:
    import threading

    children: list[object] = []
    with ls.start_run() as parent:
        helper = threading.Thread(target=lambda: children.append(ls.start_run(nested=True)))
        helper.start()
        helper.join(10)
    client = ls.Client(project)
    assert client.get_run(children[0].id).info.parent_id == parent.id
    assert client.get_run(children[0].id).info.status == "FINISHED"  # was left RUNNING after its parent ended
    assert ls.active_run() is None


def test_failed_block_marks_run_failed(project: Project) -> None:
    with pytest.raises(RuntimeError), ls.start_run() as run:
        raise RuntimeError("boom")
    assert ls.Client(project).get_run(run.id).status == "FAILED"
    assert ls.active_run() is None


def test_resume_by_id_continues_the_same_run(project: Project) -> None:
    with ls.start_run(params={"lr": 0.1}) as run:
        run.log_metric("loss", 0.5, step=1)
    with ls.start_run(run_id=run.id) as resumed:
        assert resumed.id == run.id
        with pytest.raises(ConflictError):
            resumed.log_param("lr", 0.2)
        resumed.log_metric("loss", 0.4, step=2)
    history = ls.Client(project).get_metric_history(run.id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.4)]
    kinds = [e.kind for e in project.events.list(subject=run.id, newest_first=False)]
    assert kinds == ["run.started", "run.finished", "run.resumed", "run.finished"]


def test_a_run_another_process_resumed_after_our_check_is_not_resumed_again(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The liveness check ran in a read before the write that takes the run: two processes could both
    resume one ended run. Another process takes it just before our write begins: ours must refuse."""
    import contextlib
    import time

    with ls.start_run() as run:
        pass
    store, write = project.tracking, project.db.write
    runs = store.t("runs")

    @contextlib.contextmanager
    def taken_by_another_process_first():
        with write() as connection:  # a live process on another host resumes it and commits
            taken = {"status": "RUNNING", "end_time": None, "host": "elsewhere", "pid": 1, "heartbeat": time.time()}
            connection.execute(runs.update().where(runs.c.id == run.id).values(taken))
        with write() as connection:
            yield connection

    monkeypatch.setattr(project.db, "write", taken_by_another_process_first)
    with pytest.raises(ConflictError, match=f"run {run.id} is still running in another live process"):
        store.resume_run(run.id)
    monkeypatch.undo()
    with project.db.read() as connection:
        owner = connection.execute(runs.select().where(runs.c.id == run.id)).one()
    assert (owner.status, owner.host, owner.pid) == ("RUNNING", "elsewhere", 1)
    assert [e.kind for e in project.events.list(subject=run.id)].count("run.resumed") == 0


def test_logging_without_a_run_says_how_to_start_one(project: Project) -> None:
    with pytest.raises(NotFoundError, match="start_run"):
        ls.log_param("a", 1)


def test_artifacts_are_stored_verified_and_listed(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.txt").write_text("beta")
    with ls.start_run() as run:
        ls.log_artifacts(folder, "reports")
        ls.log_dict({"k": 1}, "config.json")
    client = ls.Client(project)
    paths = [a["path"] for a in client.list_artifacts(run.id) if not a["path"].startswith("loopstack/")]
    assert paths == ["config.json", "reports/a.txt", "reports/sub/b.txt"]
    assert client.read_artifact(run.id, "reports/sub/b.txt") == b"beta"
    target = client.download_artifact(run.id, "reports/a.txt", tmp_path)
    assert target.read_text() == "alpha"


def test_reproducibility_is_captured_without_asking(project: Project) -> None:
    with ls.start_run() as run:
        ls.log_metric("loss", 0.3, step=1)
        ls.log_metric("loss", 0.2, step=2)
    stored = ls.Client(project).get_run(run.id)
    for tag in ("loopstack.python", "loopstack.os", "loopstack.cpu", "loopstack.packages_sha256", "loopstack.source"):
        assert stored.tags[tag]
    assert stored.tags["loopstack.git.commit"]  # the test suite runs inside the loopstack checkout
    assert stored.metrics["system.peak_rss_mb"] > 10
    assert stored.metrics["system.duration_s"] >= 0
    assert "system.step_time_mean_s" in stored.metrics
    environment = ls.Client(project).read_artifact(run.id, "loopstack/environment.json")
    assert b"numpy==" in environment


def test_later_runs_reuse_the_capture_and_restore_a_deleted_environment_blob(project: Project) -> None:
    with ls.start_run() as first:
        pass
    client = ls.Client(project)
    digest = project.tracking.artifact_digest(first.id, "loopstack/environment.json")
    Path(project.artifacts.path_of(digest)).unlink()  # e.g. garbage-collected between two runs
    with ls.start_run() as second:
        pass
    assert client.get_run(second.id).tags == client.get_run(first.id).tags  # same process, same capture
    assert project.tracking.artifact_digest(second.id, "loopstack/environment.json") == digest
    assert b"numpy==" in client.read_artifact(second.id, "loopstack/environment.json")


def test_seed_everything_reproduces_and_is_recorded(project: Project) -> None:
    ls.seed_everything(1234)
    first = (random.random(), np.random.rand())
    ls.seed_everything(1234)
    assert (random.random(), np.random.rand()) == first
    with ls.start_run() as run:
        pass
    assert ls.Client(project).get_run(run.id).tags["loopstack.seed"] == "1234"


def test_dataset_versions_hash_content_and_record_stats(project: Project) -> None:
    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, 1, 1]})
    with ls.start_run() as run:
        first = ls.log_input(frame, name="train", targets="label")
        same = ls.log_input(frame.copy(), name="train-again", context="eval", targets="label")
        changed = ls.log_input(frame.assign(x=[1.0, 2.0, 3.0, 5.0]), name="train-v2", targets="label")
    assert first == same != changed
    stored = ls.Client(project).get_run(run.id)
    assert {(i["context"], i["rows"]) for i in stored.inputs} >= {("training", 4), ("eval", 4)}
    with project.db.read() as connection:
        stats = connection.execute(project.db.table("datasets").select()).first().stats
    assert stats["label_balance"] == {"0": 0.25, "1": 0.75}


def test_read_dataset_records_the_file_version(project: Project, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    with ls.start_run() as run:
        table = ls.read_dataset(path)
    assert table.num_rows == 3
    assert ls.Client(project).get_run(run.id).inputs[0]["rows"] == 3
