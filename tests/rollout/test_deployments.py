"""Deployments in the metadata DB (SQLite and PostgreSQL): each change a new version and an event."""

from __future__ import annotations

import pytest

from loopstack.core.errors import ConflictError, NotFoundError, ValidationError
from loopstack.core.project import Project
from loopstack.rollout import Deployment, Deployments


def kinds(project: Project, endpoint: str) -> list[str]:
    return [e.kind for e in project.events.list(subject=endpoint, newest_first=False)]


def test_create_get_list_and_versions(project: Project, refs: list[str]) -> None:
    deployments = project.deployments
    assert isinstance(deployments, Deployments)
    d = deployments.create("api", refs[0], primary_metric="conversion")
    assert (d.strategy, d.champion, d.weights, d.version) == ("single", refs[0], {refs[0]: 1.0}, 1)
    assert deployments.get("api") == d
    deployments.create("other", refs[1])
    assert [x.endpoint for x in deployments.list()] == ["api", "other"]
    assert deployments.versions() == {"api": 1, "other": 1}
    assert deployments.get("api").primary_metric == "conversion"
    with pytest.raises(ConflictError, match="already exists"):
        deployments.create("api", refs[1])
    with pytest.raises(NotFoundError, match=r"'nope'.*known: \['api', 'other'\]"):
        deployments.get("nope")
    with pytest.raises(NotFoundError):
        deployments.create("bad", "m/99")
    with pytest.raises(ValidationError, match="endpoint name"):
        deployments.create("has space", refs[0])
    deployments.delete("other")
    assert deployments.names() == ["api"]
    assert kinds(project, "api") == ["deployment.created"]
    assert kinds(project, "other") == ["deployment.created", "deployment.deleted"]


def test_aliases_are_pinned_to_versions(project: Project, refs: list[str]) -> None:
    project.registry.set_alias("m", "champion", 2)
    d = project.deployments.create("api", "m@champion")
    project.registry.set_alias("m", "champion", 3)  # moving the alias later moves no traffic
    assert project.deployments.get("api").variants == {refs[1]: refs[1]} == d.variants


def test_canary_steps_promote_and_events_carry_reason_and_cause(project: Project, refs: list[str]) -> None:
    deployments = project.deployments
    deployments.create("api", refs[0])
    d = deployments.canary("api", refs[1], steps=[1, 5, 25, 50, 100], min_requests_per_step=500)
    assert d.steps == (0.01, 0.05, 0.25, 0.5) and d.step == 0
    assert d.weights == {refs[0]: 0.99, refs[1]: 0.01} and d.challenger == refs[1]
    assert d.policy["min_requests_per_step"] == 500 and d.state["started_at"] > 0
    with pytest.raises(ConflictError, match="running a canary"):
        deployments.canary("api", refs[2])
    cause = project.events.emit("drift.detected", "m", {})
    d = deployments.set_step("api", 2, expected_version=d.version, reason="step passed", cause=cause)
    assert d.weights[refs[1]] == 0.25 and d.version == 3
    with pytest.raises(ConflictError, match="changed meanwhile"):
        deployments.set_step("api", 3, expected_version=2)
    d = deployments.promote("api", reason="all steps passed")
    assert (d.strategy, d.champion, d.previous, d.weights) == ("single", refs[1], refs[0], {refs[1]: 1.0, refs[0]: 0.0})
    events = project.events.list(subject="api", newest_first=False)
    assert [e.kind for e in events] == ["deployment.created", "deployment.changed", "rollout.canary.step",
                                        "rollout.promoted"]
    step = events[2]
    assert step.cause == cause and step.payload["reason"] == "step passed" and step.payload["from_version"] == 2
    assert events[3].payload["weights"] == {refs[1]: 1.0, refs[0]: 0.0}
    # after a promotion the old champion is still there: a rollback is instant
    d = deployments.rollback("api", reason="regret")
    assert (d.champion, d.weights[refs[0]]) == (refs[0], 1.0)


def test_blue_green_rollback_and_nothing_to_roll_back(project: Project, refs: list[str]) -> None:
    deployments = project.deployments
    deployments.create("api", refs[0])
    with pytest.raises(ConflictError, match="nothing to roll back"):
        deployments.rollback("api")
    d = deployments.blue_green("api", refs[1])
    assert (d.strategy, d.champion, d.previous) == ("blue_green", refs[1], refs[0])
    assert d.weights == {refs[1]: 1.0, refs[0]: 0.0} and set(d.variants) == {refs[0], refs[1]}
    d = deployments.rollback("api")
    assert (d.champion, d.previous, d.weights[refs[0]]) == (refs[0], refs[1], 1.0)
    assert kinds(project, "api")[-2:] == ["deployment.changed", "rollout.rolled_back"]


