"""Serving benchmark: loopstack vs BentoML (adaptive batching), KServe ModelServer and plain FastAPI.

One HistGradientBoostingClassifier on 20 float features (bench/serving_anchors.py
trains it identically in every process). Each server runs as one process; wrk
(Debian package) sends single-row JSON requests at concurrency 1, 16 and 64,
after a warm-up. Every server's answer is checked against the model's own
predict_proba before it is measured. Also measured: the ceiling (the model's
own predict_proba throughput at the batch size loopstack's batcher formed),
loopstack's cold start (process start to first correct answer, model loaded
from the registry) and each server's idle RSS. ``loopstack`` serves the model
as ``loopstack serve fraud@champion`` does, in its compiled form (the same
answers, bit for bit, from a faster tree walk); ``loopstack-sklearn`` serves the
estimator object, calling the same predict_proba as every anchor. Two references that are not
competitors bound what a server can do here: ``asgi-floor`` (uvicorn and a
bare ASGI app answering a constant) and ``minimal`` (a bare asyncio protocol
that parses, batches, predicts and answers, and does nothing else).

    bash bench/anchors.sh bentoml kserve fastapi
    .venv/bin/python bench/serving.py                 # 15 s per point
    .venv/bin/python bench/serving.py --duration 5 --only loopstack,fastapi
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ANCHORS = HERE / ".anchors"
sys.path.insert(0, str(HERE))
from serving_anchors import make_model  # noqa: E402

ROW = [round(float(v), 4) for v in np.random.default_rng(1).normal(size=20)]
V1 = {"instances": [ROW]}
V2 = {"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": ROW}]}
# name -> (server kind, path, body, how to read the probabilities of the row from the JSON answer)
TARGETS = {
    "loopstack": ("loopstack", "/v1/models/fraud:predict", V1, lambda b: b["predictions"][0]),
    "loopstack-v2": ("loopstack", "/v2/models/fraud/infer", V2, lambda b: b["outputs"][0]["data"]),
    # the estimator object itself (scikit-learn's predict_proba, as every anchor calls it), not the compiled trees
    # `loopstack serve` loads: the server against the anchors' servers with the very same model code
    "loopstack-sklearn": ("loopstack-sklearn", "/v1/models/fraud:predict", V1, lambda b: b["predictions"][0]),
    # the same model behind a deployment (`loopstack deploy serve`): routing and the traffic log on top
    "loopstack-endpoint": ("endpoint", "/v1/endpoints/fraud-api:predict", V1, lambda b: b["predictions"][0]),
    "bentoml": ("bentoml", "/predict", V1, lambda b: b[0]),
    "kserve": ("kserve", "/v1/models/fraud:predict", V1, lambda b: b["predictions"][0]),
    "kserve-v2": ("kserve", "/v2/models/fraud/infer", V2, lambda b: b["outputs"][0]["data"]),
    "fastapi": ("fastapi", "/predict", V1, lambda b: b["predictions"][0]),
    # not a competitor: a bare ASGI app on uvicorn answering a constant, the most any server on uvicorn can do here
    "asgi-floor": ("floor", "/v1/models/fraud:predict", V1, lambda b: b["predictions"][0]),
    # not a competitor either: the least a Python server must do per request (parse, batch, predict,
    # answer), with nothing else (no validation, metrics, log, request ids, timeouts or HTTP checks)
    "minimal": ("minimal", "/v1/models/fraud:predict", V1, lambda b: b["predictions"][0]),
    # nor this: `minimal` answering a constant without predicting, the cheapest Python HTTP server we know
    "protocol-floor": ("protocol-floor", "/v1/models/fraud:predict", V1, lambda b: b["predictions"][0]),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PIN_ANCHORS = False  # --pin-anchors: give the anchors the one-thread math libraries loopstack sets itself


def start(kind: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if PIN_ANCHORS and kind != "loopstack":
        env.update(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"))
    if kind in ("loopstack", "loopstack-sklearn", "floor", "endpoint", "minimal", "protocol-floor"):
        command = [sys.executable, str(Path(__file__)), f"--serve-{kind}", str(port)]
    elif kind == "bentoml":
        command = [str(ANCHORS / "bentoml" / "bin" / "bentoml"), "serve", "serving_anchors:Fraud", "--port", str(port),
                   "--host", "127.0.0.1"]
    else:
        command = [str(ANCHORS / kind / "bin" / "python"), str(HERE / "serving_anchors.py"), kind, str(port)]
    log = open(Path(tempfile.gettempdir()) / f"bench-serving-{kind}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(command, cwd=HERE, env=env, stdout=log, stderr=log, start_new_session=True)


def post(port: int, path: str, body: Any, timeout: float = 5.0) -> Any:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_correct(port: int, target: str, want: np.ndarray, timeout: float = 300.0) -> float:
    """Seconds until the server answers the probe row correctly; raises if it answers wrongly."""
    import urllib.error

    _, path, body, read = TARGETS[target]
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            got = np.asarray(read(post(port, path, body)), dtype=float)
        except urllib.error.HTTPError as error:
            if error.code != 503:  # up, but answering wrongly: no point in waiting
                raise AssertionError(f"{target} answered {error.code}: {error.read()[:300]!r}") from None
            time.sleep(0.05)
            continue
        except (OSError, ValueError):
            time.sleep(0.01)
            continue
        if not np.allclose(got, want, atol=1e-9):
            raise AssertionError(f"{target} answered {got}, the model says {want}")
        return time.perf_counter() - started
    raise TimeoutError(f"{target} did not answer within {timeout} s")


def wrk(port: int, target: str, connections: int, duration: int) -> dict[str, float]:
    _, path, body, _ = TARGETS[target]
    script = Path(tempfile.gettempdir()) / f"bench-serving-{target}.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(json.dumps(body))}\n")
    threads = 1 if connections < 16 else 2
    used_before = children_cpu_s()
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    # the load generator shares the cores with the server: its CPU per request is part of every request's cost
    result["wrk_cpu_ms_per_req"] = (children_cpu_s() - used_before) * 1e3 / max(1.0, result["rps"] * duration)
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[key] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"Socket errors: .*timeout (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    result["timeouts"] = float(timeouts.group(1)) if timeouts else 0.0
    return result


def children_cpu_s() -> float:
    """CPU seconds used by this process's finished children (here: the wrk runs)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a server and its children: a load-independent cost."""
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def batch_stats(port: int) -> tuple[float, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    total = float(re.search(r"loopstack_batch_size_sum\{[^}]*\} ([\d.e+]+)", text).group(1))  # type: ignore[union-attr]
    count = float(re.search(r"loopstack_batch_size_count\{[^}]*\} ([\d.e+]+)", text).group(1))  # type: ignore[union-attr]
    return total, count


def ceiling(model: Any, batch: int, seconds: float = 3.0) -> float:
    """The model's own predict_proba rows/s at `batch` rows per call, on one thread."""
    from threadpoolctl import threadpool_limits

    X = np.tile(np.asarray(ROW), (max(1, batch), 1))
    with threadpool_limits(1):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model.predict_proba(X)
            calls += 1
        return calls * len(X) / (time.perf_counter() - started)


def measure(target: str, want: np.ndarray, levels: list[int], duration: int) -> dict[str, Any]:
    kind = TARGETS[target][0]
    port = free_port()
    process = start(kind, port)
    try:
        wait_correct(port, target, want)
        time.sleep(1.0)
        report: dict[str, Any] = {"idle_rss_mb": rss_mb(process.pid)}
        wrk(port, target, 16, 3)  # warm-up
        for connections in levels:
            before = batch_stats(port) if kind in ("loopstack", "endpoint") else None
            cpu_before = cpu_s(process.pid)
            report[connections] = wrk(port, target, connections, duration)
            served = report[connections]["rps"] * duration
            report[connections]["cpu_ms_per_req"] = (cpu_s(process.pid) - cpu_before) * 1e3 / max(1.0, served)
            if before is not None:
                after = batch_stats(port)
                report[connections]["mean_batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            print(f"  {target:13s} c={connections:<3d} {report[connections]}", flush=True)
        return report
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def registered_project(prefix: str) -> Any:
    """A scratch project holding the bench model as ``fraud/1``, alias ``champion``."""
    import loopstack as ls

    project = ls.Project.init(tempfile.mkdtemp(prefix=prefix), name="bench")
    with ls.start_run(project=project) as run:
        run.log_model(make_model(), "model", example=np.asarray([ROW]))
    ls.register_model(run.id, "model", name="fraud", alias="champion", project=project)
    return project


def cold_start(want: np.ndarray, repeat: int = 3) -> tuple[float, float]:
    """Process start to the first correct answer of `loopstack serve fraud@champion` (model from the registry).

    Median of `repeat` fresh processes, after byte-compiling loopstack as ``pip install`` does: the
    anchors' and libraries' modules come compiled, and under PYTHONDONTWRITEBYTECODE (set on the dev
    machines) an editable checkout would otherwise be compiled from source in every process.
    """
    import statistics

    import loopstack as ls

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(ls.__file__).parent)], check=True,
                   stdout=subprocess.DEVNULL)

    project = registered_project("bench-serving-cold-")
    samples = [_one_cold_start(project.root, want) for _ in range(repeat)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def _one_cold_start(root: Path, want: np.ndarray) -> tuple[float, float]:
    port = free_port()
    code = "from loopstack.serving.cli import serve; serve()"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, "fraud@champion", "--port", str(port), "--refresh", "0"],
                               env={**os.environ, "LOOPSTACK_PROJECT": str(root)}, stderr=subprocess.DEVNULL)
    try:
        wait_correct(port, "loopstack", want, timeout=120)
        return time.perf_counter() - started, cpu_s(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def serve_loopstack(port: int) -> None:
    """The bench model registered in a scratch project and served as `loopstack serve fraud@champion` serves it:
    loaded from the registry in its compiled form (the same answers, bit for bit: `registry.flavors.trees`)."""
    import loopstack as ls
    from loopstack.serving import ModelSpec, ServerSettings, serve

    project = registered_project("bench-serving-loopstack-")
    spec = ModelSpec.parse("fraud@champion", max_batch_size=64, max_wait_ms=2.0, max_queue=4096)
    serve([spec], port=port, settings=ServerSettings(log_dir=str(project.root / ".loopstack" / "logs")),
          loader=lambda ref: ls.load_model(ref, project=project, compiled=True))


def serve_loopstack_sklearn(port: int) -> None:
    from loopstack.serving import ModelSpec, ServerSettings, serve

    spec = ModelSpec(name="fraud", model=make_model(), max_batch_size=64, max_wait_ms=2.0, max_queue=4096)
    serve([spec], port=port, settings=ServerSettings(log_dir=tempfile.mkdtemp(prefix="bench-serving-log-")))


def serve_endpoint(port: int) -> None:
    """The bench model registered in a scratch project and served as the deployment ``fraud-api``."""
    from loopstack.serving import ServerSettings, serve

    project = registered_project("bench-serving-endpoint-")
    project.deployments.create("fraud-api", "fraud/1")
    settings = ServerSettings(log_dir=str(project.root / ".loopstack" / "logs"))
    serve([], port=port, settings=settings, deployments=project.deployments)  # as `loopstack deploy serve` does


def serve_floor(port: int) -> None:
    """uvicorn as `loopstack serve` runs it, with an ASGI app that reads the body and answers a constant.

    Its requests per second bound every server built on uvicorn on this machine, whatever it does per request.
    """
    import uvicorn

    model = make_model()
    body = json.dumps({"predictions": model.predict_proba(np.asarray([ROW])).tolist()}).encode()
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    answer = {"type": "http.response.body", "body": body}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send(start)
        await send(answer)

    uvicorn.run(app, host="127.0.0.1", port=port, loop="auto", http="auto", lifespan="off", log_level="warning",
                access_log=False, proxy_headers=False, backlog=4096)


def serve_minimal(port: int, predict: bool = True) -> None:
    """A bare asyncio protocol on uvloop and httptools: orjson in, one predict_proba per batch of up to 64
    waiting requests, orjson out. A lower bound on any Python server's cost per request. It predicts as
    loopstack does on this model: with the compiled trees, on the event loop (a thread would only add GIL
    hand-offs to a predict that holds the GIL).

    With `predict` false it answers every request at once with the row's probabilities computed at start:
    what the HTTP exchange alone costs a Python server here."""
    import asyncio

    import httptools
    import orjson
    import uvloop
    from threadpoolctl import threadpool_limits

    from loopstack.registry.flavors.trees import compile_trees, compiled_model

    model = compiled_model(compile_trees(make_model()))
    constant = model.predict_proba(np.asarray([ROW]))[0].tolist()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    threadpool_limits(1)
    queue: list[tuple[list[float], Any]] = []
    busy = False

    def run(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal busy
        busy = True
        loop.call_soon(finish, loop)  # after this round of reads: the batch takes every request they brought

    def finish(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal busy
        batch, queue[:] = queue[:64], queue[64:]
        for (_, answer), probabilities in zip(batch, model.predict_proba(np.array([r for r, _ in batch])).tolist(),
                                              strict=True):
            answer(probabilities)
        busy = False
        if queue:
            run(loop)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport, self.parser, self.body = transport, httptools.HttpRequestParser(self), b""

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            row, self.body = orjson.loads(self.body)["instances"][0], b""
            if not predict:
                self.answer(constant)
                return
            queue.append((row, self.answer))
            if not busy:
                run(asyncio.get_running_loop())

        def answer(self, probabilities: list[float]) -> None:
            body = orjson.dumps({"predictions": [probabilities], "model": "fraud", "version": "1"})
            if not self.transport.is_closing():
                self.transport.write(head % len(body) + body)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds per concurrency level")
    parser.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument("--pin-anchors", action="store_true", help="run the anchors with OMP_NUM_THREADS=1")
    parser.add_argument("--serve-loopstack", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-loopstack-sklearn", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-endpoint", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-minimal", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-protocol-floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global PIN_ANCHORS
    PIN_ANCHORS = args.pin_anchors
    if args.serve_loopstack:
        return serve_loopstack(args.serve_loopstack)
    if args.serve_loopstack_sklearn:
        return serve_loopstack_sklearn(args.serve_loopstack_sklearn)
    if args.serve_floor:
        return serve_floor(args.serve_floor)
    if args.serve_endpoint:
        return serve_endpoint(args.serve_endpoint)
    if args.serve_minimal:
        return serve_minimal(args.serve_minimal)
    if args.serve_protocol_floor:
        return serve_minimal(args.serve_protocol_floor, predict=False)
    model = make_model()
    want = model.predict_proba(np.asarray([ROW]))[0]
    results: dict[str, Any] = {}
    for target in args.only.split(","):
        levels = [1, 64] if target.endswith(("-v2", "-floor", "-endpoint", "-sklearn", "minimal")) else [1, 16, 64]
        results[target] = measure(target, want, levels, args.duration)
    if "loopstack" in results:
        batch = results["loopstack"][64].get("mean_batch", 1.0)
        results["ceiling_rows_per_s"] = ceiling(model, round(batch))
        results["ceiling_batch"] = batch
        from loopstack.registry.flavors.trees import compile_trees, compiled_model

        # not the goal's ceiling, which is the model's own predict_proba: what loopstack's server calls instead
        results["compiled_rows_per_s"] = ceiling(compiled_model(compile_trees(model)), round(batch))
        # the same ratio at every concurrency: the ceiling at the batch size formed there
        formed = {c: r["mean_batch"] for c, r in results["loopstack"].items()
                  if isinstance(r, dict) and "mean_batch" in r}
        results["ceiling_by_level"] = {c: {"batch": b, "rows_per_s": ceiling(model, round(b))}
                                       for c, b in formed.items()}
        results["cold_start_s"] = cold_start(want)
    print(json.dumps(results, indent=1, default=str))
    summarize(results)


def summarize(results: dict[str, Any]) -> None:
    print("\n| server | c=1 rps | c=1 p50 ms | c=16 rps | c=64 rps | c=64 p50 ms | c=64 p99 ms "
          "| c=64 CPU ms/req | c=64 wrk CPU ms/req | errors | idle RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if name not in TARGETS:
            continue
        row = [r.get(1, {}), r.get(16, {}), r.get(64, {})]
        errors = sum(x.get("errors", 0) + x.get("timeouts", 0) for x in row)
        cells = [f"{row[0].get('rps', 0):.0f}", f"{row[0].get('p50_ms', 0):.2f}", f"{row[1].get('rps', 0):.0f}",
                 f"{row[2].get('rps', 0):.0f}", f"{row[2].get('p50_ms', 0):.1f}", f"{row[2].get('p99_ms', 0):.1f}",
                 f"{row[2].get('cpu_ms_per_req', 0):.3f}", f"{row[2].get('wrk_cpu_ms_per_req', 0):.3f}"]
        print(f"| {name} | " + " | ".join(cells) + f" | {errors:.0f} | {r['idle_rss_mb']:.0f} |")
    for ours in ("loopstack", "loopstack-sklearn"):
        point = results.get(ours, {}).get(64)
        for anchor in ("bentoml", "kserve", "fastapi"):
            other = results.get(anchor, {}).get(64)
            if point and other:
                ratio, p99 = point["rps"] / other["rps"], point["p99_ms"] / other["p99_ms"]
                print(f"c=64 {ours} / {anchor}: rps x{ratio:.1f}, p99 ratio {p99:.2f}")
    ls64 = results.get("loopstack", {}).get(64)
    if ls64:
        top = results["ceiling_rows_per_s"]
        print(f"ceiling at batch {results['ceiling_batch']:.1f}: {top:.0f} rows/s; "
              f"loopstack at c=64 reaches {ls64['rps'] / top:.0%} of it (the goal, within 2x, is {top / 2:.0f} rps)")
        if "compiled_rows_per_s" in results:
            print(f"  the compiled trees loopstack serves (same answers) predict {results['compiled_rows_per_s']:.0f} "
                  "rows/s at that batch")
        for level, c in results.get("ceiling_by_level", {}).items():
            served = results["loopstack"][level]["rps"]
            print(f"  c={level}: ceiling {c['rows_per_s']:.0f} rows/s at batch {c['batch']:.1f}; loopstack "
                  f"{served:.0f} rps = {served / c['rows_per_s']:.0%} of it")
        floor64 = results.get("asgi-floor", {}).get(64)
        if floor64:
            print(f"uvicorn's own limit (asgi-floor) at c=64: {floor64['rps']:.0f} rps = {floor64['rps'] / top:.0%} "
                  f"of the ceiling; loopstack reaches {ls64['rps'] / floor64['rps']:.0%} of it")
        minimal64 = results.get("minimal", {}).get(64)
        if minimal64:
            print(f"the minimal Python server at c=64: {minimal64['rps']:.0f} rps = {minimal64['rps'] / top:.0%} "
                  f"of the ceiling; loopstack reaches {ls64['rps'] / minimal64['rps']:.0%} of it")
        cpu_budget(results, top)
        wall, cpu = results["cold_start_s"]
        print(f"cold start: {wall:.2f} s wall, {cpu:.2f} s CPU")


def cpu_budget(results: dict[str, Any], ceiling_rows_per_s: float) -> None:
    """What the cores allow: each request costs the server's CPU and wrk's, and both share this machine's cores.

    At c=64 every core is busy, so rps <= cores / (server + wrk CPU per request). A Python server's process
    runs one thread of Python at a time (the GIL), so it keeps at most about one core busy: rps <= 1 / (its
    CPU per request), whatever the cores. The goal, half the ceiling, is in reach only below both bounds."""
    cores, goal = os.cpu_count() or 1, ceiling_rows_per_s / 2
    print(f"CPU budget at c=64 on {cores} cores (the goal, half the ceiling, is {goal:.0f} rps; it needs at most "
          f"{1e6 / goal:.1f} us of one core per request):")
    for name in ("asgi-floor", "protocol-floor", "minimal", "loopstack"):
        point = results.get(name, {}).get(64)
        if point:
            per_request = point["cpu_ms_per_req"] + point["wrk_cpu_ms_per_req"]
            bound = cores / per_request * 1e3
            busy = point["rps"] * point["cpu_ms_per_req"] / 1e3
            print(f"  {name}: server {point['cpu_ms_per_req'] * 1e3:.0f} us + wrk "
                  f"{point['wrk_cpu_ms_per_req'] * 1e3:.0f} us per request; the cores allow {bound:.0f} rps "
                  f"({bound / goal:.0%} of the goal), one core {1e3 / point['cpu_ms_per_req']:.0f}; measured "
                  f"{point['rps']:.0f} with the server's process keeping {busy:.2f} cores busy")


if __name__ == "__main__":
    main()
