"""Tracking vs MLflow: logging, run creation, search, metric history, first call, import.

One command runs both tools on the same generated workload, each in its own
fresh process (loopstack in ``.venv``, MLflow in ``bench/.anchors/mlflow`` with
a SQLite backend store), reads every logged value back from both, checks them
against the workload, and prints one table of times and ratios::

    bash bench/anchors.sh mlflow
    .venv/bin/python bench/tracking.py            # full run (about 2 minutes)
    .venv/bin/python bench/tracking.py --quick    # small smoke run
    .venv/bin/python bench/tracking.py --no-anchor  # loopstack alone
    .venv/bin/python bench/tracking.py --first-call  # only the fresh-process probes (seconds)

Both sides run the same driver code (`Side` adapters below), so the loops,
the timing and the read-back are identical. The timed region of a logging
workload runs from ``start_run`` to the return of ``end_run``, which in
loopstack waits for the background writer to flush everything to SQLite: the
comparison is durable point against durable point, not buffer against disk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "tracking"
LOOPSTACK_PYTHON = ROOT / ".venv" / "bin" / "python"
MLFLOW_PYTHON = HERE / ".anchors" / "mlflow" / "bin" / "python"
SEARCH_FILTER = "metrics.s0 > 0.5 and params.q1 = 'v2'"
SEARCH_ORDER = "metrics.s1 DESC"
GOALS = {"per_point": 100, "batched": 20, "many_runs": 20, "search": 5}


# -- the workload ------------------------------------------------------------------
def make_workload(seed: int, steps: int, n_runs: int) -> dict[str, Any]:
    """Params, metric series and run specs, all JSON-exact (floats round-trip by repr)."""
    rng = random.Random(seed)
    kinds = [lambda: rng.randint(0, 10**6), lambda: round(rng.random(), 6), lambda: f"opt-{rng.randint(0, 9)}"]
    params = {f"p{i:03d}": str(kinds[i % 3]()) for i in range(100)}
    metrics = {f"m{k}": [rng.gauss(0.0, 1.0) for _ in range(steps)] for k in range(10)}
    runs = [
        {
            "name": f"run-{i:03d}",
            "params": {f"q{j}": f"v{rng.randint(0, 3)}" for j in range(10)},
            "metrics": {f"s{j}": rng.random() for j in range(5)},
        }
        for i in range(n_runs)
    ]
    return {"seed": seed, "params": params, "metrics": metrics, "runs": runs}


def expected_search(workload: dict[str, Any]) -> list[str]:
    """The run names SEARCH_FILTER / SEARCH_ORDER must return, computed in Python."""
    hits = [r for r in workload["runs"] if r["metrics"]["s0"] > 0.5 and r["params"]["q1"] == "v2"]
    return [r["name"] for r in sorted(hits, key=lambda r: -r["metrics"]["s1"])]


# -- one adapter per tool: the only code that differs between the two sides ----
class LoopstackSide:
    name = "loopstack"

    def __init__(self, workdir: Path) -> None:
        import loopstack as ls

        self.ls = ls
        self.project = ls.Project.init(workdir / "project", name="bench")
        self.client = ls.Client(self.project)
        self.log_metric, self.log_metrics = ls.log_metric, ls.log_metrics
        self.log_param, self.log_params = ls.log_param, ls.log_params

    def experiment(self, name: str) -> None:
        self.ls.set_experiment(name)

    def start(self, run_name: str) -> str:
        return self.ls.start_run(run_name=run_name).id

    def end(self) -> None:
        self.ls.end_run()

    def search(self, experiment: str) -> list[str]:
        runs = self.client.search_runs(SEARCH_FILTER, experiment_names=experiment, order_by=SEARCH_ORDER)
        return [r.info.name for r in runs]

    def history(self, run_id: str, key: str) -> list[list[float]]:
        return [[m.step, m.value] for m in self.client.get_metric_history(run_id, key)]

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).params)

    def all_runs(self, experiment: str) -> dict[str, Any]:
        runs = self.client.search_runs(experiment_names=experiment, max_results=10_000)
        return {r.info.name: {"params": r.params, "metrics": r.metrics} for r in runs}


class MlflowSide:
    name = "mlflow"

    def __init__(self, workdir: Path) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
        self.client = MlflowClient()
        self.log_metric, self.log_metrics = mlflow.log_metric, mlflow.log_metrics
        self.log_param, self.log_params = mlflow.log_param, mlflow.log_params

    def experiment(self, name: str) -> None:
        self.mlflow.set_experiment(name)

    def start(self, run_name: str) -> str:
        return self.mlflow.start_run(run_name=run_name).info.run_id

    def end(self) -> None:
        self.mlflow.end_run()

    def _experiment_id(self, name: str) -> str:
        return self.client.get_experiment_by_name(name).experiment_id

    def search(self, experiment: str) -> list[str]:
        runs = self.client.search_runs(
            [self._experiment_id(experiment)], SEARCH_FILTER, order_by=[SEARCH_ORDER], max_results=1000
        )
        return [r.info.run_name for r in runs]

    def history(self, run_id: str, key: str) -> list[list[float]]:
        points = sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        return [[m.step, m.value] for m in points]

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.params)

    def all_runs(self, experiment: str) -> dict[str, Any]:
        runs = self.client.search_runs([self._experiment_id(experiment)], max_results=10_000)
        return {r.info.run_name: {"params": r.data.params, "metrics": r.data.metrics} for r in runs}


# -- the driver both sides run -----------------------------------------------------
def per_point(side: Any, workload: dict[str, Any]) -> dict[str, Any]:
    """100 log_param calls, then one log_metric call per point, step-major like a training loop."""
    keys, series = list(workload["metrics"]), list(workload["metrics"].values())
    steps, log, clock = len(series[0]), side.log_metric, time.perf_counter_ns
    calls = [0] * (steps * len(keys))
    side.experiment("per-point")
    cpu, start = time.process_time(), time.perf_counter()
    run_id = side.start("per-point")
    for key, value in workload["params"].items():
        side.log_param(key, value)
    i = 0
    for step in range(steps):
        for k, key in enumerate(keys):
            t = clock()
            log(key, series[k][step], step=step)
            calls[i] = clock() - t
            i += 1
    logged = time.perf_counter()
    side.end()
    end = time.perf_counter()
    return {"run_id": run_id, "seconds": end - start, "cpu_s": time.process_time() - cpu, "calls_s": logged - start,
            "end_s": end - logged, "call_us": _latency(calls)}


def batched(side: Any, workload: dict[str, Any]) -> dict[str, Any]:
    """One log_params call, then one log_metrics call per step (10 metrics each)."""
    keys, series = list(workload["metrics"]), list(workload["metrics"].values())
    rows = [dict(zip(keys, values, strict=True)) for values in zip(*series, strict=True)]
    log, clock = side.log_metrics, time.perf_counter_ns
    calls = [0] * len(rows)
    side.experiment("batched")
    cpu, start = time.process_time(), time.perf_counter()
    run_id = side.start("batched")
    side.log_params(workload["params"])
    for step, row in enumerate(rows):
        t = clock()
        log(row, step=step)
        calls[step] = clock() - t
    logged = time.perf_counter()
    side.end()
    end = time.perf_counter()
    return {"run_id": run_id, "seconds": end - start, "cpu_s": time.process_time() - cpu, "calls_s": logged - start,
            "end_s": end - logged, "call_us": _latency(calls)}


def many_runs(side: Any, workload: dict[str, Any]) -> dict[str, Any]:
    """Each run: start, one log_params (10), one log_metrics (5), end."""
    side.experiment("many-runs")
    cpu, start = time.process_time(), time.perf_counter()
    for run in workload["runs"]:
        side.start(run["name"])
        side.log_params(run["params"])
        side.log_metrics(run["metrics"], step=0)
        side.end()
    return {"seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def repeated(fn: Any, repeat: int) -> dict[str, Any]:
    """Median wall and CPU seconds of `repeat` calls, every wall time, and the last result."""
    times, cpus, result = [], [], None
    for _ in range(repeat):
        cpu, start = time.process_time(), time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return {"seconds": statistics.median(times), "cpu_s": statistics.median(cpus), "all_s": times, "result": result}


def run_side(side_name: str, workload_path: Path, workdir: Path, repeat: int) -> dict[str, Any]:
    """Every timed workload, then the untimed read-back of everything that was logged."""
    workload = json.loads(workload_path.read_text())
    t = time.perf_counter()
    side = LoopstackSide(workdir) if side_name == "loopstack" else MlflowSide(workdir)
    out: dict[str, Any] = {"setup_s": time.perf_counter() - t, "version": _version(side_name)}
    out["per_point"] = per_point(side, workload)
    out["batched"] = batched(side, workload)
    out["many_runs"] = many_runs(side, workload)
    out["search"] = repeated(lambda: side.search("many-runs"), repeat)
    out["search"]["names"] = out["search"].pop("result")
    run_id = out["per_point"]["run_id"]
    out["history"] = repeated(lambda: side.history(run_id, "m0"), repeat)
    out["history"]["points"] = len(out["history"].pop("result"))
    out["readback"] = {
        kind: {"params": side.params(out[kind]["run_id"]),
               "metrics": {key: side.history(out[kind]["run_id"], key) for key in workload["metrics"]}}
        for kind in ("per_point", "batched")
    }
    out["readback"]["many_runs"] = side.all_runs("many-runs")
    return out


# -- fresh-process measurements ------------------------------------------------------
_FIRST_CALL = {
    "loopstack": """
