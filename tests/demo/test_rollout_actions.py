"""The demo's shadow action killed at each point and rerun with its checkpoint: one verdict, never a second shadow."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import loopstack.demo.rollout as demo_rollout
from loopstack.demo.config import ENDPOINT
from loopstack.pipelines import StopLoop
from tests.conftest import fresh_project
from tests.rollout.conftest import register


class Killed(BaseException):
    """The process dying at a chosen point (not an Exception: nothing may catch it)."""


class World:
    """The part of `loopstack.demo.world.World` the shadow action uses; traffic is already enough."""

    def __init__(self, project: Any, challenger: str) -> None:
        self.project = project
        self.state: dict[str, Any] = {"challenger": challenger, "counts": {"stable": {"requests": 10**9}}}
        self.scenario = mock.Mock(shadow_requests=1)
        self.kill_at = ""  # "follow 2": the second follow(); "flush": flush_log(), just before the verdict
        self.follows = 0

    def deployment(self) -> Any:
        return self.project.deployments.get(ENDPOINT)

    def follow(self) -> Any:
        self.follows += 1
        if self.kill_at == f"follow {self.follows}":
            raise Killed
        return self.deployment()

    def advance(self) -> None:
        pass

    def flush_log(self) -> None:
        if self.kill_at == "flush":
            raise Killed


class Context:
    """An `ActionContext` whose checkpoint survives the kill, as the loop engine's stored one does."""

    def __init__(self, project: Any, state: dict[str, Any], kill_after: str = "") -> None:
        self.project, self.state, self.cause, self.kill_after = project, state, None, kill_after

    def emit(self, kind: str, payload: Any, subject: str | None = None) -> int:
        self.cause = self.project.events.emit(kind, subject or "test", payload, cause=self.cause)
        return self.cause

    def checkpoint(self, **state: Any) -> None:
        self.state.update(state)
        if self.kill_after in state:
            raise Killed


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    with fresh_project(tmp_path / "p") as project:
        refs = register(project, count=2)
        project.deployments.create(ENDPOINT, refs[0])
        yield project, World(project, refs[1])


def reporting(errors: int) -> Any:
    """The shadow's report, as if the logs held `errors` failed mirrored requests."""
    return mock.patch.object(demo_rollout, "shadow_report", return_value={"errors": errors})


def kinds(project: Any) -> list[str]:
    return [e.kind for e in project.events.list(subject=ENDPOINT, newest_first=False, limit=100)]


@pytest.mark.parametrize("kill", ["report", "follow 2"], ids=["before-the-rollback", "after-the-rollback"])
def test_a_failed_shadow_killed_at_its_verdict_is_not_shadowed_again(setup: Any, kill: str) -> None:
    project, world = setup
    saved: dict[str, Any] = {}
    world.kill_at = kill  # follow 1 starts the shadow, follow 2 comes after the failed verdict's rollback
    with reporting(errors=3), pytest.raises(Killed):
        demo_rollout.shadow(world, Context(project, saved, kill_after=kill))
    world.kill_at = ""
    with reporting(errors=0), pytest.raises(StopLoop, match="failed 3 shadow requests"):  # it would pass now
        demo_rollout.shadow(world, Context(project, saved))
    assert world.deployment().strategy == "single"
    assert kinds(project).count("deployment.changed") == 1 and kinds(project).count("rollout.rolled_back") == 1


def test_a_shadow_ended_from_outside_is_not_started_again(setup: Any) -> None:
    project, world = setup
    saved: dict[str, Any] = {}
    world.kill_at = "flush"  # killed after the shadow started, before its verdict
    with pytest.raises(Killed):
        demo_rollout.shadow(world, Context(project, saved))
    project.deployments.rollback(ENDPOINT, reason="by hand")
    world.kill_at = ""
    with pytest.raises(StopLoop, match="ended from outside"):
        demo_rollout.shadow(world, Context(project, saved))
    assert world.deployment().strategy == "single" and kinds(project).count("deployment.changed") == 1


def test_a_passing_shadow_resumed_mid_way_is_judged_once(setup: Any) -> None:
    project, world = setup
    saved: dict[str, Any] = {}
    world.kill_at = "flush"
    with pytest.raises(Killed):
        demo_rollout.shadow(world, Context(project, saved))
    world.kill_at = ""
    with reporting(errors=0):
        assert demo_rollout.shadow(world, Context(project, saved)) == {"errors": 0}
    d = world.deployment()
    assert (d.strategy, d.challenger) == ("shadow", world.state["challenger"])
    assert kinds(project).count("deployment.changed") == 1 and kinds(project).count("rollout.shadow.passed") == 1
