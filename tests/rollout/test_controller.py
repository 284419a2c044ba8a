"""The rollout controller: decisions from the logs, applied and recorded, resumable, and end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from loopstack.core.errors import ConflictError, ValidationError
from loopstack.core.project import Project
from loopstack.rollout import RolloutController, TrafficLog, TrafficRouter
from loopstack.serving import PredictionLog, ServerSettings, create_app

from .conftest import Stub, register


@pytest.fixture
def refs(sqlite_project: Project) -> list[str]:
    return register(sqlite_project)


def simulate(project: Project, log_dir: Path, n: int, error: dict[str, float], rng: np.random.Generator,
             reward: dict[str, float] | None = None, start: int = 0) -> None:
    """`n` requests routed as the live deployment says, with per-variant error and conversion rates."""
    d = project.deployments.get("api")
    router = TrafficRouter(d, seed=int(rng.integers(1 << 30)))
    log = TrafficLog(log_dir)
    feedback = []
    for i in range(start, start + n):
        variant = router.choose(f"user-{i}")
        ok = bool(rng.random() >= error[variant])
        log.record(request_id=f"r{i}", endpoint="api", variant=variant, ref=d.variants[variant],
                   deployment_version=d.version, unit_id=f"user-{i}", shadow=False, ok=ok, status=200 if ok else 500,
                   latency_ms=float(rng.lognormal(1.0, 0.3)))
        if reward is not None and ok:
            feedback.append({"request_id": f"r{i}", "label": int(rng.random() < reward[variant])})
    log.close()
    if feedback:
        predictions = PredictionLog(log_dir)
        predictions.feedback(feedback)
        predictions.close()


def equal_canary(project: Project, refs: list[str], log_dir: Path, steps: list[int],
                 min_requests: int) -> tuple[RolloutController, dict[str, float]]:
    """A canary of refs[1] against refs[0], both failing 1 % of requests, and its controller."""
    project.deployments.create("api", refs[0])
    project.deployments.canary("api", refs[1], steps=steps, min_requests_per_step=min_requests, salt="fixed")
    return RolloutController(project, "api", log_dir=log_dir), {refs[0]: 0.01, refs[1]: 0.01}


def drive(project: Project, log_dir: Path, error: dict[str, float], reward: dict[str, float] | None = None,
          per_tick: int = 4000, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    controller = RolloutController(project, "api", log_dir=log_dir)
    actions = []
    for tick in range(40):
        simulate(project, log_dir, per_tick, error, rng, reward, start=tick * per_tick)
        actions.append(controller.evaluate().action)
        if actions[-1] in ("promote", "rollback"):
            return actions
    raise AssertionError(f"the canary did not finish: {actions}")


def test_twice_the_errors_is_rolled_back_with_evidence(sqlite_project: Project, refs: list[str],
                                                       tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[5, 25, 50, 100], min_requests_per_step=2000, salt="fixed")
    actions = drive(sqlite_project, tmp_path, {refs[0]: 0.01, refs[1]: 0.02})
    assert actions[-1] == "rollback"
    d = deployments.get("api")
    assert (d.strategy, d.weights) == ("single", {refs[0]: 1.0})
    decision = sqlite_project.events.list(kind="rollout.canary.rollback", subject="api")[0]
    rolled = sqlite_project.events.list(kind="rollout.rolled_back", subject="api")[0]
    assert rolled.cause == decision.id and "error_rate" in rolled.payload["reason"]
    worse = [e for e in decision.payload["evidence"] if e.get("verdict") == "worse"]
    assert worse[0]["metric"] == "error_rate" and worse[0]["diff_ci"][0] > 0
    by_variant = {v["variant"]: v for v in decision.payload["variants"]}
    assert by_variant[refs[1]]["error_rate"] > by_variant[refs[0]]["error_rate"]


def test_an_equal_challenger_climbs_every_step_and_is_promoted(sqlite_project: Project, refs: list[str],
                                                               tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="conversion")
    deployments.canary("api", refs[1], steps=[5, 25, 50, 100], min_requests_per_step=2000, salt="fixed")
    rates = {refs[0]: 0.01, refs[1]: 0.01}
    actions = drive(sqlite_project, tmp_path, rates, reward={refs[0]: 0.1, refs[1]: 0.1}, seed=1)
    assert actions.count("advance") == 2 and actions[-1] == "promote"
    d = deployments.get("api")
    assert (d.champion, d.previous, d.weights[refs[1]]) == (refs[1], refs[0], 1.0)
    steps = sqlite_project.events.list(kind="rollout.canary.step", subject="api", newest_first=False)
    assert [e.payload["weights"][refs[1]] for e in steps] == [0.25, 0.5]
    promote = sqlite_project.events.list(kind="rollout.canary.promote", subject="api")[0]
    assert {e["metric"] for e in promote.payload["evidence"]} == {"sample_ratio", "error_rate", "latency_tail",
                                                                  "primary"}
    # no cause passed: the chain of the promotion still reaches the change that started the canary
    (started,) = sqlite_project.events.list(kind="deployment.changed", subject="api")
    promoted = sqlite_project.events.list(kind="rollout.promoted", subject="api")[0]
    chain = [e.kind for e in sqlite_project.events.chain(promoted.id)]
    assert chain == ["deployment.changed", "rollout.canary.promote", "rollout.promoted"]
    assert sqlite_project.events.chain(promote.id)[0].id == started.id
    assert "error_rate, latency_tail and primary not worse on" in promote.payload["reason"]


def test_a_worse_primary_metric_rolls_back(sqlite_project: Project, refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="conversion")
    deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=5000, salt="fixed")
    actions = drive(sqlite_project, tmp_path, {refs[0]: 0.0, refs[1]: 0.0},
                    reward={refs[0]: 0.20, refs[1]: 0.12}, seed=2)
    assert actions[-1] == "rollback"
    assert sqlite_project.events.list(kind="rollout.rolled_back")[0].payload["reason"] == "guardrail failed: primary"
    with pytest.raises(ConflictError, match=r"its last canary was rolled back\); start one with `loopstack deploy"):
        RolloutController(sqlite_project, "api", log_dir=tmp_path).evaluate()  # a tick after the end says so


def test_alpha_is_split_over_every_guardrail_from_the_first_tick(sqlite_project: Project, refs: list[str],
                                                                  tmp_path: Path) -> None:
    # the primary metric was left out of the split until its first label arrived, a tick later
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="conversion")
    deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=10**6, salt="fixed", alpha=0.05)
    rng = np.random.default_rng(5)
    rates = {refs[0]: 0.01, refs[1]: 0.01}
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    simulate(sqlite_project, tmp_path, 500, rates, rng)
    controller.evaluate()  # no label yet
    simulate(sqlite_project, tmp_path, 500, rates, rng, reward={refs[0]: 0.1, refs[1]: 0.1}, start=500)
    decision = controller.evaluate()
    tests = deployments.get("api").state["analysis"]["tests"]
    assert set(tests) == {"error_rate", "latency_tail", "primary"}
    assert sum(t["alpha"] for t in tests.values()) == pytest.approx(0.05)
    assert {e["metric"]: e["alpha"] for e in decision.evidence if "alpha" in e} == {
        metric: t["alpha"] for metric, t in tests.items()}


def test_the_controller_resumes_after_a_restart(sqlite_project: Project, refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[10, 50, 100], min_requests_per_step=1500, salt="fixed")
    rng = np.random.default_rng(3)
    rates = {refs[0]: 0.01, refs[1]: 0.01}
    simulate(sqlite_project, tmp_path, 10_000, rates, rng)
    first = RolloutController(sqlite_project, "api", log_dir=tmp_path).evaluate()
    assert first.action == "hold"  # about 1,000 canary requests of 1,500
    root = sqlite_project.root
    sqlite_project.close()  # the process dies; a new one opens the project
    reopened = Project.open(root)
    try:
        simulate(reopened, tmp_path, 10_000, rates, rng, start=10_000)
        second = RolloutController(reopened, "api", log_dir=tmp_path).evaluate()
        assert second.action == "advance" and second.step == 1
        state = reopened.deployments.get("api").state
        assert state["analysis"]["step"] == 1 and state["analysis"]["tests"]["error_rate"]["looks"] == 2
        assert reopened.deployments.get("api").weights[refs[1]] == 0.5
        simulate(reopened, tmp_path, 2000, rates, rng, start=20_000)
        third = RolloutController(reopened, "api", log_dir=tmp_path).evaluate()
        assert third.action == "hold"  # the new step counts from where it began, not from the canary's start
        reopened.deployments.rollback("api", reason="by hand")
        with pytest.raises(ConflictError, match="runs no canary"):
            RolloutController(reopened, "api", log_dir=tmp_path).evaluate()
    finally:
        reopened.close()


def test_a_tick_without_new_traffic_records_no_new_hold(sqlite_project: Project, refs: list[str],
                                                          tmp_path: Path) -> None:
    controller, rates = equal_canary(sqlite_project, refs, tmp_path, steps=[10, 50, 100], min_requests=1500)
    rng = np.random.default_rng(5)
    simulate(sqlite_project, tmp_path, 5000, rates, rng)
    holds = [controller.evaluate().action for _ in range(3)]
    simulate(sqlite_project, tmp_path, 500, rates, rng, start=5000)
    holds.append(controller.evaluate().action)
    assert holds == ["hold"] * 4
    recorded = sqlite_project.events.list(kind="rollout.canary.hold", subject="api")
    assert len(recorded) == 2  # the first look, and the look after new traffic
    state = sqlite_project.deployments.get("api").state
    assert state["analysis"]["tests"]["error_rate"]["looks"] == 2


def test_bandit_moves_traffic_to_the_better_arm(sqlite_project: Project, refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    before = deployments.bandit("api", refs[:2], min_share=0.05)
    simulate(sqlite_project, tmp_path, 3000, {refs[0]: 0.0, refs[1]: 0.0}, np.random.default_rng(4),
             reward={refs[0]: 0.05, refs[1]: 0.15})
    RolloutController(sqlite_project, "api", log_dir=tmp_path).evaluate()
    after = deployments.get("api")
    assert after.version == before.version + 1
    assert after.weights[refs[1]] > 0.9 and after.weights[refs[0]] >= 0.04
    assert after.state["bandit"]["pulls"][refs[1]] > 0
    assert sqlite_project.events.list(kind="rollout.bandit.hold", subject="api")


@pytest.mark.parametrize(("challenger_errors", "outcome"), [(0.4, "rollback"), (0.2, "promote")])
def test_canary_end_to_end_through_the_server(sqlite_project: Project, refs: list[str], tmp_path: Path,
                                              challenger_errors: float, outcome: str) -> None:
    """Real requests, real logs: a challenger with twice the champion's errors is rolled back, an equal one promoted."""
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=400, planned_n=1000, salt="e2e")
    models = {refs[0]: Stub(error_rate=0.2, seed=5, version=1),
              refs[1]: Stub(offset=1, error_rate=challenger_errors, seed=6, version=2)}
    settings = ServerSettings(log_dir=str(tmp_path), log_flush_s=0.05)
    app = create_app([], settings, loader=models.__getitem__, deployments=deployments)
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    served = 0
    with TestClient(app) as client:
        endpoints = app.state.server.endpoints
        for _ in range(30):
            statuses = [client.post("/v1/endpoints/api:predict",
                                    json={"instances": [[1, 2, 3]], "unit_id": f"u{served + i}"}).status_code
                        for i in range(100)]
            assert set(statuses) <= {200, 500}
            served += 100
            endpoints.log.flush()
            decision = controller.evaluate()
            if decision.action in ("promote", "rollback"):
                break
        assert decision.action == outcome
        client.portal.call(endpoints.sync)
        winner = refs[0] if outcome == "rollback" else refs[1]
        answer = client.post("/v1/endpoints/api:predict", json={"instances": [[1, 2, 3]], "unit_id": "x"})
        assert answer.status_code != 200 or answer.json()["variant"] == winner
    assert served <= 1500


