"""Loop policies: on a signal, run a sequence of actions, each recorded as an event with its cause.

A policy is data: triggers (`loopstack.pipelines.triggers`) and actions.
An action is anything callable with an `ActionContext`: `RunPipeline` runs a
pipeline; `Hook` wraps a function, which is how gate, shadow, canary and
promotion steps plug in. The context carries the cause to chain from, the
results of earlier actions, and a checkpoint that survives a restart, so an
action interrupted mid-way (a canary at step 3 of 5) resumes where it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loopstack.core.errors import ConfigError, LoopstackError
from loopstack.pipelines.triggers import OnEvent, Schedule, Trigger

if TYPE_CHECKING:
    from loopstack.core.events import Event
    from loopstack.core.project import Project
    from loopstack.pipelines.dags import Pipeline
    from loopstack.pipelines.executors import Executor

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}\Z")


class StopLoop(LoopstackError):
    """Raise from an action to end the run early and on purpose (a gate said no); not a failure."""


@dataclass
class ActionContext:
    """What an action sees: the project, the signal, earlier results, its checkpoint.

    ``cause`` is the id of the latest event in this run's story. An action that
    emits events with `emit` chains them, and the engine links the next event
    to whatever ``cause`` is when the action returns.
    """

    project: Project
    policy: str
    run_id: str
    action: str
    step: int
    cause: int | None
    signal: Event | None
    results: dict[str, Any]
    state: dict[str, Any]
    resumed: bool = False
    _save: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    def emit(self, kind: str, payload: dict[str, Any] | None = None, subject: str | None = None) -> int:
        """Record an event caused by the latest one of this run, and make it the latest."""
        self.cause = self.project.events.emit(kind, subject or self.policy, payload or {}, cause=self.cause)
        if self._save is not None:
            self._save(self.state)
        return self.cause

    def checkpoint(self, **state: Any) -> None:
        """Persist progress of this action; after a restart `state` holds it and `resumed` is True."""
        self.state.update(state)
        if self._save is not None:
            self._save(self.state)


@runtime_checkable
class Action(Protocol):
    """One thing a policy does: returns a JSON-able result (or None); raises to fail the run."""

    name: str

    def __call__(self, context: ActionContext) -> dict[str, Any] | None: ...


class RunPipeline:
    """Run a pipeline, caused by the signal; its result names the run and its outputs.

    A resumed run re-runs the pipeline, and the step cache skips the steps
    that finished before the interruption.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        params: dict[str, Any] | None = None,
        executor: str | Executor | None = None,
        name: str | None = None,
    ) -> None:
        from loopstack.pipelines.executors import NAMES, Executor

        if params is not None and not isinstance(params, dict):  # a list or "days=30" failed in dict() later
            raise ConfigError(f"params={params!r} must be a mapping of parameter to value; write params: {{days: 30}}")
        if executor is not None and not isinstance(executor, Executor) and executor not in NAMES:
            # a misspelt executor was found only when the policy fired, hours later
            raise ConfigError(f"executor={executor!r} is not an executor; use one of {', '.join(NAMES)}")
        pipeline.check_names(dict(params or {}))  # `dayz: 30` failed only when the policy fired, hours later
        self.pipeline = pipeline
        self.params = dict(params or {})
        self.executor = executor
        self.name = name or pipeline.name

    def __call__(self, context: ActionContext) -> dict[str, Any]:
        run = self.pipeline.run(context.project, executor=self.executor, params=self.params, cause=context.cause)
        context.cause = run.event_id
        return {"pipeline_run": run.id, "tracking_run_id": run.tracking_run_id, "cached": run.cached,
                "results": {name: ref.digest for name, ref in run.results.items()}}


