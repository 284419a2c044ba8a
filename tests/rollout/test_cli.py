"""`loopstack deploy ...` through click, on a real project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from loopstack.core.errors import ValidationError
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
    for i in range(3000):  # 300 canary requests: min_samples (200) latencies per arm
        variant = refs[1] if i % 10 == 0 else refs[0]
        log.record(request_id=f"r{i}", endpoint="api", variant=variant, ref=variant, deployment_version=3,
                   unit_id=None, shadow=False, ok=bool(rng.random() > 0.01), status=200,
                   latency_ms=float(rng.lognormal(1, 0.3)))
    log.close()
    assert run("evaluate", "api", "--log-dir", str(tmp_path)).startswith("advance: step 1/2 passed")
    status = run("status", "api", "--log-dir", str(tmp_path))
    assert "error_rate" in status and "advance" in status and refs[1] in status
    data = json.loads(run("status", "api", "--log-dir", str(tmp_path), "--json"))
    assert data["deployment"]["weights"][refs[1]] == 0.5
    assert {t["variant"]: t["requests"] for t in data["traffic"]} == {refs[0]: 2700, refs[1]: 300}
    assert "rolled back" not in run("rollback", "api", "--reason", "by hand")
    after = run("status", "api", "--log-dir", str(tmp_path))  # the old canary's verdicts are no longer shown
    assert "last canary decision: advance: step 1/2 passed (event" in after and "interval" not in after
    assert "blue_green" in run("blue-green", "api", refs[2])
    assert "ab" in run("ab", "api", f"c={refs[0]}", f"t={refs[2]}", "--weights", "0.5,0.5", "--salt", "s")
    assert run("promote", "api", "--variant", "t").startswith("api v8 single")
    assert run("status").startswith("api v8 single")


def test_bad_canary_settings_are_refused_before_anything_is_stored(sqlite_project: Project) -> None:
    import loopstack as ls

    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj).exit_code == 0
    for option, value, message in (("--alpha", "2", "alpha must be in (0, 1), got 2.0"),
                                    ("--min-requests", "0", "min_requests_per_step must be at least 1, got 0"),
                                    ("--min-labels", "10", "min_labels_per_step=10 waits for labels of a primary")):
        result = CliRunner().invoke(deploy, ["canary", "api", refs[1], option, value], obj=obj)
        assert result.exit_code == 1 and isinstance(result.exception, ls.ValidationError)
        assert message in str(result.exception)
    assert sqlite_project.deployments.get("api").strategy == "single"


@pytest.mark.parametrize(("steps", "weights", "fractions"), [
    ("1", "99%, 1%", (0.01,)),  # was read as a fraction: all of the traffic to the challenger
    ("0.5,1", "99.5%, 0.5%", (0.005, 0.01)),  # was read as 50 % then promotion
    ("1,5,25,50,100", "99%, 1%", (0.01, 0.05, 0.25, 0.5)),
])
def test_canary_steps_are_percentages_whatever_their_size(sqlite_project: Project, steps: str, weights: str,
                                                          fractions: tuple[float, ...]) -> None:
    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj).exit_code == 0
    result = CliRunner().invoke(deploy, ["canary", "api", refs[1], "--steps", steps], obj=obj)
    assert result.exit_code == 0 and f"{refs[0]}={weights.split(', ')[0]}, {refs[1]}={weights.split(', ')[1]}" \
        in result.output, result.output
    assert sqlite_project.deployments.get("api").steps == pytest.approx(fractions)


@pytest.mark.parametrize(("steps", "message"), [
    ("1,5,101", "steps are percentages in (0, 100]; [101.0] are not"),  # 101 was dropped as the final 100 %
    ("0,50", "steps are percentages in (0, 100]; [0.0] are not"),
    ("5,5,100", "must be strictly increasing"),  # a repeated step was taken
])
def test_canary_steps_outside_0_to_100_or_repeated_are_refused(sqlite_project: Project, steps: str,
                                                               message: str) -> None:
    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj).exit_code == 0
    result = CliRunner().invoke(deploy, ["canary", "api", refs[1], "--steps", steps], obj=obj)
    assert result.exit_code != 0 and message in (result.output + str(result.exception)), result.output
    assert sqlite_project.deployments.get("api").strategy == "single"


def test_the_api_refuses_a_lone_step_of_1_it_cannot_read() -> None:
    from loopstack.rollout.deployment import normalize_steps

    with pytest.raises(ValidationError, match="ambiguous"):
        normalize_steps([1])
    assert normalize_steps([0.01]) == (0.01,) and normalize_steps([1, 100]) == (0.01,)
    with pytest.raises(ValidationError, match="strictly increasing"):
        normalize_steps([1, 5, 101])


def test_number_lists_and_intervals_are_usage_errors(sqlite_project: Project) -> None:
    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}
    for args, message in (
        (["canary", "api", refs[1], "--steps", "5,x"], "Invalid value for --steps: '5,x' is not a comma-separated"),
        (["ab", "api", *refs, "--weights", "0.5,abc"], "Invalid value for --weights: '0.5,abc'"),
        (["evaluate", "api", "--watch", "-1"], "-1.0 is not in the range x>0"),
        (["serve", "--port", "70000"], "70000 is not in the range 1<=x<=65535"),
    ):
        result = CliRunner().invoke(deploy, args, obj=obj)
        assert result.exit_code == 2 and message in result.output, result.output


def test_promote_with_nothing_to_promote_is_an_error_and_records_nothing(sqlite_project: Project) -> None:
    import loopstack as ls

    refs = register(sqlite_project, count=1)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj).exit_code == 0
    result = CliRunner().invoke(deploy, ["promote", "api"], obj=obj)
    assert result.exit_code == 1 and isinstance(result.exception, ls.ConflictError)
    assert "already serves only 'm/1': nothing to promote" in str(result.exception)
    assert sqlite_project.deployments.get("api").version == 1
    assert sqlite_project.events.list(kind="rollout.promoted") == []


def test_a_log_dir_that_does_not_exist_is_named(sqlite_project: Project, tmp_path: Path) -> None:
    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj).exit_code == 0
    assert CliRunner().invoke(deploy, ["canary", "api", refs[1]], obj=obj).exit_code == 0
    for command in ("status", "evaluate"):  # read as no traffic at all, a canary would hold forever
        result = CliRunner().invoke(deploy, [command, "api", "--log-dir", str(tmp_path / "typo")], obj=obj)
        assert result.exit_code == 2 and "Directory" in result.output and "typo' does not exist" in result.output


def test_deploy_delete_asks_then_removes_and_unblocks_the_models_it_served(sqlite_project: Project,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The errors told users to delete a deployment first, with no command to do it."""
    import loopstack as ls
    from loopstack.core.errors import ConfigError, ConflictError

    refs = register(sqlite_project, count=1)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj).exit_code == 0
    again = CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj)
    assert isinstance(again.exception, ConflictError) and "loopstack deploy delete api" in str(again.exception)
    name, version = refs[0].split("/")
    with pytest.raises(ConflictError, match="loopstack deploy delete api"):
        ls.registry.delete_model_version(name, int(version), project=sqlite_project)
    piped = CliRunner().invoke(deploy, ["delete", "api"], obj=obj, input="")  # stdin not a terminal: no one asked
    assert piped.exit_code == 1 and isinstance(piped.exception, ConfigError)
    assert str(piped.exception) == "refusing to delete without confirmation; pass --yes"
    monkeypatch.setattr("loopstack.core.cli.stdin_is_terminal", lambda: True)
    declined = CliRunner().invoke(deploy, ["delete", "api"], obj=obj, input="n\n")
    assert declined.exit_code == 1 and sqlite_project.deployments.get("api").endpoint == "api"
    result = CliRunner().invoke(deploy, ["delete", "api", "--yes"], obj=obj)
    assert result.exit_code == 0 and result.output.startswith("deleted deployment api"), result.output
    assert [e.kind for e in sqlite_project.events.list(kind="deployment.deleted")] == ["deployment.deleted"]
    ls.registry.delete_model_version(name, int(version), project=sqlite_project)  # no longer served
    unknown = CliRunner().invoke(deploy, ["delete", "nope", "--yes"], obj=obj)
    assert unknown.exit_code == 1 and isinstance(unknown.exception, ls.NotFoundError)