class Scorer:
    """A served binary classifier: P(class 1) = 0.1 + 0.8 * x0, or its mirror image when `inverted`."""

    n_features_in_ = 3
    classes_ = np.array([0, 1])

    def __init__(self, inverted: bool = False) -> None:
        self.inverted = inverted

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 0.1 + 0.8 * np.asarray(X, dtype=float)[:, 0]
        p = 1 - p if self.inverted else p
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


@pytest.mark.parametrize(("inverted", "outcome"), [(True, "rollback"), (False, "promote")])
def test_a_canary_judged_by_the_brier_score_of_its_predictions(sqlite_project: Project, refs: list[str],
                                                               tmp_path: Path, inverted: bool, outcome: str) -> None:
    """Labels arrive as feedback; each variant's logged probability is scored against them (no error differs)."""
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="brier")
    deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=300, planned_n=1000, salt="brier")
    models = {refs[0]: Scorer(), refs[1]: Scorer(inverted=inverted)}
    app = create_app([], ServerSettings(log_dir=str(tmp_path), log_flush_s=0.05), loader=models.__getitem__,
                     deployments=deployments)
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    rng = np.random.default_rng(11)
    with TestClient(app) as client:
        for tick in range(20):
            feedback = []
            for i in range(100):
                x = float(rng.random())
                answer = client.post("/v1/endpoints/api:predict",
                                     json={"instances": [[x, 0.0, 0.0]], "unit_id": f"u{tick}-{i}"}).json()
                feedback.append({"request_id": answer["request_id"], "label": int(rng.random() < 0.1 + 0.8 * x)})
            assert client.post("/v1/feedback", json=feedback).status_code == 202
            app.state.server.endpoints.log.flush()
            app.state.server.log.flush()
            decision = controller.evaluate()
            if decision.action in ("promote", "rollback"):
                break
    assert decision.action == outcome
    primary = next(e for e in decision.evidence if e["metric"] == "primary")
    traffic = controller.traffic(deployments.get("api"))
    assert min(len(t.rewards) for t in traffic.values()) > 100  # every labelled request was scored
    if inverted:
        assert primary["verdict"] == "worse" and decision.reason == "guardrail failed: primary"


