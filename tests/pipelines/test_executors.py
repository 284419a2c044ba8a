"""Executors: a process pool and Ray run the same pipeline with the same results, in parallel."""

from __future__ import annotations

import os
import time

import pytest

from loopstack.core.errors import ConfigError
from loopstack.core.project import Project
from loopstack.pipelines import (
    LocalExecutor,
    PipelineFailedError,
    ProcessExecutor,
    current_step,
    get_executor,
    pipeline,
    step,
)

OFFSET = 100  # a module constant the workers must see (the module travels by value)


@step
def numbers(n: int) -> list:
    return list(range(n))


@step
def slow_part(values: list, k: int) -> dict:
    time.sleep(0.4)
    current_step().log_metric("k", k)
    return {"k": k, "sum": sum(values) * k + OFFSET, "pid": os.getpid()}


@step
def gather(parts: list) -> dict:
    return {"total": sum(p["sum"] for p in parts), "pids": sorted({p["pid"] for p in parts})}


@pipeline
def fan(n: int = 5, width: int = 4):
    data = numbers(n)
    return gather([slow_part(data, k) for k in range(width)])


@step(retries=1, backoff_s=0)
def crash() -> int:
    raise ValueError("bad input in a worker")


@pipeline
def crashing():
    return crash()


def test_process_pool_runs_independent_steps_in_parallel(sqlite_project: Project) -> None:
    with ProcessExecutor(max_workers=4) as executor:
        executor.submit  # noqa: B018  (the pool exists before timing starts)
        started = time.perf_counter()
        run = fan.run(sqlite_project, executor=executor)
        elapsed = time.perf_counter() - started
    result = run.output()
    assert result["total"] == sum(sum(range(5)) * k + OFFSET for k in range(4))
    assert os.getpid() not in result["pids"]
    assert run.executed == ["numbers", "slow_part", "slow_part-2", "slow_part-3", "slow_part-4", "gather"]
    # four 0.4 s steps: serial would be 1.6 s plus overhead; parallel workers overlap them
    assert len(result["pids"]) >= 2
    assert elapsed < 1.6 + 6.0  # generous: worker start-up on a loaded 2-core machine
    local = fan.run(sqlite_project, executor=LocalExecutor())
    assert local.cached == local.executed + list(local.steps)  # same keys: every step cached
    assert local.output() == result


def test_a_failure_in_a_worker_is_reported_like_a_local_one(sqlite_project: Project) -> None:
    with ProcessExecutor(max_workers=1) as executor, pytest.raises(PipelineFailedError) as caught:
        crashing.run(sqlite_project, executor=executor)
    step_record = caught.value.run.steps["crash"]
    assert step_record.attempts == 2 and step_record.error == "ValueError: bad input in a worker"
    assert "ValueError: bad input in a worker" in caught.value.run.logs("crash")
    assert sqlite_project.events.list(kind="step.failed")[0].payload["attempts"] == 2


@step
def dies_once(marker: str) -> int:
    """Kill its own worker the first time, as the kernel's OOM killer would."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    return os.getpid()


@step
def always_dies() -> int:
    os.kill(os.getpid(), 9)
    return 0


@step
def pair(first: object, second: object) -> list:
    return [first, second]


@pipeline
def dying_once(marker: str):
    return pair(slow_part(numbers(3), 1), dies_once(marker))  # one worker dies while the other one works


@pipeline
def dying():
    return always_dies()


def test_a_task_whose_worker_died_runs_again_in_a_fresh_pool(sqlite_project: Project, tmp_path) -> None:
    # a killed worker broke the pool for good: the step failed and so did every step submitted after it
    with ProcessExecutor(max_workers=2) as executor:
        run = dying_once.run(sqlite_project, executor=executor, params={"marker": str(tmp_path / "died")})
        assert run.status == "finished" and (tmp_path / "died").exists()
        assert sorted(run.executed) == ["dies_once", "numbers", "pair", "slow_part"]
        with pytest.raises(PipelineFailedError) as caught:
            dying.run(sqlite_project, executor=executor)
        error = caught.value.run.steps["always_dies"].error
        assert "worker lost: BrokenProcessPool" in error and "its worker died 4 times" in error
        assert fan.run(sqlite_project, executor=executor, params={"width": 2}).status == "finished"  # still usable
    with ProcessExecutor(max_workers=1, worker_retries=0) as executor, pytest.raises(PipelineFailedError) as caught:
        dying.run(sqlite_project, executor=executor)
    assert "its worker died 1 times" in caught.value.run.steps["always_dies"].error


@step
def dies_soon() -> int:
    time.sleep(0.3)
    os.kill(os.getpid(), 9)
    return 0


@step
def healthy() -> int:
    time.sleep(1.0)  # still running in its own worker when the other one dies
    return 42


@pipeline
def beside_a_killer():
    return pair(dies_soon(), healthy())


def test_only_the_task_whose_worker_died_is_charged_for_it(sqlite_project: Project) -> None:
    """Every task in a broken pool was charged a death: a healthy step running beside a killer failed with
    "its worker died" although its own worker never did."""
    with ProcessExecutor(max_workers=2, worker_retries=0) as executor, pytest.raises(PipelineFailedError) as caught:
        beside_a_killer.run(sqlite_project, executor=executor)
    steps = caught.value.run.steps
    assert "its worker died 1 times" in steps["dies_soon"].error
    assert steps["healthy"].status == "finished" and steps["healthy"].error is None


def test_executors_are_chosen_by_name() -> None:
    assert get_executor(None).name == "local"
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        get_executor("dask")
    with pytest.raises(ConfigError, match="is not an executor"):
        get_executor(object())  # type: ignore[arg-type]


@pytest.mark.slow
def test_ray_runs_the_same_pipeline(sqlite_project: Project) -> None:
    pytest.importorskip("ray")
    from loopstack.pipelines.executors.ray import RayExecutor

    executor = RayExecutor(num_cpus=2)
    try:
        run = fan.run(sqlite_project, executor=executor, params={"width": 2})
    finally:
        executor.close()
    assert run.output()["total"] == sum(sum(range(5)) * k + OFFSET for k in range(2))
    assert run.executed == ["numbers", "slow_part", "slow_part-2", "gather"]
    assert os.getpid() not in run.output()["pids"]
