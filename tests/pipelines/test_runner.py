"""Running: retries with backoff, failures and their events, tracked runs, logs, outputs and types."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

import loopstack as ls
from loopstack.core.errors import ConfigError, ValidationError
from loopstack.core.project import Project
from loopstack.pipelines import PipelineFailedError, current_step, pipeline, step
from loopstack.pipelines import task as task_module


class Flaky:
    """Fails the first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"transient failure {self.calls}")
        return self.calls


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(task_module, "wait_before_retry", waited.append)
    return waited


def test_retries_back_off_exponentially_then_succeed(sqlite_project: Project, sleeps: list[float]) -> None:
    flaky = Flaky(failures=3)

    @step(retries=4, backoff_s=0.5, backoff_factor=2.0, max_backoff_s=1.5)
    def fetch() -> int:
        return flaky()

    @pipeline
    def p():
        return fetch()

    run = p.run(sqlite_project)
    assert run.output() == 4
    assert sleeps == [0.5, 1.0, 1.5]  # 0.5 * 2**n, capped at 1.5
    assert run.steps["fetch"].attempts == 4
    finished = sqlite_project.events.list(kind="step.finished")[0]
    assert finished.payload["retried"] == [f"ConnectionError: transient failure {i}" for i in (1, 2, 3)]
    assert "attempt 1 failed" in run.logs("fetch")


def test_errors_outside_retry_on_fail_at_once(sqlite_project: Project, sleeps: list[float]) -> None:
    @step(retries=5, retry_on=(ConnectionError,))
    def broken() -> int:
        raise KeyError("missing column")

    @pipeline
    def p():
        return broken()

    with pytest.raises(PipelineFailedError, match="after 1 attempt") as caught:
        p.run(sqlite_project)
    assert sleeps == []
    assert caught.value.run.steps["broken"].attempts == 1


def test_a_retry_sees_fresh_inputs_and_parameters_not_what_the_failed_attempt_mutated(
    sqlite_project: Project, sleeps: list[float]
) -> None:
    """Each attempt gets the inputs and parameters the step was called with; before, the retry saw the
    rows the failed attempt had appended to, and that wrong result was cached."""
    flaky = Flaky(failures=1)

    @step
    def load() -> list:
        return [1, 2, 3]

    @step(retries=1, backoff_s=0)
    def total(rows: list, extra: list) -> int:
        rows.append(100)  # an in-place clean-up before a flaky call
        extra.append(1000)
        flaky()
        return sum(rows) + sum(extra)

    @pipeline
    def p(extra: list = [10]):  # noqa: B006 - the default is what the step must not see mutated
        return total(load(), extra)

    run = p.run(sqlite_project)
    assert run.steps["total"].attempts == 2
    assert run.output() == 6 + 100 + 10 + 1000
    assert p.run(sqlite_project).output() == 1116  # the cached result is the right one


def test_a_failure_emits_events_with_causes_and_skips_downstream(sqlite_project: Project) -> None:
    @step
    def ok() -> int:
        return 1

    @step(retries=1, backoff_s=0)
    def fails(x: int) -> int:
        print("about to fail")
        raise RuntimeError("disk full")

    @step
    def after(x: int) -> int:
        return x

    @pipeline
    def p():
        return after(fails(ok()))

    with pytest.raises(PipelineFailedError, match=r"step 'fails' after 2 attempt.*disk full") as caught:
        p.run(sqlite_project, cause=None)
    run = caught.value.run
    assert run.status == "failed" and run.executed == ["ok", "fails"]
    events = sqlite_project.events
    failed = events.list(kind="step.failed")[0]
    assert failed.subject == "fails" and failed.payload["error"] == "RuntimeError: disk full"
    assert failed.cause == run.started_event
    end = events.list(kind="pipeline.failed")[0]
    assert end.payload["failed_step"] == "fails" and end.payload["skipped"] == ["after"]
    assert [e.kind for e in events.chain(end.id)] == ["pipeline.started", "pipeline.failed"]
    logs = run.logs("fails")
    assert "about to fail" in logs and "RuntimeError: disk full" in logs
    client = ls.Client(sqlite_project)
    assert client.get_run(run.tracking_run_id).info.status == "FAILED"