def test_a_canary_stored_with_a_bad_setting_says_how_to_get_out(sqlite_project: Project) -> None:
    """Canaries started before their settings were checked at start fail each tick with the way out."""
    from dataclasses import replace

    refs = register(sqlite_project)
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[50, 100])
    deployments._change("api", "deployment.changed", lambda d: replace(d, policy={**d.policy, "alpha": 2.0}),
                        "a canary stored by an older version", None)
    with pytest.raises(ValidationError, match=r"alpha.*roll it back \(`loopstack deploy rollback api`\)"):
        RolloutController(sqlite_project, "api").evaluate()


def test_a_bandit_tick_does_not_overwrite_a_promotion_made_meanwhile(sqlite_project: Project, refs: list[str],
                                                                      tmp_path: Path) -> None:
    # the tick read the bandit, someone promoted by hand, then the tick wrote its split over the promotion:
    # a 'single' deployment serving two variants
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.bandit("api", refs[:2], min_share=0.05)
    simulate(sqlite_project, tmp_path, 2000, {refs[0]: 0.0, refs[1]: 0.0}, np.random.default_rng(4),
             reward={refs[0]: 0.05, refs[1]: 0.15})
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    read = controller.traffic

    def promoted_while_reading(d=None):
        traffic = read(d)
        deployments.promote("api", refs[1], reason="by hand")
        return traffic

    controller.traffic = promoted_while_reading  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="changed meanwhile"):
        controller.evaluate()
    d = deployments.get("api")
    assert (d.strategy, d.champion, d.live_variants) == ("single", refs[1], [refs[1]])
    assert sqlite_project.events.list(kind="rollout.bandit.hold", subject="api") == []