import time, json, sys
t0 = time.perf_counter()
import loopstack as ls
t1, c1 = time.perf_counter(), time.process_time()
project = ls.Project.init(sys.argv[1], name="fresh")
ls.start_run(project=project)
ls.log_metric("loss", 0.5, step=0)
t2, c2 = time.perf_counter(), time.process_time()
ls.end_run()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "first_call_cpu_s": c2 - c1, "to_end_run_s": t3 - t1}))
""",
    "mlflow": """
import time, json, sys
t0 = time.perf_counter()
import mlflow
t1, c1 = time.perf_counter(), time.process_time()
mlflow.set_tracking_uri("sqlite:///" + sys.argv[1] + "/mlflow.db")
mlflow.start_run()
mlflow.log_metric("loss", 0.5, step=0)
t2, c2 = time.perf_counter(), time.process_time()
mlflow.end_run()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "first_call_cpu_s": c2 - c1, "to_end_run_s": t3 - t1}))
""",
}


_BREAKDOWN = """
import time, json, sys
marks = [(time.perf_counter(), time.process_time())]
def mark():
    marks.append((time.perf_counter(), time.process_time()))
import loopstack as ls; mark()
project = ls.Project.init(sys.argv[1], name="fresh"); mark()
ls.start_run(project=project); mark()
ls.log_metric("loss", 0.5, step=0); mark()
names = ["import loopstack", "Project.init (config written, schema created)", "start_run", "log_metric"]
loaded = [name for name in ("sqlalchemy", "pydantic", "yaml", "alembic") if name in sys.modules]
print(json.dumps({"phases": {n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, marks, marks[1:])},
                  "loaded": loaded}))
