"""Pipelines: per-step overhead, cached re-runs and a partial re-run, loopstack vs Prefect.

Every number in bench/RESULTS.md "Pipelines" comes from one run of::

    bash bench/anchors.sh prefect                 # Prefect 3 in bench/.anchors/prefect, the anchor
    .venv/bin/python bench/pipelines.py           # 40 steps
    .venv/bin/python bench/pipelines.py --quick   # 10 steps, a smoke run

The workload is a chain of N small steps over 1,000 numbers (each adds its
index), in process, with caching on in both tools (Prefect:
``cache_policy=INPUTS + TASK_SOURCE``, results persisted; loopstack: the
default). Three runs per tool, on fresh state: cold (every step runs),
warm (every step is a cache hit), and a partial re-run where the step in the
middle gets a new parameter so it and every step after it run again. Both
tools must return the same final sum and skip the same number of steps.
Each tool first runs a one-step warm-up flow that is not timed (Prefect:
starting its ephemeral API server; loopstack: imports and the environment
capture of the first tracked run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ANCHOR_PYTHON = HERE / ".anchors" / "prefect" / "bin" / "python"

PREFECT_SCRIPT = r'''
import json, os, sys, time
from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

STEPS = int(sys.argv[1])

@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def source(n: int) -> list:
    return list(range(n))

@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def add(values: list, k: int) -> list:
    return [v + k for v in values]

@flow(log_prints=False)
def chain(bump: int = 0):
    values = source(1000)
    states = []
    for i in range(STEPS - 1):
        values = add(values, i + (bump if i >= (STEPS - 1) // 2 else 0))
    return sum(values)

def run(bump):
    started = time.perf_counter()
    state = chain(bump=bump, return_state=True)
    elapsed = time.perf_counter() - started
    return state.result(), elapsed

@flow
def warm_up():
    return 0

warm_up()  # starts the ephemeral API server: not part of any timing

from prefect.client.orchestration import get_client
results = {}
for name, bump in (("cold", 0), ("warm", 0), ("partial", 1)):
    total, elapsed = run(bump)
    results[name] = {"total": total, "seconds": elapsed}
import asyncio
async def cached_counts():
    from prefect.client.schemas.filters import FlowRunFilter
    async with get_client() as client:
        runs = await client.read_flow_runs(sort="START_TIME_ASC")
        counts = []
        for fr in runs[1:]:
            trs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [fr.id]}))
            counts.append(sum(1 for t in trs if t.state and t.state.name == "Cached"))
        return counts
counts = asyncio.run(cached_counts())
for name, count in zip(("cold", "warm", "partial"), counts[-3:]):
    results[name]["cached"] = count
import prefect
results["version"] = prefect.__version__
print(json.dumps(results))
'''


def loopstack_run(steps: int, root: Path) -> dict[str, Any]:
    import loopstack as ls
    from loopstack.pipelines import pipeline, step

    @step
    def source(n: int) -> list:
        return list(range(n))

    @step
    def add(values: list, k: int) -> list:
        return [v + k for v in values]

    @pipeline
    def chain(bump: int = 0):
        values = source(1000)
        for i in range(steps - 1):
            values = add(values, i + (bump if i >= (steps - 1) // 2 else 0))
        return values

    @step
    def noop() -> int:
        return 0

    @pipeline
    def warm_up():
        return noop()

    project = ls.Project.init(root, name="bench-pipelines")
    warm_up.run(project)  # imports, schema and the once-per-process environment capture: not timed
    results: dict[str, Any] = {}
    try:
        for name, bump in (("cold", 0), ("warm", 0), ("partial", 1)):
            started = time.perf_counter()
            run = chain.run(project, params={"bump": bump})
            elapsed = time.perf_counter() - started
            results[name] = {"total": sum(run.output()), "seconds": elapsed, "cached": len(run.cached)}
    finally:
        project.close()
    return results


def prefect_run(steps: int, home: Path) -> dict[str, Any] | None:
    if not ANCHOR_PYTHON.exists():
        print("Prefect anchor missing: run `bash bench/anchors.sh prefect`", file=sys.stderr)
        return None
    script = home / "prefect_chain.py"
    script.write_text(PREFECT_SCRIPT)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # the server starts slowly on a loaded box
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
    }
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([str(ANCHOR_PYTHON), str(script), str(steps)], capture_output=True, text=True, env=env,
                          timeout=1800, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit("the Prefect run failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (10 if args.quick else 40)
    with tempfile.TemporaryDirectory() as folder:
        ours = loopstack_run(steps, Path(folder) / "ls")
        theirs = prefect_run(steps, Path(folder))
    print(f"chain of {steps} steps over 1,000 numbers, in process")
    header = f"{'run':<8} {'loopstack s':>12} {'ms/step':>8} {'cached':>6}"
    print(header + f"   {'prefect s':>10} {'ms/step':>8} {'cached':>6} {'ratio':>6}")
    for name in ("cold", "warm", "partial"):
        mine = ours[name]
        line = f"{name:<8} {mine['seconds']:>12.3f} {1000 * mine['seconds'] / steps:>8.1f} {mine['cached']:>6}"
        if theirs is not None:
            other = theirs[name]
            assert other["total"] == mine["total"], (name, other["total"], mine["total"])
            assert other["cached"] == mine["cached"], (name, other["cached"], mine["cached"])
            line += (f"   {other['seconds']:>10.3f} {1000 * other['seconds'] / steps:>8.1f} {other['cached']:>6}"
                     f" {other['seconds'] / mine['seconds']:>6.1f}x")
        print(line)
    if theirs is not None:
        print(f"same totals and cache hits in both; prefect {theirs['version']}; ratio = prefect time / loopstack time")


if __name__ == "__main__":
    main()