def test_a_canary_decision_refused_by_a_change_made_meanwhile_is_not_recorded(sqlite_project: Project,
                                                                              refs: list[str], tmp_path: Path) -> None:
    # the decision event was written before the change it caused was refused: the log showed an advance
    # (with its evidence) that never happened, after the rollback that did
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[10, 50, 100], min_requests_per_step=500, salt="fixed")
    simulate(sqlite_project, tmp_path, 10_000, {refs[0]: 0.01, refs[1]: 0.01}, np.random.default_rng(6))
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    read = controller.traffic

    def rolled_back_while_reading(d=None):
        traffic = read(d)
        deployments.rollback("api", reason="by hand")
        return traffic

    controller.traffic = rolled_back_while_reading  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="changed meanwhile"):
        controller.evaluate()
    kinds = [e.kind for e in sqlite_project.events.list(subject="api", newest_first=False)]
    assert kinds == ["deployment.created", "deployment.changed", "rollout.rolled_back"]
    assert controller.last_event is None


def test_a_decision_event_causes_its_change_and_is_kept_in_the_state(sqlite_project: Project, refs: list[str],
                                                                      tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[10, 50, 100], min_requests_per_step=500, salt="fixed")
    simulate(sqlite_project, tmp_path, 10_000, {refs[0]: 0.01, refs[1]: 0.01}, np.random.default_rng(6))
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    assert controller.evaluate(cause=None).action == "advance"
    (decided,) = sqlite_project.events.list(kind="rollout.canary.advance", subject="api")
    (step,) = sqlite_project.events.list(kind="rollout.canary.step", subject="api")
    assert controller.last_event == decided.id == step.cause == deployments.get("api").state["last_event"]


