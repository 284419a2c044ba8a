"""The whole loop on a compact world, on both backends, with the loop process killed mid-canary.

A subprocess runs the demo until the first challenger's canary is in
flight and is killed with SIGKILL; the demo is then continued in this
process. It must finish the same story exactly once: one promotion of the
drift-triggered challenger (resumed at the step it was at), one automatic
rollback of the challenger trained on corrupted labels, every step an event
chained to its cause, and a self-contained report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import loopstack as ls
from loopstack.demo.config import ENDPOINT, Scenario
from loopstack.demo.rollout import DECISIONS
from loopstack.demo.runner import run_demo
from loopstack.demo.world import load_state

ROWS = 10_500
SPAWN = """
import sys
from pathlib import Path
from loopstack.demo.config import Scenario
from loopstack.demo.runner import run_demo
run_demo(Path(sys.argv[1]), True, sys.argv[2], {rows}, print, scenario=Scenario.compact({rows}))
"""


def _kill_mid_canary(path: Path, backend: str, timeout: float = 150) -> dict[str, Any]:
    """Run the demo in a subprocess and SIGKILL it once the first canary has served traffic."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-c", SPAWN.format(rows=ROWS), str(path), backend],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"the demo exited ({process.returncode}) before its canary started:\n{output[-3000:]}")
            state = load_state(path) if (path / ".loopstack-demo").exists() else {}
            if state.get("routing", {}).get("mode") == "canary" and state["counts"].get("canary", {}).get("requests"):
                process.send_signal(signal.SIGKILL)
                process.wait(30)
                return state
            time.sleep(0.05)
        pytest.fail("the canary did not start in time")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        if process.stdout:
            process.stdout.close()
    raise AssertionError("unreachable")


@pytest.fixture(params=["embedded", pytest.param("services", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "services":
        from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, require_service

        require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        require_service("Redis", "127.0.0.1", 6379)
    return str(request.param)


def test_demo_loop_survives_a_kill_mid_canary(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "demo"
    killed = _kill_mid_canary(path, backend)
    assert killed["champion"] == "fraud/1" and killed["challenger"] == "fraud/2"
    lines: list[str] = []
    outcome = run_demo(path, fresh=False, backend=backend, rows=ROWS, say=lines.append)
    project = outcome["project"]
    try:
        _check_story(project, outcome, killed)
    finally:
        _cleanup(project, backend)


def _check_story(project: Any, outcome: dict[str, Any], killed: dict[str, Any]) -> None:
    events = project.events.list(limit=100_000, newest_first=False)
    # one promotion (of the drift-triggered challenger) and one automatic rollback (of the corrupted one)
    promoted = [e for e in events if e.kind == "rollout.promoted"]
    rolled_back = [e for e in events if e.kind == "rollout.rolled_back"]
    assert [e.payload["champion"] for e in promoted] == ["fraud/2"]
    assert [e.payload["retired"] for e in rolled_back] == [["fraud/3"]]
    assert all(e.subject == ENDPOINT for e in promoted + rolled_back)
    canaries = [e for e in events if e.kind == "deployment.changed" and e.payload["strategy"] == "canary"]
    assert [e.payload["challenger"] for e in canaries] == ["fraud/2", "fraud/3"]  # the resumed one did not restart
    # the restart resumed the canary action where it was
    (resumed,) = [e for e in events if e.kind == "loop.resumed"]
    assert resumed.payload["action"] == "canary" and resumed.subject == "retrain-on-drift"
    decisions = [e for e in events if e.kind in DECISIONS]
    before = [d for d in decisions if d.id < resumed.id]
    after = [d for d in decisions if d.id > resumed.id and d.id < promoted[0].id]
    if before:
        assert after[0].payload["step"] >= before[-1].payload["step"]
    # the promotion's story starts with the drift signal
    chain = [e.kind for e in project.events.chain(promoted[0].id)]
    assert chain[:2] == ["drift.checked", "drift.detected"]
    for kind in ("loop.triggered", "labels.collected", "pipeline.started", "pipeline.finished", "gate.passed",
                 "rollout.shadow.passed", "loop.resumed", "rollout.canary.promote"):
        assert kind in chain, kind
    chain = [e.kind for e in project.events.chain(rolled_back[0].id)]
    assert chain[0] == "loop.manual" and "gate.passed" in chain and "rollout.canary.rollback" in chain
    rollback = next(e for e in events if e.kind == "rollout.canary.rollback")
    primary = next(x for x in rollback.payload["evidence"] if x["metric"] == "primary")
    assert primary["verdict"] == "worse" and primary["diff_ci"][0] > 0  # Brier clearly higher on true labels
    # the registry and the served champion agree
    assert ls.get_project().registry.get_model_version("fraud@champion").version == 2
    assert outcome["state"]["champion"] == "fraud/2"
    # the drift was detected in the served traffic after it started, not before
    days = {int(d): v for d, v in outcome["state"]["days"].items()}
    scenario = Scenario(**outcome["state"]["scenario"])
    assert not any(v["dataset_drift"] for d, v in days.items() if d < scenario.drift_day)
    assert days[scenario.drift_day]["dataset_drift"]
    # a tracked pipeline run per training, with its steps
    client = ls.Client(project)
    pipelines = client.search_runs("name = 'train_fraud'")
    assert len(pipelines) >= 3
    _check_report(outcome["report"])


def _check_report(report: Path) -> None:
    text = report.read_text()
    assert "<svg" in text and "rollout.canary.promote" in text and "rollout.rolled_back" in text
    assert "src=\"http" not in text and "href=\"http" not in text and "<link" not in text
    start = text.index('<script id="demo-data" type="application/json">') + len(
        '<script id="demo-data" type="application/json">')
    data = json.loads(text[start:text.index("</script>", start)])
    assert [p["version"] for p in data["promotions"]] == ["fraud/2"]
    assert any(d["kind"] == "rollout.canary.rollback" for d in data["decisions"])


def _cleanup(project: Any, backend: str) -> None:
    metadata, online = project.config.metadata, str(project.config.online_store)
    project.close()
    if backend != "services":
        return
    from sqlalchemy import create_engine, text

    schema = metadata.split("search_path%3D")[1]
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    prefix = online.split("prefix=")[1]
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