class Hook:
    """A function of the `ActionContext` as an action (gates, rollouts, notifications)."""

    def __init__(self, function: Callable[[ActionContext], dict[str, Any] | None], name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__name__", "hook")

    def __call__(self, context: ActionContext) -> dict[str, Any] | None:
        return self.function(context)


@dataclass
class Policy:
    """On any of `when`, run `then` in order.

    Parameters
    ----------
    name
        The policy's name: subject of its events and key of its persisted state.
    when
        Triggers: `Schedule`, `OnEvent` or the signal helpers. Every policy can
        also be triggered by hand (``loopstack loop trigger NAME``).
    then
        Actions: `RunPipeline`, `Hook`, a `Pipeline` or a plain function of the context.
    cooldown_s
        Signals within this many seconds of the last run's start are recorded
        as ``loop.suppressed`` instead of starting another run; a manual
        trigger too (``loopstack loop trigger`` says so).
    coalesce
        Several matching events seen in one poll start one run (caused by the
        newest), not one run each.
    ignore_signals_during_run
        A signal recorded while a run of this policy was in progress starts
        no run after it ends, even past the cooldown (which counts from the
        run's start, so a long canary outlasts it): it described data that
        run was already answering (a run that failed answered nothing: its
        signals start a run as usual). It is recorded as ``loop.suppressed``,
        with a reason naming the run. Turn it off for a signal that is new
        evidence the run cannot have seen, such as `new_data` for a policy
        that should train again on rows materialized during its last run.

    Examples
    --------
    >>> from loopstack.pipelines.triggers import drift_detected
    >>> policy = Policy("retrain", when=[drift_detected(share_above=0.3)], then=[lambda ctx: {"ok": True}])
    >>> [t.key for t in policy.triggers()]  # doctest: +ELLIPSIS
    ['event:drift@drift.checked:*:...', 'event:manual@loop.manual:retrain:all']
    """

    name: str
    when: Sequence[Trigger] = ()
    then: Sequence[Any] = ()
    cooldown_s: float = 0.0
    coalesce: bool = True
    ignore_signals_during_run: bool = True
    actions: list[Action] = field(init=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"policy name {self.name!r}: use a letter first, then letters, digits, '_', '-', '.'")
        if not self.then:
            raise ConfigError(f"policy {self.name!r} has no actions; pass then=[RunPipeline(...), ...]")
        if self.cooldown_s < 0:
            raise ConfigError(f"policy {self.name!r}: cooldown_s={self.cooldown_s} must be >= 0")
        if not isinstance(self.ignore_signals_during_run, bool):  # "false" (a quoted string) is truthy
            raise ConfigError(f"policy {self.name!r}: ignore_signals_during_run={self.ignore_signals_during_run!r} "
                              "must be True or False")
        for trigger in self.when:
            if not isinstance(trigger, Schedule | OnEvent):
                raise ConfigError(f"policy {self.name!r}: {trigger!r} is not a trigger; use Schedule or OnEvent")
        _refuse_shared_cursors(self.name, self.triggers())
        self.actions = [as_action(action) for action in self.then]
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ConfigError(f"policy {self.name!r} has actions with the same name {names}; pass name= to tell apart")

    def triggers(self) -> list[Trigger]:
        """The declared triggers plus the manual one."""
        from loopstack.pipelines.triggers import manual

        return [*self.when, manual(self.name)]


def _refuse_shared_cursors(policy: str, triggers: list[Trigger]) -> None:
    """Two triggers with one key would share one persisted cursor: the first to see an event advances it
    past the other's signal, which then never fires."""
    seen: dict[str, Trigger] = {}
    for trigger in triggers:
        if trigger.key in seen:
            raise ConfigError(
                f"policy {policy!r}: triggers {seen[trigger.key].describe()} and {trigger.describe()} have the same "
                f"key {trigger.key!r} and would share one cursor; pass name= to tell them apart"
            )
        seen[trigger.key] = trigger


def as_action(value: Any) -> Action:
    """An action from a `Pipeline`, an `Action` or a plain function."""
    from loopstack.pipelines.dags import Pipeline

    if isinstance(value, Pipeline):
        return RunPipeline(value)
    if isinstance(value, RunPipeline | Hook) or (isinstance(value, Action) and isinstance(value.name, str)):
        return value
    if callable(value):
        return Hook(value)
    raise ConfigError(f"{value!r} is not an action; pass a Pipeline, RunPipeline(...), Hook(...) or a function")


__all__ = ["Action", "ActionContext", "Hook", "Policy", "RunPipeline", "StopLoop", "as_action"]