def test_decisions_on_too_little_data_are_recorded_on_postgresql_too(project: Project, tmp_path: Path) -> None:
    # one label per variant: the primary metric's difference is NaN and its interval infinite, and PostgreSQL's JSON
    # type refuses NaN and Infinity, so the hold could not be recorded there (SQLite took it)
    from loopstack.rollout.stats import Summary, analyze

    refs = register(project, count=2)
    project.deployments.create("api", refs[0], primary_metric="conversion")
    project.deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=1000, salt="fixed")
    d = project.deployments.get("api")
    log = TrafficLog(tmp_path)
    for i, variant in enumerate(refs):
        log.record(request_id=f"r{i}", endpoint="api", variant=variant, ref=variant, deployment_version=d.version,
                   unit_id=f"u{i}", shadow=False, ok=True, status=200, latency_ms=1.0)
    log.close()
    predictions = PredictionLog(tmp_path)
    predictions.feedback([{"request_id": "r0", "label": 1}, {"request_id": "r1", "label": 0}])
    predictions.close()
    assert RolloutController(project, "api", log_dir=tmp_path).evaluate().action == "hold"
    (hold,) = project.events.list(kind="rollout.canary.hold", subject="api")
    primary = next(e for e in hold.payload["evidence"] if e["metric"] == "primary")
    assert primary["diff"] is None and primary["diff_ci"] == [None, None] and primary["verdict"] == "insufficient"
    # a fixed-horizon report against a control whose mean is 0: Welch's statistic is inf and the lift NaN
    report = analyze({"conversion": (Summary(100, 0.0, 0.0), Summary(100, 1.0, 0.0))})
    project.events.emit("experiment.report", "api", report.to_dict())
    (verdict,) = project.events.list(kind="experiment.report")[0].payload["verdicts"]
    assert verdict["statistic"] is None and verdict["lift"] is None and verdict["lift_ci"] == [None, None]


