"""`loopstack deploy ...` through click, on a real project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from loopstack.core.project import Project
from loopstack.rollout import TrafficLog
from loopstack.rollout.cli import deploy

from .conftest import register


def test_deploy_commands_and_status(sqlite_project: Project, tmp_path: Path) -> None:
    refs = register(sqlite_project)
    runner = CliRunner()
    obj = {"project_path": str(sqlite_project.root)}

    def run(*args: str) -> str:
        result = runner.invoke(deploy, list(args), obj=obj, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert run("create", "api", refs[0], "--primary-metric", "conversion").startswith(f"api v1 single: {refs[0]}=100%")
    assert "shadow: m/2" in run("shadow", "api", refs[1])
    assert "step 1/2" in run("canary", "api", refs[1], "--steps", "10,50,100", "--min-requests", "100")
    log = TrafficLog(tmp_path)
    rng = np.random.default_rng(0)
    for i in range(2000):
        variant = refs[1] if i % 10 == 0 else refs[0]
        log.record(request_id=f"r{i}", endpoint="api", variant=variant, ref=variant, deployment_version=3,
                   unit_id=None, shadow=False, ok=bool(rng.random() > 0.01), status=200,
                   latency_ms=float(rng.lognormal(1, 0.3)))
    log.close()
    assert run("evaluate", "api", "--log-dir", str(tmp_path)).startswith("advance: step 0 passed")
    status = run("status", "api", "--log-dir", str(tmp_path))
    assert "error_rate" in status and "advance" in status and refs[1] in status
    data = json.loads(run("status", "api", "--log-dir", str(tmp_path), "--json"))
    assert data["deployment"]["weights"][refs[1]] == 0.5
    assert {t["variant"]: t["requests"] for t in data["traffic"]} == {refs[0]: 1800, refs[1]: 200}
    assert "rolled back" not in run("rollback", "api", "--reason", "by hand")
    assert "blue_green" in run("blue-green", "api", refs[2])
    assert "ab" in run("ab", "api", f"c={refs[0]}", f"t={refs[2]}", "--weights", "0.5,0.5", "--salt", "s")
    assert run("promote", "api", "--variant", "t").startswith("api v8 single")
    assert run("status").startswith("api v8 single")