def test_an_ab_test_naming_one_variant_twice_is_refused_by_name(sqlite_project: Project) -> None:
    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0]], obj=obj).exit_code == 0
    result = CliRunner().invoke(deploy, ["ab", "api", f"c={refs[0]}", f"c={refs[1]}"], obj=obj)
    assert result.exit_code == 2 and "variant name(s) ['c'] are given more than once" in result.output


def test_deploy_serve_names_a_port_in_use_before_its_address(sqlite_project: Project,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'serving deployments ... on' line was printed, then uvicorn's raw address-in-use error."""
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("uvicorn was started"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(deploy, ["serve", "--port", str(port)],
                                    obj={"project_path": str(sqlite_project.root)})
    assert result.exit_code == 1 and str(result.exception) == f"port {port} is in use; pick another with --port"
    assert "serving" not in result.output


def test_status_shows_a_dash_not_the_prior_where_a_guardrail_has_too_little_data(
    sqlite_project: Project, tmp_path: Path
) -> None:
    """A stable variant without requests showed error_rate 0.5000 and an interval of +-44 (the prior's numbers)."""
    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}

    def run(*args: str) -> str:
        result = CliRunner(env={"COLUMNS": "200"}).invoke(deploy, list(args), obj=obj, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("create", "api", refs[0])
    run("canary", "api", refs[1], "--steps", "10,100", "--min-requests", "100")
    log = TrafficLog(tmp_path)
    for i in range(5):  # only canary requests so far
        log.record(request_id=f"r{i}", endpoint="api", variant=refs[1], ref=refs[1], deployment_version=2,
                   unit_id=None, shadow=False, ok=True, status=200, latency_ms=3.0)
    log.close()
    assert run("evaluate", "api", "--log-dir", str(tmp_path)).startswith("hold")
    status = run("status", "api", "--log-dir", str(tmp_path))
    (row,) = [line for line in status.splitlines() if "error_rate" in line]
    cells = [cell.strip() for cell in row.strip("│┃ ").split("│")]
    assert cells == ["error_rate", "not enough data", "-", "0.0000", "-", "-"], row
    assert "0.5000" not in status and "44." not in status
    assert "latest decision, event" in status and "at 5 canary requests" in status


def test_verdict_cells_keep_the_numbers_of_a_guardrail_with_enough_data() -> None:
    from loopstack.rollout.cli import _verdict_cells
    from loopstack.rollout.guardrails import CanaryAnalysis, CanaryPolicy, VariantStats

    canary = CanaryAnalysis(CanaryPolicy(steps=(0.1, 0.5), min_requests_per_step=500))
    decision = canary.evaluate(VariantStats(9000, 90), VariantStats(1000, 10))
    (error_rate,) = [e for e in decision.evidence if e["metric"] == "error_rate"]
    verdict, stable, canary_rate, diff, interval = _verdict_cells(error_rate)
    assert verdict == "ok" and stable.startswith("0.01") and canary_rate.startswith("0.01")
    assert diff != "-" and interval.startswith("[-0.")


def test_verdict_cells_say_when_a_guardrail_is_not_yet_non_inferior() -> None:
    from loopstack.rollout.cli import _verdict_cells
    from loopstack.rollout.guardrails import CanaryAnalysis, CanaryPolicy, VariantStats

    policy = CanaryPolicy(steps=(0.5,), min_requests_per_step=500, guardrails=("error_rate",),
                          require_non_inferiority=True, error_margin=0.001)  # one step: the promotion needs it
    decision = CanaryAnalysis(policy).evaluate(VariantStats(1000, 10), VariantStats(1000, 10))
    assert decision.action == "hold" and "not yet shown non-inferior: error_rate" in decision.reason
    (error_rate,) = [e for e in decision.evidence if e["metric"] == "error_rate"]
    assert _verdict_cells(error_rate)[0] == "ok (not yet non-inferior)"


def test_deploy_canary_takes_the_margins_non_inferiority_and_the_hold_limits(sqlite_project: Project) -> None:
    """The policy's margins, non-inferiority and hold limits were reachable from Python only."""
    refs = register(sqlite_project, count=2)
    obj = {"project_path": str(sqlite_project.root)}
    assert CliRunner().invoke(deploy, ["create", "api", refs[0], "--primary-metric", "conversion"],
                              obj=obj).exit_code == 0
    refused = CliRunner().invoke(deploy, ["canary", "api", refs[1], "--non-inferior", "--error-margin", "0.002"],
                                 obj=obj)
    assert refused.exit_code != 0 and "primary_margin=0.0" in str(refused.exception)  # the primary needs one too
    result = CliRunner().invoke(deploy, ["canary", "api", refs[1], "--steps", "10,100", "--non-inferior",
                                         "--error-margin", "0.002", "--latency-margin", "0.01",
                                         "--primary-margin", "0.005", "--max-requests", "50000", "--max-holds", "12"],
                                 obj=obj)
    assert result.exit_code == 0, result.output
    policy = sqlite_project.deployments.get("api").policy
    assert {k: policy[k] for k in ("error_margin", "latency_margin", "primary_margin", "require_non_inferiority",
                                   "max_canary_requests", "max_hold_evaluations")} == {
        "error_margin": 0.002, "latency_margin": 0.01, "primary_margin": 0.005, "require_non_inferiority": True,
        "max_canary_requests": 50000, "max_hold_evaluations": 12}