def test_the_traffic_says_which_of_a_variants_requests_are_labelled(sqlite_project: Project, refs: list[str],
                                                                      tmp_path: Path) -> None:
    """A step counts the labels of its own requests: the positions among the variant's requests carry that."""
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="conversion")
    deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=100, salt="fixed")
    simulate(sqlite_project, tmp_path, 400, {refs[0]: 0.0, refs[1]: 0.0}, np.random.default_rng(0))
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    d = deployments.get("api")
    router = TrafficRouter(d, seed=0)  # the split hashes the unit id: the same choice simulate's router made
    canary_ids = [f"r{i}" for i in range(400) if router.choose(f"user-{i}") == d.challenger]
    labelled = canary_ids[5:40:3]  # a few of the canary's early requests, labelled late
    predictions = PredictionLog(tmp_path)
    predictions.feedback([{"request_id": request_id, "label": 1} for request_id in labelled])
    predictions.close()
    traffic = controller.traffic(d)[d.challenger]
    assert traffic.requests == len(canary_ids)
    assert list(traffic.rewarded_at) == list(range(5, 40, 3))
    assert list(traffic.stats().labelled) == list(range(5, 40, 3))


def test_requests_routed_at_the_previous_split_do_not_trip_the_sample_ratio_check(sqlite_project: Project,
                                                                                 refs: list[str],
                                                                                 tmp_path: Path) -> None:
    """Servers pick a step change up within a poll, so some requests of the new step are routed at the old
    5 % split; counted against the new 50 %, they flagged a sample ratio mismatch and held the step."""
    from dataclasses import replace

    controller, rates = equal_canary(sqlite_project, refs, tmp_path, steps=[5, 50, 100], min_requests=500)
    rng = np.random.default_rng(3)
    simulate(sqlite_project, tmp_path, 14000, rates, rng)
    assert controller.evaluate().action == "advance"  # now at 50 %, under a new deployment version
    now = sqlite_project.deployments.get("api")
    before = replace(now, weights={refs[0]: 0.95, refs[1]: 0.05}, version=now.version - 1)
    router, log = TrafficRouter(before, seed=1), TrafficLog(tmp_path)
    for i in range(14000, 17000):  # a server still on the previous version
        variant = router.choose(f"user-{i}")
        log.record(request_id=f"r{i}", endpoint="api", variant=variant, ref=before.variants[variant],
                   deployment_version=before.version, unit_id=f"user-{i}", shadow=False, ok=True, status=200,
                   latency_ms=3.0)
    log.close()
    simulate(sqlite_project, tmp_path, 3000, rates, rng, start=17000)
    decision = controller.evaluate()
    ratio = next(e for e in decision.evidence if e["metric"] == "sample_ratio")
    assert not ratio["flagged"], ratio
    assert "sample ratio" not in decision.reason


def test_a_canary_started_before_its_start_was_recorded_chains_to_its_latest_change(
        sqlite_project: Project, refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0])
    deployments.canary("api", refs[1], steps=[10, 50, 100], min_requests_per_step=500, salt="fixed")
    started = deployments.last_event
    assert deployments.get("api").state["started_by"] == started
    d = deployments.get("api")
    deployments.save_state("api", {k: v for k, v in d.state.items() if k != "started_by"}, expected_version=d.version)
    simulate(sqlite_project, tmp_path, 10_000, {refs[0]: 0.01, refs[1]: 0.01}, np.random.default_rng(6))
    controller = RolloutController(sqlite_project, "api", log_dir=tmp_path)
    assert controller.evaluate().action == "advance"
    assert [e.id for e in sqlite_project.events.chain(controller.last_event)] == [started, controller.last_event]


