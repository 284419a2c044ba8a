"""The loop engine: poll triggers, fire policies, run their actions, and resume after a restart.

Each tick renews the scheduler lease, resumes runs left in flight by a
stopped or crashed scheduler, then checks every trigger of every policy.
Firing is one transaction: the trigger's cursor (or fire time) advances, the
run is stored, and ``loop.triggered`` is emitted with the signal as cause;
so a signal starts exactly one run even if the process dies right after.
Actions then run in order; after each, its result and the index of the next
action are stored with its ``loop.action.finished`` event. The events form
one chain, signal first::

    drift.detected -> loop.triggered -> loop.action.started -> pipeline.started
      -> pipeline.finished -> loop.action.finished -> ... -> loop.finished

Actions run one at a time in the scheduler's thread: a long training run
delays the next trigger check, which is the simple and predictable choice
for a laptop-scale loop.

A signal recorded while a run of its policy was in progress (after that run's
``loop.triggered`` event, before its end event) waits on its trigger's cursor
until the run ends, and then starts no run: it described data the run was
already answering, and a retrain on it would act on stale evidence twice (a
run that failed answered nothing, and releases them). It
is recorded as ``loop.suppressed`` with a reason naming the run, as a signal
inside the cooldown is (`Policy.ignore_signals_during_run` turns this off).
The rule is read from the event log's run boundaries, not from memory, so it
holds for signals that arrived while the scheduler was down with a run in
flight. A signal recorded after the run ended triggers as before, subject to
the cooldown; of several signals seen in one poll, those recorded during a
run are suppressed and the others start the (one, coalesced) run. Schedules
are no evidence about data and fire after a run as before.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConfigError, ConflictError, NotFoundError
from loopstack.pipelines import state
from loopstack.pipelines.policy import ActionContext, Policy, StopLoop
from loopstack.pipelines.triggers import OnEvent, Schedule, Trigger

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from loopstack.core.events import Event
    from loopstack.core.project import Project

_SCAN = 500
_CLOCK_SKEW_S = 300.0  # a tick's clock this far behind a schedule's last fire is a replay, not skew


class Loop:
    """Run loop policies against a project's event log.

    Parameters
    ----------
    project
        The project whose events are the signals and whose DB holds the state.
    policies
        The policies to run; names must be unique.
    poll_s
        Seconds between ticks in `run_forever`.
    lease_ttl_s
        A scheduler whose heartbeat is older than this is presumed dead and
        its lease (and in-flight runs) can be taken over.

    Examples
    --------
    >>> import tempfile, loopstack as ls
    >>> from loopstack.pipelines.policy import Policy
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="doc")
    >>> loop = Loop(project, [Policy("hello", then=[lambda ctx: {"said": "hi"}])])
    >>> loop.tick()
    []
    >>> _ = trigger(project, "hello")
    >>> [(run.policy, run.status, run.results) for run in loop.tick()]
    [('hello', 'finished', {'<lambda>': {'said': 'hi'}})]
    >>> loop.close(); project.close()
    """

    def __init__(
        self, project: Project, policies: Sequence[Policy], poll_s: float = 1.0, lease_ttl_s: float = 30.0
    ) -> None:
        names = [p.name for p in policies]
        if len(set(names)) != len(names):
            raise ConfigError(f"loop policies need unique names; got {names}")
        if poll_s <= 0 or lease_ttl_s <= 0:
            raise ConfigError(f"poll_s={poll_s} and lease_ttl_s={lease_ttl_s} must be positive")
        self.project = project
        self.policies = {p.name: p for p in policies}
        self.poll_s = poll_s
        self.lease_ttl_s = lease_ttl_s
        self.owner = state.new_owner()
        self._started = False
        self._stop = threading.Event()
        self._heartbeat: _Heartbeat | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, now: float | None = None) -> None:
        """Take the scheduler lease and create the state of new triggers (existing state is kept).

        A new schedule counts from `now` (default: the wall clock); `tick(now=...)` passes its own, so
        a replay's schedules start on the replay's clock.

        A daemon thread renews the lease every third of its ttl, also while a
        long action runs; it dies with the process, which is how a crashed
        scheduler's lease runs out.
        """
        if self._started:
            return
        state.acquire_lease(self.project, self.owner, self.lease_ttl_s)
        self._init_triggers(now)
        self._started = True
        self._heartbeat = _Heartbeat(self)
        self._heartbeat.start()

    def _init_triggers(self, now: float | None = None) -> None:
        now, newest = time.time() if now is None else now, state.max_event_id(self.project)
        for policy in self.policies.values():
            saved = state.trigger_states(self.project, policy.name)
            for trigger in policy.triggers():
                if isinstance(trigger, Schedule):
                    state.init_trigger(self.project, policy.name, trigger.key, last_fire=now, cursor=None)
                    continue
                cursor = 0 if trigger.from_start else newest
                earlier = saved.get(trigger.legacy_key) if trigger.key not in saved else None
                if earlier is not None and earlier["cursor"] is not None:
                    cursor = earlier["cursor"]  # saved under the key's older form: go on from there, skip nothing
                state.init_trigger(self.project, policy.name, trigger.key, last_fire=None, cursor=cursor)

    def close(self) -> None:
        """Release the lease; runs in flight stay so and are resumed by the next scheduler."""
        if self._started:
            if self._heartbeat is not None:
                self._heartbeat.stop()
            state.release_lease(self.project, self.owner)
            self._started = False

    def stop(self) -> None:
        """Ask `run_forever` to stop after the current action."""
        self._stop.set()

    def run_forever(self, max_ticks: int | None = None) -> int:
        """Tick every `poll_s` until `stop()` (or a signal handler calls it); returns the number of ticks."""
        ticks = 0
        self.start()
        try:
            while not self._stop.is_set() and (max_ticks is None or ticks < max_ticks):
                self.tick()
                ticks += 1
                self._stop.wait(self.poll_s)
        finally:
            self.close()
        return ticks

    # -- one tick -------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[state.LoopRun]:
        """Resume runs in flight, then fire due triggers; returns the runs touched, as stored now."""
        now = time.time() if now is None else now
        if not self._started:
            self.start(now)
        state.heartbeat(self.project, self.owner)
        touched: list[str] = []
        for run in reversed(state.runs(self.project, status="running", limit=1000)):
            resumed = None if self._stop.is_set() else self._resume(run)
            if resumed is not None:
                touched.append(resumed)
        for policy in self.policies.values():
            for trigger in policy.triggers():
                if self._stop.is_set():  # before every trigger: a run just left in flight must not get a twin
                    break
                touched.extend(self._check(policy, trigger, now))
        return [r for r in state.runs(self.project, limit=max(len(touched), 1) * 2 + 50) if r.id in touched][::-1]

    def _check(self, policy: Policy, trigger: Trigger, now: float) -> list[str]:
        current = state.trigger_states(self.project, policy.name).get(trigger.key)
        if current is None:  # state lost or trigger added meanwhile: start it from now
            self._init_triggers(now)
            return []
        if isinstance(trigger, Schedule):
            if current["last_fire"] is not None and current["last_fire"] > now + _CLOCK_SKEW_S:
                # counted from a later clock (started on the wall clock, then ticked with a replay's
                # earlier one): it would stay silent until the replay caught up, so count from now.
                # A few seconds behind is a host's skewed clock after a takeover: winding back would
                # fire the time just fired once more, so only a clock far behind is a replay's
                with self.project.db.write() as connection:
                    state.advance_trigger(connection, self.project, policy.name, trigger.key, last_fire=now)
                return []
            due = trigger.due(current["last_fire"] or now, now)
            if due is None:
                return []
            return self._fire(policy, trigger, None, {"last_fire": due}, {"scheduled_for": due}, now)
        matching, newest = self._scan(trigger, current["cursor"] or 0)
        if not matching:
            if newest > (current["cursor"] or 0):
                with self.project.db.write() as connection:
                    state.advance_trigger(connection, self.project, policy.name, trigger.key, cursor=newest)
            return []
        during = self._during_runs(policy, matching, current["cursor"] or 0)
        if policy.coalesce:
            return self._fire_coalesced(policy, trigger, matching, during, newest, now)
        fired: list[str] = []
        for event in matching:
            if event.id in during:
                self._fire(policy, trigger, None, {"cursor": event.id}, {}, now, stale=([event], during[event.id]))
            else:
                fired += self._fire(policy, trigger, event, {"cursor": event.id}, {"signals": [event.id]}, now)
        with self.project.db.write() as connection:
            state.advance_trigger(connection, self.project, policy.name, trigger.key, cursor=newest)
        return fired

    def _fire_coalesced(
        self, policy: Policy, trigger: OnEvent, matching: list[Event], during: dict[int, str], newest: int, now: float,
    ) -> list[str]:
        """One run for the signals recorded outside runs, caused by the newest; the others recorded as suppressed."""
        fresh = [e for e in matching if e.id not in during]
        stale = [e for e in matching if e.id in during]
        suppressed = (stale, during[stale[-1].id]) if stale else None
        signal = fresh[-1] if fresh else None
        payload = {"signals": [e.id for e in fresh]} if fresh else {}
        return self._fire(policy, trigger, signal, {"cursor": newest}, payload, now, stale=suppressed)

    def _during_runs(self, policy: Policy, signals: list[Event], cursor: int) -> dict[int, str]:
        """The signals recorded while a run of `policy` was in progress, each with the reason it starts none."""
        if not policy.ignore_signals_during_run:
            return {}
        spans = state.run_spans(self.project, policy.name, after_id=cursor)
        holding = {signal.id: _span_holding(spans, signal.id) for signal in signals}
        return {signal: during_run_reason(span) for signal, span in holding.items() if span is not None}

    def _scan(self, trigger: OnEvent, cursor: int) -> tuple[list[Event], int]:
        """Matching events after `cursor`, oldest first, and the newest id scanned."""
        matching: list[Event] = []
        newest = cursor
        while True:
            batch = self.project.events.list(kind=trigger.kind, subject=trigger.subject, after_id=newest,
                                             limit=_SCAN, newest_first=False)
            matching += [e for e in batch if trigger.matches(e)]
            newest = batch[-1].id if batch else newest
            if len(batch) < _SCAN:
                return matching, newest

    # -- firing and running ------------------------------------------------------------------------
    def _fire(
        self, policy: Policy, trigger: Trigger, signal: Event | None, advance: dict[str, Any],
        payload: dict[str, Any], now: float, stale: tuple[list[Event], str] | None = None,
    ) -> list[str]:
        """Start a run of `policy`, unless one started less than its cooldown before `now`.

        `now` is the tick's clock, not the wall clock: a replay or a test that drives `tick(now=...)` gets
        its cooldown measured on its own time line, and the run's start is stamped on it. `stale` signals
        (recorded during a run, with the reason) are recorded as suppressed in the same transaction as the
        cursor's advance, so a crash cannot record them twice; with no `signal` nothing else happens.
        """
        cause = signal.id if signal is not None else None
        base = {"policy": policy.name, "trigger": trigger.describe(), **payload}
        last = _cooling_since(self.project, policy, now)
        with self.project.db.write() as connection:
            state.advance_trigger(connection, self.project, policy.name, trigger.key, **advance)
            if stale is not None:
                self._suppress_stale(connection, policy, trigger, *stale)
                if signal is None:
                    return []  # every signal was recorded during a run
            if last is not None:
                started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last))  # on the tick's clock
                base["reason"] = f"within the {policy.cooldown_s:g}s cooldown after the run started at {started}"
                self.project.events.emit("loop.suppressed", policy.name, base, cause, connection)
                return []
            run_id = uuid.uuid4().hex
            event = self.project.events.emit("loop.triggered", policy.name, {**base, "run": run_id}, cause, connection)
            state.insert_run(connection, self.project, {
                "id": run_id, "policy": policy.name, "trigger": trigger.key[:255], "cause": cause,
                "status": "running", "step": 0, "results": {}, "state": {}, "last_event": event,
                "owner": self.owner, "started_at": now, "updated_at": now, "error": None,
            })
        self._execute(run_id, policy, event, 0, {}, {}, signal, resumed=False)
        return [run_id]

    def _suppress_stale(
        self, connection: Connection, policy: Policy, trigger: Trigger, signals: list[Event], reason: str
    ) -> None:
        payload = {"policy": policy.name, "trigger": trigger.describe(), "signals": [e.id for e in signals],
                   "reason": reason}
        self.project.events.emit("loop.suppressed", policy.name, payload, signals[-1].id, connection)

    def _resume(self, run: state.LoopRun) -> str | None:
        policy = self.policies.get(run.policy)
        if policy is None:  # another scheduler's policy set, or a removed policy: `loop status` shows it
            return None
        payload = {"policy": run.policy, "run": run.id, "step": run.step, "previous_owner": run.owner}
        if run.step < len(policy.actions):
            payload["action"] = policy.actions[run.step].name
        with self.project.db.write() as connection:
            event = self.project.events.emit("loop.resumed", run.policy, payload, run.last_event, connection)
            state.update_run(connection, self.project, run.id, owner=self.owner, last_event=event)
        signal = self._event(run.cause)
        self._execute(run.id, policy, event, run.step, dict(run.results), dict(run.state), signal, resumed=True)
        return run.id

    def _execute(
        self, run_id: str, policy: Policy, cause: int, first: int, results: dict[str, Any],
        saved: dict[str, Any], signal: Event | None, resumed: bool,
    ) -> None:
        for step in range(first, len(policy.actions)):
            if self._stop.is_set():
                return  # left in flight: the next scheduler resumes at this action
            action = policy.actions[step]
            context = ActionContext(self.project, policy.name, run_id, action.name, step, None, signal, results,
                                    dict(saved.get(action.name, {})), resumed=resumed and step == first)
            context._save = lambda s, c=context: state.save_state(self.project, run_id, c.action, s, c.cause)
            payload = {"run": run_id, "action": action.name, "step": step, "resumed": context.resumed}
            with self.project.db.write() as connection:
                context.cause = self.project.events.emit("loop.action.started", policy.name, payload, cause,
                                                         connection)
                state.update_run(connection, self.project, run_id, last_event=context.cause)
            try:
                result = _jsonable(action(context) or {})
            except StopLoop as stop:
                self._end(run_id, policy, "stopped", context.cause, {"action": action.name, "reason": str(stop)})
                return
            except Exception as exc:  # an action's failure ends the run, and the loop goes on
                failed_at = getattr(getattr(exc, "run", None), "event_id", None) or context.cause
                error = f"{type(exc).__name__}: {exc}"
                detail = {"run": run_id, "action": action.name, "step": step, "error": error}
                failed = self.project.events.emit("loop.action.failed", policy.name, detail, failed_at)
                self._end(run_id, policy, "failed", failed, {"action": action.name, "error": error})
                return
            results = {**results, action.name: result}
            payload = {"run": run_id, "action": action.name, "step": step, "result": result}
            with self.project.db.write() as connection:
                cause = self.project.events.emit("loop.action.finished", policy.name, payload, context.cause,
                                                 connection)
                state.update_run(connection, self.project, run_id, step=step + 1, results=results, last_event=cause)
        self._end(run_id, policy, "finished", cause, {"actions": [a.name for a in policy.actions]})

    def _end(self, run_id: str, policy: Policy, status: str, cause: int, payload: dict[str, Any]) -> None:
        with self.project.db.write() as connection:
            event = self.project.events.emit(f"loop.{status}", policy.name, {"run": run_id, **payload}, cause,
                                             connection)
            state.update_run(connection, self.project, run_id, status=status, last_event=event,
                             error=payload.get("error") or payload.get("reason"))

    def _event(self, event_id: int | None) -> Event | None:
        if event_id is None:
            return None
        found = self.project.events.list(after_id=event_id - 1, limit=1, newest_first=False)
        return found[0] if found and found[0].id == event_id else None


class _Heartbeat(threading.Thread):
    """Renews the lease; on losing it, stops the engine after its current action."""

    def __init__(self, loop: Loop) -> None:
        super().__init__(name=f"loopstack-loop-heartbeat-{loop.owner}", daemon=True)
        self.loop = loop
        self.interval = loop.lease_ttl_s / 3
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                state.heartbeat(self.loop.project, self.loop.owner)
            except ConflictError:
                self.loop.stop()
                return
            except Exception:  # a database hiccup: try again next beat; the ttl has slack for two misses
                continue

    def stop(self) -> None:
        self._done.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)


def trigger(project: Project, policy: str, reason: str = "", by: str | None = None) -> int:
    """Ask for a run of `policy` now (a ``loop.manual`` event); returns the event id."""
    if not policy:
        raise NotFoundError("name the policy to trigger")
    return project.events.emit("loop.manual", policy, {"reason": reason, "by": by or _user()})


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in a container
        return "unknown"


def _jsonable(result: Any) -> dict[str, Any]:
    import json

    value = result if isinstance(result, dict) else {"result": result}
    return dict(json.loads(json.dumps(value, default=str)))


def during_run_reason(span: state.RunSpan) -> str:
    """Why a signal recorded during the run `span` starts no run: the words of its ``loop.suppressed``."""
    started = f"event {span.first}" if span.first is not None else "an earlier event"
    ended = f"ended at event {span.last}" if span.last is not None else "still in flight"
    return (f"recorded during run {span.run[:12]} (started at {started}, {ended}), which was already answering "
            "the evidence it describes; a signal raised during a run starts no run after it "
            "(set ignore_signals_during_run=False to act on it)")


def run_in_progress_at(project: Project, policy: Policy, event_id: int) -> state.RunSpan | None:
    """The run of `policy` in progress when `event_id` was recorded, if any and if the policy ignores such signals.

    The engine's own test, for one event: `loopstack loop trigger` asks it about the request it just made.
    """
    if not policy.ignore_signals_during_run:
        return None
    return _span_holding(state.run_spans(project, policy.name, after_id=event_id - 1), event_id)


def _span_holding(spans: list[state.RunSpan], event_id: int) -> state.RunSpan | None:
    return next((span for span in spans if span.holds(event_id)), None)


def cooldown_end(project: Project, policy: Policy, now: float) -> float | None:
    """When the policy's cooldown ends, if `now` is inside it, counted as the engine counts it (None: not in one).

    `loopstack loop trigger` asks it to say whether the request it just made will be suppressed.
    """
    last = _cooling_since(project, policy, now)
    return None if last is None else float(last + policy.cooldown_s)


def _cooling_since(project: Project, policy: Policy, now: float) -> float | None:
    """The start of the run whose cooldown `now` is inside, if any: the one rule of the tick and of `cooldown_end`."""
    if not policy.cooldown_s:
        return None
    last = _last_start_on_this_clock(project, policy, now)
    return last if last is not None and now - last < policy.cooldown_s else None


def _last_start_on_this_clock(project: Project, policy: Policy, now: float) -> float | None:
    """The policy's last run start that the cooldown measures from, on the tick's clock.

    A run stamped far ahead of `now` came from a later clock (the wall clock, then a replay's
    `tick(now=...)` long ago): counted, ``now - last`` was negative and suppressed every replayed signal
    until the replay caught up. A few seconds ahead is a skewed host after a takeover, and still counts.
    """
    return state.last_start(project, policy.name, not_after=now + _CLOCK_SKEW_S)


__all__ = ["Loop", "cooldown_end", "during_run_reason", "run_in_progress_at", "trigger"]