def test_the_run_is_tracked_with_a_child_run_per_step(sqlite_project: Project) -> None:
    @step
    def train(lr: float) -> float:
        ls.log_metric("loss", 0.25)  # in process, the step's own run is the active run
        current_step().log_metric("lr_seen", lr)
        return lr

    @pipeline
    def p(lr: float = 0.1):
        return train(lr)

    run = p.run(sqlite_project, params={"lr": 0.3})
    client = ls.Client(sqlite_project)
    parent = client.get_run(run.tracking_run_id)
    assert parent.params["lr"] == "0.3" and parent.info.status == "FINISHED"
    child = client.get_run(run.steps["train"].tracking_run_id)
    assert child.info.parent_id == parent.info.id
    assert child.metrics["loss"] == 0.25 and child.metrics["lr_seen"] == 0.3
    assert child.tags["loopstack.step"] == "train"


def test_pipelines_run_in_threads_of_one_process_get_their_own_runs(sqlite_project: Project) -> None:
    """With one process-wide run stack, the second pipeline nested under the first one's run, or its steps
    refused to start ("already active")."""
    import threading

    both_running = threading.Barrier(2)

    @step
    def work(name: str) -> str:
        both_running.wait(10)  # the two pipelines' runs are open at once
        ls.log_metric("done", 1.0)
        return name

    @pipeline
    def job(name: str = "x"):
        return work(name)

    runs: dict[str, object] = {}
    threads = [threading.Thread(target=lambda n=name: runs.update({n: job.run(sqlite_project, params={"name": n})}))
               for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    client = ls.Client(sqlite_project)
    for name, run in runs.items():
        assert run.output() == name
        parent = client.get_run(run.tracking_run_id)
        assert parent.info.parent_id is None and parent.info.status == "FINISHED"
        child = client.get_run(run.steps["work"].tracking_run_id)
        assert child.info.parent_id == parent.info.id and child.metrics["done"] == 1.0
    assert sorted(runs) == ["a", "b"]


def test_step_logs_capture_print_and_logging(sqlite_project: Project) -> None:
    @step
    def chatty() -> int:
        print("hello from print")
        logging.getLogger("user.code").info("hello from logging")
        return 0

    @pipeline
    def p():
        return chatty()

    run = p.run(sqlite_project)
    logs = run.logs("chatty")
    assert "hello from print" in logs and "INFO user.code: hello from logging" in logs
    assert logging.getLogger().level == logging.WARNING  # the root level is restored


def test_several_outputs_fan_out_and_a_list_fans_in(sqlite_project: Project) -> None:
    @step(outputs=("train", "test"))
    def split(n: int) -> tuple:
        values = list(range(n))
        return values[: n // 2], values[n // 2 :]

    @step
    def size(values: list) -> int:
        return len(values)

    @step
    def add(parts: list[int]) -> int:
        return sum(parts)

    @pipeline
    def p(n: int = 10):
        train, test = split(n)
        return {"train": size(train), "total": add([size(train), size(test)])}

    run = p.run(sqlite_project)
    assert run.output("train") == 5 and run.output("total") == 10
    assert [n.id for n in p.build().nodes] == ["split", "size", "size-2", "size-3", "add"]


def test_tables_and_arrays_are_stored_as_parquet_and_npy(sqlite_project: Project) -> None:
    @step
    def frame() -> pa.Table:
        return pa.table({"x": [1, 2, 3]})

    @step
    def to_pandas(table: pa.Table) -> object:
        return table.to_pandas().assign(y=lambda d: d.x * 2)

    @step
    def array(frame: object) -> np.ndarray:
        return frame["y"].to_numpy()

    @pipeline
    def p():
        return array(to_pandas(frame()))

    run = p.run(sqlite_project)
    formats = [run.steps[name].outputs[0]["format"] for name in ("frame", "to_pandas", "array")]
    assert formats == ["arrow", "pandas", "npy"]
    np.testing.assert_array_equal(run.output(), [2, 4, 6])


def test_types_are_checked_when_building_and_when_returning(sqlite_project: Project) -> None:
    @step
    def text() -> str:
        return "a"

    @step
    def number(x: int) -> int:
        return x

    @pipeline
    def mismatched():
        return number(text())

    with pytest.raises(ValidationError, match="'number' parameter 'x' expects int, but 'text' returns str"):
        mismatched.build()

    @step
    def lies() -> int:
        return "not an int"  # type: ignore[return-value]

    @pipeline
    def p():
        return lies()

    with pytest.raises(PipelineFailedError, match="annotated to return int but returned str"):
        p.run(sqlite_project)


def test_misuse_is_reported_clearly() -> None:
    @step
    def one() -> int:
        return 1

    @pipeline
    def branches():
        if one():
            return one()
        return None

    with pytest.raises(ValidationError, match="no truth value"):
        branches.build()

    @pipeline
    def empty(n: int = 1):
        return n

    with pytest.raises(ValidationError, match="called no steps"):
        empty.build()
    with pytest.raises(ConfigError, match="its parameters are"):
        empty.build(m=2)
    with pytest.raises(ConfigError, match="retries"):
        step(retries=-1)(lambda: 1)


def test_a_pipeline_called_inside_a_pipeline_inlines_its_steps(sqlite_project: Project) -> None:
    @step
    def base() -> int:
        return 2

    @step
    def square(x: int) -> int:
        return x * x

    @pipeline
    def inner():
        return square(base())

    @pipeline
    def outer():
        return square(inner())

    assert outer.run(sqlite_project).output() == 16
    assert [n.id for n in outer.build().nodes] == ["base", "square", "square-2"]


def test_outputs_from_another_build_or_nested_deeper_are_refused(sqlite_project: Project) -> None:
    @step
    def part(k: int) -> list:
        return [k] * 3

    @step
    def count(groups: list) -> int:
        return sum(len(g) for g in groups)

    @pipeline
    def nested():
        return count([[part(1)], [part(2)]])

    with pytest.raises(ValidationError, match="mixes step outputs"):
        nested.build()

    kept: dict = {}

    @pipeline
    def leaky(n: int = 3):
        kept.setdefault("part", part(n))
        return count([kept["part"]])

    leaky.build()
    with pytest.raises(ValidationError, match="another build"):
        leaky.build(n=4)


def test_sys_exit_in_a_step_fails_the_step_not_the_caller(sqlite_project: Project) -> None:
    @step
    def parse(argv: list) -> dict:
        import argparse

        parser = argparse.ArgumentParser(prog="parse")
        parser.add_argument("--days", type=int, required=True)
        return vars(parser.parse_args(argv))

    @pipeline
    def p():
        return parse(["--dayz", "3"])

    with pytest.raises(PipelineFailedError) as caught:
        p.run(sqlite_project)
    assert caught.value.run.steps["parse"].error == "SystemExit: 2"
    assert ls.pipelines.get_run(sqlite_project, caught.value.run.id).status == "failed"


def test_a_step_that_cannot_be_submitted_fails_and_the_run_is_recorded(sqlite_project: Project) -> None:
    import threading
    from concurrent.futures import Future

    class Refusing:
        name, inline = "refusing", False

        def submit(self, task: object) -> Future:
            raise TypeError("cannot pickle '_thread.lock' object")

        def close(self) -> None:
            pass

    @step
    def use(lock: object) -> int:
        return 1

    @pipeline
    def p():
        return use(threading.Lock())

    with pytest.raises(PipelineFailedError, match="could not start: TypeError"):
        p.run(sqlite_project, executor=Refusing())
    (record,) = ls.pipelines.list_runs(sqlite_project)
    assert record.status == "failed"
    assert [s.status for s in ls.pipelines.get_run(sqlite_project, record.id).steps] == ["failed"]


def test_a_frame_parquet_cannot_hold_is_pickled_instead(sqlite_project: Project) -> None:
    import pandas as pd

    @step
    def make() -> pd.DataFrame:
        return pd.DataFrame({"id": [1, "a", 2.5]})

    @step
    def size(frame: pd.DataFrame) -> int:
        return len(frame)

    @pipeline
    def p():
        return size(make())

    run = p.run(sqlite_project)
    assert run.output() == 3 and run.steps["make"].outputs[0]["format"] == "pickle"


def test_steps_in_two_threads_keep_their_own_logs_and_stdout_is_restored(sqlite_project: Project) -> None:
    import sys
    import threading
    import time

    from loopstack.pipelines.task import Task, execute

    @step
    def talk(tag: str) -> str:
        for i in range(5):
            print(f"{tag}-{i}")
            logging.getLogger("talk").warning("%s-log", tag)
            time.sleep(0.01)
        return tag

    before = sys.stdout
    results = {}

    def go(tag: str) -> None:
        task = Task(tag, tag, talk, {"tag": tag}, {}, str(sqlite_project.artifacts.root), "run")
        results[tag] = execute(task)

    threads = [threading.Thread(target=go, args=(tag,)) for tag in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sys.stdout is before
    for tag, other in (("A", "B"), ("B", "A")):
        logs = sqlite_project.artifacts.get_bytes(results[tag].logs_digest).decode()
        assert f"{tag}-4" in logs and f"{tag}-log" in logs and f"{other}-" not in logs