def skewed(project: Project, log_dir: Path, stable: int, canary: int, start: int) -> int:
    """`stable` and `canary` requests logged under the live version, whatever its weights say (a broken split)."""
    d = project.deployments.get("api")
    log = TrafficLog(log_dir)
    for i, variant in enumerate([d.champion] * stable + [d.challenger] * canary, start=start):
        log.record(request_id=f"r{i}", endpoint="api", variant=variant, ref=d.variants[variant],
                   deployment_version=d.version, unit_id=f"user-{i}", shadow=False, ok=True, status=200,
                   latency_ms=3.0)
    log.close()
    return start + stable + canary


def _error_rate_canary(project: Project, refs: list[str], log_dir: Path, **policy: object) -> RolloutController:
    """A canary of refs[1] on "api" in two steps (50 %, 100 %) of 100 requests, guarding the error rate only."""
    project.deployments.create("api", refs[0], guardrails=["error_rate"])
    project.deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=100, salt="fixed", **policy)
    return RolloutController(project, "api", log_dir=log_dir)


def test_a_persisting_sample_ratio_mismatch_is_recorded_once_then_rolled_back_at_the_limit(
        sqlite_project: Project, refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    controller = _error_rate_canary(sqlite_project, refs, tmp_path, max_hold_evaluations=3)
    at, actions = 0, []
    for _ in range(4):
        at = skewed(sqlite_project, tmp_path, 1000, 800, at)  # the canary gets 44 %, not 50 %, every tick
        actions.append(controller.evaluate().action)
        if actions[-1] != "hold":
            break
        assert controller.evaluate().action == "hold"  # a tick without new traffic changes nothing
    assert actions == ["hold", "hold", "rollback"]
    # recorded once, and again once the canary's requests doubled (800, 1,600), not on every tick
    holds = sqlite_project.events.list(kind="rollout.canary.hold", subject="api", newest_first=False)
    assert [h.payload["canary_requests"] for h in holds] == [800, 1600]
    assert {h.payload["reason"] for h in holds} == {"sample ratio mismatch in this step; check the traffic split"}
    (rollback,) = sqlite_project.events.list(kind="rollout.canary.rollback", subject="api")
    assert rollback.payload["reason"] == ("sample ratio mismatch persisted for 3 evaluations (max_hold_evaluations): "
                                          "step 1/1: check the traffic split")
    rolled = sqlite_project.events.list(kind="rollout.rolled_back", subject="api")[0]
    assert rolled.cause == rollback.id
    d = deployments.get("api")
    assert d.strategy == "single" and d.state["analysis"]["stalled"] == 3 and d.state["last_decision"] == "rollback"


def test_a_hold_kept_without_an_event_still_carries_its_progress(sqlite_project: Project, refs: list[str],
                                                                  tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    controller = _error_rate_canary(sqlite_project, refs, tmp_path, max_hold_evaluations=5)
    at = skewed(sqlite_project, tmp_path, 1000, 800, 0)
    controller.evaluate()
    at = skewed(sqlite_project, tmp_path, 500, 400, at)  # the canary's requests grew by half: not recorded again
    controller.evaluate()
    state = deployments.get("api").state
    assert state["analysis"]["stalled"] == 2 and state["analysis"]["tests"]["error_rate"]["looks"] == 2
    assert state["seen"][refs[0]][0] == 1500 and len(sqlite_project.events.list(kind="rollout.canary.hold")) == 1
    # the split heals: the canary is promoted, and that is recorded
    skewed(sqlite_project, tmp_path, 1500, 1800, at)  # 3,000 each since the step began
    assert controller.evaluate().action == "promote"
    assert [e.kind for e in sqlite_project.events.list(kind="rollout.canary.", subject="api", newest_first=False)] == [
        "rollout.canary.hold", "rollout.canary.promote"]


def test_a_state_saved_before_holds_were_bounded_still_loads(sqlite_project: Project, refs: list[str],
                                                             tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    controller = _error_rate_canary(sqlite_project, refs, tmp_path, max_hold_evaluations=2)
    at = skewed(sqlite_project, tmp_path, 1000, 800, 0)
    assert controller.evaluate().action == "hold"
    d = deployments.get("api")
    old = {key: value for key, value in d.state.items() if key != "last_reason"}  # as the version before stored it
    old["analysis"] = {key: value for key, value in old["analysis"].items()
                       if key not in ("stalled", "waiting", "counts")}
    deployments.save_state("api", old, expected_version=d.version)
    at = skewed(sqlite_project, tmp_path, 1000, 800, at)
    assert controller.evaluate().action == "hold"  # its count starts again at 1; recorded, as it had no last reason
    assert len(sqlite_project.events.list(kind="rollout.canary.hold", subject="api")) == 2
    assert deployments.get("api").state["last_reason"].startswith("sample ratio mismatch")
    skewed(sqlite_project, tmp_path, 1000, 800, at)
    assert controller.evaluate().action == "rollback"


def test_non_inferiority_is_checked_against_the_deployments_own_guardrails(sqlite_project: Project,
                                                                          refs: list[str]) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], primary_metric="conversion")  # error rate, p99 latency and conversion
    with pytest.raises(ValidationError, match=r"positive margin .* got latency_margin=0.0, primary_margin=0.0: "):
        deployments.canary("api", refs[1], steps=[50, 100], require_non_inferiority=True, error_margin=0.002)
    assert deployments.get("api").strategy == "single"  # refused before anything changed
    with pytest.raises(ValidationError, match="max_canary_requests must be None"):
        deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=1000, max_canary_requests=900)
    deployments.create("api-2", refs[0], guardrails=["error_rate"])  # guards the error rate only: one margin
    d = deployments.canary("api-2", refs[1], steps=[50, 100], require_non_inferiority=True, error_margin=0.002,
                           max_canary_requests=50_000)
    assert d.policy["require_non_inferiority"] is True
    from loopstack.rollout.controller import canary_policy

    policy = canary_policy(deployments.get("api-2"))
    assert (policy.require_non_inferiority, policy.guardrails, policy.max_canary_requests) == (
        True, ("error_rate",), 50_000)