"""


def first_call_breakdown(repeat: int) -> dict[str, Any]:
    """Where loopstack's first call goes: [wall s, CPU s] per phase, median of fresh processes,
    and which heavy libraries the call imported."""
    samples, loaded = [], set()
    for i in range(repeat):
        folder = WORK / f"breakdown-{i}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        proc = subprocess.run([str(LOOPSTACK_PYTHON), "-c", _BREAKDOWN, str(folder)],
                              capture_output=True, text=True, cwd=folder, env=_env(), check=True)
        sample = json.loads(proc.stdout.strip().splitlines()[-1])
        samples.append(sample["phases"])
        loaded.update(sample["loaded"])
    phases = {k: [statistics.median(s[k][0] for s in samples), statistics.median(s[k][1] for s in samples)]
              for k in samples[0]}
    return {"phases": phases, "loaded": sorted(loaded)}


def first_call(side_name: str, python: Path, repeat: int) -> dict[str, Any]:
    """Median over `repeat` fresh processes, each on a fresh project / fresh SQLite file."""
    samples = []
    for i in range(repeat):
        folder = WORK / f"fresh-{side_name}-{i}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        start = time.perf_counter()
        proc = subprocess.run([str(python), "-c", _FIRST_CALL[side_name], str(folder)],
                              capture_output=True, text=True, cwd=folder, env=_env())
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{side_name} first-call probe failed:\n{proc.stderr}")
        samples.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "process_wall_s": wall})
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]} | {"samples": samples}


def _byte_compile_loopstack() -> None:
    """Byte-compile loopstack as ``pip install`` does, before any fresh-process probe.

    MLflow, SQLAlchemy and pydantic are pip-installed with their ``.pyc`` files;
    loopstack runs from an editable checkout, and where PYTHONDONTWRITEBYTECODE is
    set (it is on the dev machines) every fresh process compiled the 30 loopstack
    modules of a first call from source, which no installed user pays and the
    anchor did not.
    """
    subprocess.run([str(LOOPSTACK_PYTHON), "-m", "compileall", "-q", str(ROOT / "src" / "loopstack")],
                   check=True, stdout=subprocess.DEVNULL)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LOOPSTACK_PROJECT", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONWARNINGS"] = "ignore"  # an anchor's deprecation warnings are not our test
    env["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    return env


def _latency(ns: list[int]) -> dict[str, float]:
    ordered = sorted(ns)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"mean": sum(ns) / len(ns) / 1000, "p50": pct(0.5), "p99": pct(0.99), "max": ordered[-1] / 1000}


def _version(side_name: str) -> str:
    from importlib.metadata import version

    return version(side_name)


# -- checking and reporting ------------------------------------------------------------
def check(side: dict[str, Any], workload: dict[str, Any]) -> list[str]:
    """Every mismatch between what a side read back and what the workload logged."""
    problems = []
    for kind in ("per_point", "batched"):
        back = side["readback"][kind]
        if back["params"] != workload["params"]:
            problems.append(f"{kind}: params differ")
        for key, values in workload["metrics"].items():
            if back["metrics"][key] != [[step, value] for step, value in enumerate(values)]:
                problems.append(f"{kind}: metric {key} history differs")
    runs = side["readback"]["many_runs"]
    for run in workload["runs"]:
        got = runs.get(run["name"])
        if got is None:
            problems.append(f"many_runs: run {run['name']} missing")
            continue
        if got["params"] != run["params"]:
            problems.append(f"many_runs: {run['name']} params differ")
        if {k: got["metrics"].get(k) for k in run["metrics"]} != run["metrics"]:
            problems.append(f"many_runs: {run['name']} metrics differ")
    if len(runs) != len(workload["runs"]):
        problems.append(f"many_runs: {len(runs)} runs read back, {len(workload['runs'])} logged")
    if side["search"]["names"] != expected_search(workload):
        problems.append("search: result set or order differs from the expected one")
    return problems


def report(results: dict[str, Any], workload: dict[str, Any]) -> str:
    ls, ml = results["loopstack"], results.get("mlflow")
    steps, n_runs = len(workload["metrics"]["m0"]), len(workload["runs"])
    rows = [
        ("per_point", f"1 run: 100 params + {10 * steps:,} points, 1 call/point (start..end_run)"),
        ("batched", f"1 run: 100 params + {steps:,} log_metrics calls of 10 (start..end_run)"),
        ("many_runs", f"{n_runs} runs x (10 params, 5 metrics), start..end_run each"),
        ("search", f"search `{SEARCH_FILTER}` order by {SEARCH_ORDER} ({len(ls['search']['names'])} hits; median)"),
        ("history", f"metric history, {steps:,} points (median)"),
    ]
    lines = ["| workload | loopstack s | MLflow s | MLflow / loopstack | goal | CPU s loopstack / MLflow (ratio) |",
             "|---|---:|---:|---:|---|---|"]
    for key, label in rows:
        lines.append(_row(label, ls[key]["seconds"], ml[key]["seconds"] if ml else None, GOALS.get(key))
                     + _cpu(ls[key]["cpu_s"], ml[key]["cpu_s"] if ml else None))
    lines.extend(_first_call_rows(results))
    lines.append("")
    lines.append("caller-thread latency per call (microseconds): mean / p50 / p99 / max")
    for kind in ("per_point", "batched"):
        for name, side in (("loopstack", ls), ("mlflow", ml)):
            if side:
                c = side[kind]["call_us"]
                lines.append(f"  {kind:9s} {name:9s} {c['mean']:9.1f} {c['p50']:9.1f} {c['p99']:9.1f} {c['max']:10.1f}")
    lines.append("")
    lines.extend(_breakdown_lines(results["breakdown"]))
    lines.append(f"loopstack end_run (flush) in per_point: {ls['per_point']['end_s']:.3f} s; "
                 f"in batched: {ls['batched']['end_s']:.3f} s")
    return "\n".join(lines)


def _first_call_rows(results: dict[str, Any]) -> list[str]:
    lines = []
    for key, label in (("first_call_s", "first call on a fresh project (after import; median)"),
                       ("first_call_cpu_s", "  ... CPU time of that (load-independent)"),
                       ("to_end_run_s", "  ... up to end_run returned"),
                       ("process_wall_s", "  ... whole fresh process, interpreter start to exit"),
                       ("import_s", "`import loopstack` vs `import mlflow` (median, fresh processes)")):
        a, b = results["first"]["loopstack"][key], results["first"].get("mlflow", {}).get(key)
        goal = "< 0.3 s" if key in ("first_call_s", "import_s") else ""
        lines.append(_row(label, a, b, None, goal, met=(a < 0.3) if goal else None) + " |")
    return lines


def _breakdown_lines(breakdown: dict[str, Any]) -> list[str]:
    lines = ["loopstack first call, by phase (fresh process; median wall s / CPU s):"]
    for phase, (wall, cpu) in breakdown["phases"].items():
        lines.append(f"  {phase:55s} {wall:7.3f} {cpu:7.3f}")
    lines.append(f"  heavy libraries the first call imported: {', '.join(breakdown['loaded']) or 'none'}")
    return lines


def _cpu(a: float, b: float | None) -> str:
    return f" {a:.3f} / {b:.3f} ({b / a:,.1f}x) |" if b else f" {a:.3f} |"


def _row(label: str, a: float, b: float | None, goal: int | None, goal_text: str = "",
         met: bool | None = None) -> str:
    ratio = f"{b / a:,.1f}x" if b else "-"
    if goal is not None:
        goal_text, met = f">= {goal}x", (b / a >= goal) if b else None
    mark = "" if met is None else (" met" if met else " MISSED")
    return f"| {label} | {a:.4f} | {'-' if b is None else f'{b:.4f}'} | {ratio} | {goal_text}{mark} |"


def main() -> None:
    parser = argparse.ArgumentParser(description="loopstack tracking vs MLflow")
    parser.add_argument("--quick", action="store_true", help="100 steps and 50 runs instead of 1,000 and 500")
    parser.add_argument("--no-anchor", action="store_true", help="run loopstack alone")
    parser.add_argument("--first-call", action="store_true",
                        help="only the fresh-process probes: first call, import time, first-call phases")
    parser.add_argument("--repeat", type=int, default=5, help="repeats for search, history, fresh processes")
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--side", choices=("loopstack", "mlflow"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # child process: one side
        folder = args.out.parent / args.side
        args.out.write_text(json.dumps(run_side(args.side, args.workload, folder, args.repeat)))
        return
    _drive(args)


def _drive(args: argparse.Namespace) -> None:
    from import_time import import_seconds

    sides = {"loopstack": LOOPSTACK_PYTHON}
    if not args.no_anchor:
        if not MLFLOW_PYTHON.exists():
            raise SystemExit("MLflow is not installed; run `bash bench/anchors.sh mlflow` or pass --no-anchor")
        sides["mlflow"] = MLFLOW_PYTHON
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    _byte_compile_loopstack()
    workload = make_workload(args.seed, 100 if args.quick else 1000, 50 if args.quick else 500)
    workload_path = WORK / "workload.json"
    workload_path.write_text(json.dumps(workload))
    results: dict[str, Any] = {"first": {}}
    if args.first_call:
        _drive_first_call(args, sides, results)
        return
    for name, python in sides.items():
        out = WORK / f"{name}.json"
        (WORK / name).mkdir()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        subprocess.run([str(python), __file__, "--side", name, "--workload", str(workload_path), "--out", str(out),
                        "--repeat", str(args.repeat)], check=True, cwd=WORK / name, env=_env())
        results[name] = json.loads(out.read_text())
        results["first"][name] = first_call(name, python, min(args.repeat, 3))
        results["first"][name]["import_s"] = statistics.median(import_seconds(python, name, args.repeat))
    results["breakdown"] = first_call_breakdown(min(args.repeat, 3))
    problems = {name: check(results[name], workload) for name in sides}
    _print_header(results)
    print(report(results, workload))
    for name, found in problems.items():
        print(f"read-back check {name}: " + ("every value matches the workload" if not found else "; ".join(found)))
    (WORK / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if any(problems.values()):
        raise SystemExit(1)


def _drive_first_call(args: argparse.Namespace, sides: dict[str, Path], results: dict[str, Any]) -> None:
    """--first-call: the fresh-process rows of the full report, with the same probes and repeats."""
    from import_time import import_seconds

    for name, python in sides.items():
        print(f"probing {name} ...", file=sys.stderr, flush=True)
        results["first"][name] = first_call(name, python, min(args.repeat, 3))
        results["first"][name]["import_s"] = statistics.median(import_seconds(python, name, args.repeat))
        results[name] = {"version": _version(name) if name == "loopstack" else _anchor_version(python)}
    results["breakdown"] = first_call_breakdown(min(args.repeat, 3))
    _print_header(results)
    lines = ["| workload | loopstack s | MLflow s | MLflow / loopstack | goal | |", "|---|---:|---:|---:|---|---|"]
    print("\n".join([*lines, *_first_call_rows(results), "", *_breakdown_lines(results["breakdown"])]))
    (WORK / "results.json").write_text(json.dumps(results, indent=1, default=str))


def _anchor_version(python: Path) -> str:
    code = "from importlib.metadata import version; print(version('mlflow'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _print_header(results: dict[str, Any]) -> None:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = ", ".join(f"{name} {results[name]['version']}" for name in ("loopstack", "mlflow") if name in results)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT).stdout
    versions += f" (commit {commit.strip() or '?'})"
    print(f"{time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} CPUs ({cpu}) | load {os.getloadavg()[0]:.1f} | "
          f"Python {platform.python_version()} | {versions}\n")


if __name__ == "__main__":
    main()