def test_shadow_turns_into_canary_then_rolls_back(project: Project, refs: list[str]) -> None:
    deployments = project.deployments
    deployments.create("api", refs[0])
    d = deployments.shadow("api", refs[1])
    assert d.shadow == (refs[1],) and d.weights == {refs[0]: 1.0, refs[1]: 0.0} and d.live_variants == [refs[0]]
    d = deployments.canary("api", refs[1], steps=[10, 50])
    assert d.shadow == () and d.canary_weight == 0.1
    d = deployments.rollback("api", reason="guardrail failed: error_rate")
    assert (d.strategy, d.variants, d.weights) == ("single", {refs[0]: refs[0]}, {refs[0]: 1.0})
    event = project.events.list(kind="rollout.rolled_back", subject="api")[0]
    assert event.payload["reason"].startswith("guardrail")
    assert event.payload["retired"] == [refs[1]]  # the event names the challenger that left
    assert deployments.last_event == event.id  # so a caller can chain its next event to it


def test_ab_and_bandit(project: Project, refs: list[str]) -> None:
    deployments = project.deployments
    deployments.create("api", refs[0])
    with pytest.raises(ValidationError, match="summing to 1"):
        deployments.ab("api", {"control": refs[0], "treatment": refs[1]}, weights=[0.5, 0.6])
    d = deployments.ab("api", {"control": refs[0], "treatment": refs[1]}, weights=[0.3, 0.7], salt="exp-1")
    assert (d.champion, d.weights, d.salt) == ("control", {"control": 0.3, "treatment": 0.7}, "exp-1")
    deployments.rollback("api")
    d = deployments.bandit("api", refs, min_share=0.1)
    assert d.strategy == "bandit" and d.state["bandit"]["arms"] == refs
    assert sum(d.weights.values()) == pytest.approx(1.0)
    d = deployments.promote("api", refs[2])
    assert d.champion == refs[2] and d.live_variants == [refs[2]]


def test_deployment_record_checks() -> None:
    with pytest.raises(ValidationError, match="not among its variants"):
        Deployment("api", "single", {"a": "m/1"}, "b", {"b": 1.0})
    with pytest.raises(ValidationError, match="sum to 1"):
        Deployment("api", "single", {"a": "m/1"}, "a", {"a": 0.5})
    with pytest.raises(ValidationError, match="strategy"):
        Deployment("api", "rainbow", {"a": "m/1"}, "a", {"a": 1.0})


def test_weights_that_are_not_finite_numbers_are_refused(project: Project, refs: list[str]) -> None:
    # NaN slipped past both ">= 0" and "sums to 1" and was stored as the live split (a router cannot use it)
    deployments = project.deployments
    deployments.create("api", refs[0])
    for weights in ([float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(ValidationError, match="weights"):
            deployments.ab("api", {"control": refs[0], "treatment": refs[1]}, weights=weights)
    assert deployments.get("api").version == 1
    with pytest.raises(ValidationError, match="finite"):
        Deployment("api", "ab", {"a": "m/1", "b": "m/2"}, "a", {"a": float("nan"), "b": 1.0})


def test_waiting_for_labels_needs_a_primary_metric(project: Project, refs: list[str]) -> None:
    deployments = project.deployments
    deployments.create("api", refs[0])
    with pytest.raises(ValidationError, match=r"min_labels_per_step=50 .* has none; create it with primary_metric"):
        deployments.canary("api", refs[1], min_labels_per_step=50)
    assert deployments.get("api").strategy == "single"  # nothing changed
    deployments.create("scored", refs[0], primary_metric="brier", higher_is_better=False)
    d = deployments.canary("scored", refs[1], min_labels_per_step=50)
    assert d.policy["min_labels_per_step"] == 50


def test_a_version_deleted_between_pin_and_write_is_not_deployed(project: Project, refs: list[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployment read the version before its transaction: a delete committed in between left it serving
    a version that no longer existed."""
    deployments = project.deployments
    deployments.create("api", refs[0])
    pin = Deployments._pin

    def pin_then_deleted(self: Deployments, ref: str) -> str:
        pinned = pin(self, ref)
        name, _, version = pinned.rpartition("/")
        project.registry.delete_model_version(name, int(version))  # another process, just after the read
        return pinned

    monkeypatch.setattr(Deployments, "_pin", pin_then_deleted)
    with pytest.raises(ConflictError, match=f"model version {refs[1]} was deleted from the registry meanwhile"):
        deployments.canary("api", refs[1])
    with pytest.raises(ConflictError, match=f"model version {refs[2]} was deleted"):
        deployments.create("other", refs[2])
    d = deployments.get("api")
    assert d.strategy == "single" and list(d.variants.values()) == [refs[0]]


def test_a_running_experiment_is_named_in_words(project: Project, refs: list[str]) -> None:
    """The refusal read "is running a ab; ... before starting a blue_green"."""
    deployments = project.deployments
    deployments.create("api", refs[0])
    deployments.ab("api", [refs[0], refs[1]], salt="s")
    with pytest.raises(ConflictError, match=r"'api' is running an A/B test; promote or roll it back before starting "
                                            r"a blue-green switch\Z"):
        deployments.blue_green("api", refs[2])
    with pytest.raises(ConflictError, match=r"is running an A/B test; .* before starting a shadow deployment\Z"):
        deployments.shadow("api", refs[2])