def test_an_equal_challenger_is_promoted_as_non_inferior_through_the_controller(sqlite_project: Project,
                                                                               refs: list[str], tmp_path: Path) -> None:
    deployments = sqlite_project.deployments
    deployments.create("api", refs[0], guardrails=["error_rate"])
    deployments.canary("api", refs[1], steps=[50, 100], min_requests_per_step=1000, salt="fixed",
                       require_non_inferiority=True, error_margin=0.01, max_canary_requests=20_000)
    actions = drive(sqlite_project, tmp_path, {refs[0]: 0.01, refs[1]: 0.01}, seed=3)
    assert actions[-1] == "promote"
    (promote,) = sqlite_project.events.list(kind="rollout.canary.promote", subject="api")
    assert "error_rate non-inferior (error_margin 0.01)" in promote.payload["reason"]
    error_rate = next(e for e in promote.payload["evidence"] if e["metric"] == "error_rate")
    assert error_rate["non_inferior"] is True and error_rate["diff_ci"][1] <= 0.01


def test_a_canary_starved_at_zero_requests_is_recorded_once(sqlite_project: Project, refs: list[str],
                                                            tmp_path: Path) -> None:
    """With no canary request at all, "doubled since the last record" held every tick: a hold event per tick."""
    controller = _error_rate_canary(sqlite_project, refs, tmp_path)
    at = 0
    for _ in range(5):
        at = skewed(sqlite_project, tmp_path, 500, 0, at)
        assert controller.evaluate().action == "hold"
    assert len(sqlite_project.events.list(kind="rollout.canary.hold", subject="api")) == 1
