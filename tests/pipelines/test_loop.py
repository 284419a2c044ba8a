"""The loop engine: triggers fire once per signal, state survives restarts, runs resume, stories chain."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from loopstack.core.errors import ConfigError, ConflictError
from loopstack.core.project import Project
from loopstack.pipelines import (
    Hook,
    Loop,
    OnEvent,
    Policy,
    RunPipeline,
    Schedule,
    StopLoop,
    drift_detected,
    new_data,
    performance_below,
    pipeline,
    quality_failed,
    step,
    trigger,
)
from loopstack.pipelines.state import runs


@step
def train(rows: int) -> dict:
    return {"model": "m", "rows": rows}


@step
def evaluate(model: dict) -> float:
    return 0.9


@pipeline
def retrain(rows: int = 10):
    return evaluate(train(rows))


def record(calls: list[Any]) -> Hook:
    return Hook(lambda ctx: calls.append(ctx.signal.id if ctx.signal else None) or {"n": len(calls)}, name="record")


def kinds(project: Project, event_id: int) -> list[str]:
    return [e.kind for e in project.events.chain(event_id)]


def test_an_event_trigger_fires_once_per_event_across_restarts(project: Project) -> None:
    calls: list[Any] = []
    policy = Policy("react", when=[OnEvent("data.arrived")], then=[record(calls)])
    loop = Loop(project, [policy])
    old = project.events.emit("data.arrived", "s3://bucket/day-0")  # before the first start: not a signal
    loop.start()
    assert loop.tick() == []
    first = project.events.emit("data.arrived", "s3://bucket/day-1")
    runs = loop.tick()
    assert [(r.status, r.cause) for r in runs] == [("finished", first)]
    assert loop.tick() == [] and calls == [first]
    loop.close()

    restarted = Loop(project, [policy])  # a new process, as far as the state is concerned
    assert restarted.tick() == []  # the cursor was persisted: the event is not seen again
    second = project.events.emit("data.arrived", "s3://bucket/day-2")
    assert [r.cause for r in restarted.tick()] == [second]
    assert calls == [first, second] and old not in calls
    restarted.close()


def test_several_events_in_one_poll_coalesce_unless_asked_not_to(sqlite_project: Project) -> None:
    together: list[Any] = []
    apart: list[Any] = []
    loop = Loop(sqlite_project, [
        Policy("together", when=[OnEvent("x.")], then=[record(together)]),
        Policy("apart", when=[OnEvent("x.")], then=[record(apart)], coalesce=False),
    ])
    loop.start()
    ids = [sqlite_project.events.emit(kind, "s") for kind in ("x.a", "x.b", "y.c", "x.d")]
    loop.tick()
    assert together == [ids[3]]  # one run, caused by the newest signal
    triggered = sqlite_project.events.list(kind="loop.triggered", subject="together")[0]
    assert triggered.payload["signals"] == [ids[0], ids[1], ids[3]]
    assert apart == [ids[0], ids[1], ids[3]]
    loop.close()


def test_signal_helpers_match_what_monitors_and_suites_emit(sqlite_project: Project) -> None:
    from loopstack.drift import Monitor
    from loopstack.quality import NotNull, Suite
    from loopstack.quality import record as record_suite

    fired: dict[str, list[Any]] = {name: [] for name in ("drift", "share", "quality", "perf", "data")}
    loop = Loop(sqlite_project, [
        Policy("drift", when=[drift_detected("txns")], then=[record(fired["drift"])]),
        Policy("share", when=[drift_detected("txns", share_above=0.4)], then=[record(fired["share"])]),
        Policy("quality", when=[quality_failed("orders")], then=[record(fired["quality"])]),
        Policy("perf", when=[performance_below("auc", 0.8)], then=[record(fired["perf"])]),
        Policy("data", when=[new_data("card_stats", min_rows=100)], then=[record(fired["data"])]),
    ])
    loop.start()
    rng = np.random.default_rng(0)
    monitor = Monitor(sqlite_project, "txns", reference={"a": rng.normal(size=500), "b": rng.normal(size=500)})
    monitor.run({"a": rng.normal(3, 1, size=500), "b": rng.normal(size=500)})  # one of two columns drifted
    record_suite(sqlite_project, Suite("orders", [NotNull("id")]).run({"id": [1, 2]}))  # passes: no signal
    record_suite(sqlite_project, Suite("orders", [NotNull("id")]).run({"id": [1, None]}))
    sqlite_project.events.emit("performance.checked", "fraud", {"metrics": {"auc": 0.85}})
    low = sqlite_project.events.emit("performance.checked", "fraud", {"metrics": {"auc": 0.7}})
    sqlite_project.events.emit("features.materialize", "card_stats", {"rows": 10})
    big = sqlite_project.events.emit("features.materialize", "card_stats", {"rows": 1000})
    loop.tick()
    drift_events = sqlite_project.events.list(kind="drift.")
    checked = next(e for e in drift_events if e.kind == "drift.checked")
    assert checked.payload["share"] == 0.5
    assert fired["drift"] == [next(e.id for e in drift_events if e.kind == "drift.detected")]
    assert fired["share"] == [checked.id]
    assert len(fired["quality"]) == 1 and fired["perf"] == [low] and fired["data"] == [big]
    loop.close()


def test_a_missed_schedule_fires_once_after_a_restart(sqlite_project: Project) -> None:
    calls: list[Any] = []
    policy = Policy("nightly", when=[Schedule("*/5 * * * *")], then=[record(calls)])
    loop = Loop(sqlite_project, [policy])
    loop.start()
    slot = (int(time.time()) // 300 + 1) * 300  # the first five-minute mark after the start
    assert loop.tick(now=slot - 1) == []
    loop.close()
    restarted = Loop(sqlite_project, [policy])
    runs = restarted.tick(now=slot + 2 * 300 + 60)  # three marks passed while "down": one run
    assert len(runs) == 1 and len(calls) == 1
    assert sqlite_project.events.list(kind="loop.triggered")[0].payload["scheduled_for"] == slot + 600
    assert restarted.tick(now=slot + 600 + 120) == []
    assert len(restarted.tick(now=slot + 900 + 1)) == 1
    restarted.close()


def test_a_replay_schedule_runs_on_the_replay_clock(sqlite_project: Project) -> None:
    """A schedule counted from the wall clock at start, so a replay of last year never reached its first fire."""
    calls: list[Any] = []
    hourly = Policy("hourly", when=[Schedule("0 * * * *")], then=[record(calls)])
    t0 = 1_704_067_200.0  # 2024-01-01 00:00 UTC
    replay = Loop(sqlite_project, [hourly])
    assert replay.tick(now=t0 + 60) == []  # the first tick starts the loop on the replay's clock
    assert replay.tick(now=t0 + 1800) == []
    assert len(replay.tick(now=t0 + 3660)) == 1 and len(calls) == 1
    assert sqlite_project.events.list(kind="loop.triggered")[0].payload["scheduled_for"] == t0 + 3600
    replay.close()
    wall = Loop(sqlite_project, [Policy("late", when=[Schedule("0 * * * *")], then=[record(calls)])])
    wall.start()  # on the wall clock (2026), then replayed from 2024: the fire time is wound back
    assert wall.tick(now=t0 + 7300) == []
    assert len(wall.tick(now=t0 + 10_900)) == 1 and len(calls) == 2
    wall.close()
    # a scheduler whose clock is a few seconds behind takes over just after a fire: no second fire for it
    fired_at = sqlite_project.events.list(kind="loop.triggered")[0].payload["scheduled_for"]
    skewed = Loop(sqlite_project, [Policy("late", when=[Schedule("0 * * * *")], then=[record(calls)])])
    assert skewed.tick(now=fired_at - 5) == [] and skewed.tick(now=fired_at + 60) == [] and len(calls) == 2
    skewed.close()


def test_cooldown_suppresses_and_says_why(sqlite_project: Project) -> None:
    calls: list[Any] = []
    loop = Loop(sqlite_project, [Policy("calm", when=[OnEvent("sig")], then=[record(calls)], cooldown_s=3600)])
    loop.start()
    sqlite_project.events.emit("sig", "a")
    loop.tick()
    second = sqlite_project.events.emit("sig", "a")
    assert loop.tick() == []
    suppressed = sqlite_project.events.list(kind="loop.suppressed")[0]
    assert suppressed.cause == second and "cooldown" in suppressed.payload["reason"]
    assert len(calls) == 1
    loop.close()


def test_cooldown_runs_on_the_clock_the_tick_is_given(sqlite_project: Project) -> None:
    """It used to be measured by the wall clock: a replay's next day was suppressed, or its next minute not."""
    calls: list[Any] = []
    loop = Loop(sqlite_project, [Policy("calm", when=[OnEvent("sig")], then=[record(calls)], cooldown_s=3600)])
    loop.start()
    day = 1_000_000_000.0  # a replayed day, long ago
    sqlite_project.events.emit("sig", "a")
    (first,) = loop.tick(now=day)
    assert first.started_at == day
    sqlite_project.events.emit("sig", "a")
    assert loop.tick(now=day + 60) == []  # a minute later: within the cooldown
    sqlite_project.events.emit("sig", "a")
    assert len(loop.tick(now=day + 86_400)) == 1  # the next day: past it
    assert len(calls) == 2
    loop.close()


def test_a_replay_after_a_wall_clock_run_is_not_held_off_by_its_cooldown(sqlite_project: Project) -> None:
    """The wall-clock run's start lay ahead of the replay's clock: now - last was negative, below any cooldown,
    and every replayed signal was suppressed 'within the cooldown' of a run that had not happened yet."""
    calls: list[Any] = []
    loop = Loop(sqlite_project, [Policy("calm", when=[OnEvent("sig")], then=[record(calls)], cooldown_s=3600)])
    loop.start()
    sqlite_project.events.emit("sig", "a")
    assert len(loop.tick()) == 1  # on the wall clock
    day = 1_000_000_000.0  # then a replay of a day long ago
    sqlite_project.events.emit("sig", "a")
    assert len(loop.tick(now=day)) == 1
    sqlite_project.events.emit("sig", "a")
    assert loop.tick(now=day + 60) == []  # the replay's own runs still hold off the next minute
    sqlite_project.events.emit("sig", "a")
    assert loop.tick(now=time.time() - 5) == []  # a host a few seconds behind: the wall-clock run still counts
    assert len(calls) == 2
    loop.close()


class Crash(BaseException):
    """The process dies: nothing in the engine catches it."""


def test_an_action_in_flight_resumes_after_a_restart_where_it_was(project: Project) -> None:
    seen: list[tuple[bool, dict[str, Any]]] = []

    def canary(ctx: Any) -> dict[str, Any]:
        seen.append((ctx.resumed, dict(ctx.state)))
        stage = ctx.state.get("stage", 0)
        while stage < 3:
            stage += 1
            ctx.emit("canary.step", {"stage": stage})
            ctx.checkpoint(stage=stage)
            if stage == 2 and len(seen) == 1:
                raise Crash  # killed mid-rollout
        return {"promoted": True, "trained": ctx.results["retrain"]["pipeline_run"]}

    policy = Policy("retrain", when=[drift_detected("txns")], then=[RunPipeline(retrain), Hook(canary)])
    crashed = Loop(project, [policy], lease_ttl_s=0.2)
    crashed.start()
    signal = project.events.emit("drift.detected", "txns", {"share": 0.6})
    with pytest.raises(Crash):
        crashed.tick()
    (run,) = runs(project)
    assert run.status == "running" and run.step == 1 and run.state == {"canary": {"stage": 2}}
    with pytest.raises(ConflictError, match="another loop scheduler"):
        Loop(project, [policy]).start()  # its heartbeat thread still renews the lease

    crashed._heartbeat.stop()  # type: ignore[union-attr]  # now the process is dead for real
    time.sleep(0.3)  # its 0.2 s lease runs out
    restarted = Loop(project, [policy])
    (resumed,) = restarted.tick()
    assert resumed.id == run.id and resumed.status == "finished"
    assert seen == [(False, {}), (True, {"stage": 2})]
    assert len(project.events.list(kind="pipeline.started")) == 1  # the pipeline did not run again
    story = kinds(project, resumed.last_event)
    assert story == [
        "drift.detected", "loop.triggered", "loop.action.started", "pipeline.started", "pipeline.finished",
        "loop.action.finished", "loop.action.started", "canary.step", "canary.step", "loop.resumed",
        "loop.action.started", "canary.step", "loop.action.finished", "loop.finished",
    ]
    assert project.events.chain(resumed.last_event)[0].id == signal
    assert resumed.results["canary"]["promoted"] is True
    restarted.close()


def test_failures_and_stops_end_the_run_and_the_loop_goes_on(sqlite_project: Project) -> None:
    @step
    def broken() -> int:
        raise RuntimeError("training diverged")

    @pipeline
    def bad():
        return broken()

    def gate(ctx: Any) -> None:
        raise StopLoop("challenger is worse than the champion")

    loop = Loop(sqlite_project, [
        Policy("fails", when=[OnEvent("go")], then=[RunPipeline(bad)]),
        Policy("gated", when=[OnEvent("go")], then=[Hook(gate)]),
    ])
    loop.start()
    sqlite_project.events.emit("go", "now")
    runs = {r.policy: r for r in loop.tick()}
    assert runs["fails"].status == "failed" and "training diverged" in runs["fails"].error
    assert kinds(sqlite_project, runs["fails"].last_event)[-5:] == [
        "loop.action.started", "pipeline.started", "pipeline.failed", "loop.action.failed", "loop.failed"]
    assert runs["gated"].status == "stopped" and runs["gated"].error == "challenger is worse than the champion"
    sqlite_project.events.emit("go", "again")
    assert len(loop.tick()) == 2  # a failed run does not block the next signal
    loop.close()


def test_manual_trigger_runs_a_policy_with_the_request_as_cause(sqlite_project: Project) -> None:
    calls: list[Any] = []
    loop = Loop(sqlite_project, [Policy("by-hand", then=[record(calls)])])
    loop.start()
    asked = trigger(sqlite_project, "by-hand", reason="new labels landed", by="ana")
    (run,) = loop.tick()
    assert run.cause == asked and calls == [asked]
    assert sqlite_project.events.chain(run.last_event)[0].payload == {"reason": "new labels landed", "by": "ana"}
    loop.close()


def test_triggers_of_one_kind_family_keep_cursors_of_their_own(sqlite_project: Project) -> None:
    """Two named triggers of different kinds shared one cursor: the first advanced it past the other's signal."""
    calls: list[Any] = []
    when = [performance_below("auc", 0.8), performance_below("auc", 0.8, kind="eval.done")]
    loop = Loop(sqlite_project, [Policy("retrain", when=when, then=[record(calls)])])
    loop.start()
    signal = sqlite_project.events.emit("eval.done", "m", {"metrics": {"auc": 0.5}})
    sqlite_project.events.emit("performance.checked", "m", {"metrics": {"auc": 0.9}})  # not a signal
    assert [r.cause for r in loop.tick()] == [signal] and calls == [signal]
    loop.close()


def test_triggers_that_differ_only_by_predicate_need_a_name() -> None:
    def act(ctx: Any) -> None:
        return None

    wide, narrow = OnEvent("x", predicate=lambda e: e.payload["a"] > 1), OnEvent("x", predicate=lambda e: False)
    with pytest.raises(ConfigError, match=r"same key 'event:x:\*:all'.*pass name="):
        Policy("p", when=[wide, narrow], then=[act])
    named = OnEvent("x", predicate=lambda e: False, name="narrow")
    assert len({t.key for t in Policy("p", when=[wide, named], then=[act]).triggers()}) == 3


def test_a_cursor_saved_under_the_keys_older_form_is_taken_over(sqlite_project: Project) -> None:
    """The kind joined named triggers' keys in this version: a loop upgraded while down must still see the
    signal that arrived meanwhile, not start from the newest event and skip it."""
    from loopstack.pipelines import state

    calls: list[Any] = []
    trigger = performance_below("auc", 0.8)
    assert trigger.legacy_key == "event:performance:*:" + trigger.key.rsplit(":", 1)[1] != trigger.key
    before = sqlite_project.events.emit("performance.checked", "m", {"metrics": {"auc": 0.1}})  # already handled
    state.init_trigger(sqlite_project, "retrain", trigger.legacy_key, last_fire=None, cursor=before)
    missed = sqlite_project.events.emit("performance.checked", "m", {"metrics": {"auc": 0.5}})  # while it was down
    loop = Loop(sqlite_project, [Policy("retrain", when=[trigger], then=[record(calls)])])
    assert [r.cause for r in loop.tick()] == [missed] and calls == [missed]
    loop.close()


def test_a_manual_trigger_sent_before_the_scheduler_first_started_still_runs(sqlite_project: Project) -> None:
    """`loopstack loop trigger` then `loopstack loop run --once` on a new project ran nothing: the manual
    trigger started at the newest event, past the request."""
    calls: list[Any] = []
    asked = trigger(sqlite_project, "by-hand", reason="labels landed", by="ana")
    loop = Loop(sqlite_project, [Policy("by-hand", then=[record(calls)])])
    (run,) = loop.tick()
    assert run.cause == asked and calls == [asked]
    assert loop.tick() == []  # once
    loop.close()


def drift_during_run(raised: list[int]) -> Hook:
    """A canary during which the drift monitor (another process in production) raises a signal."""
    return Hook(lambda ctx: raised.append(ctx.project.events.emit("drift.detected", "txns")) or {}, name="canary")


def retrain_loop(project: Project, **options: Any) -> tuple[Loop, list[Any], list[int]]:
    """A loop retraining on drift whose runs raise a drift signal; the signals each run saw, and those raised."""
    calls: list[Any] = []
    raised: list[int] = []
    policy = Policy("retrain", when=[drift_detected("txns")], then=[record(calls), drift_during_run(raised)],
                    **options)
    return Loop(project, [policy]), calls, raised


def test_a_signal_raised_during_a_run_starts_no_run_after_it_even_past_the_cooldown(project: Project) -> None:
    """The cooldown counts from a run's start: a drift raised during a long canary started a second retrain on the
    evidence the first was already answering, as soon as the run had outlasted the cooldown."""
    loop, calls, raised = retrain_loop(project, cooldown_s=60)
    day = 1_000_000_000.0
    loop.start(now=day)
    first = project.events.emit("drift.detected", "txns")
    (run,) = loop.tick(now=day)
    assert loop.tick(now=day + 3600) == []  # an hour on, far past the cooldown: still no run
    (suppressed,) = project.events.list(kind="loop.suppressed")
    assert suppressed.cause == raised[0] and suppressed.payload["signals"] == [raised[0]]
    assert suppressed.payload["reason"].startswith(f"recorded during run {run.id[:12]} (started at event ")
    assert "ignore_signals_during_run" in suppressed.payload["reason"]
    after = project.events.emit("drift.detected", "txns")  # recorded after the run ended: a signal as before
    (second,) = loop.tick(now=day + 7200)
    assert second.cause == after and calls == [first, after]
    loop.close()


@pytest.mark.parametrize("coalesce", [True, False])
def test_of_two_signals_in_one_poll_only_the_one_after_the_run_starts_one(
    sqlite_project: Project, coalesce: bool
) -> None:
    loop, _, raised = retrain_loop(sqlite_project, coalesce=coalesce)
    loop.start()
    sqlite_project.events.emit("drift.detected", "txns")
    loop.tick()
    after = sqlite_project.events.emit("drift.detected", "txns")
    assert [r.cause for r in loop.tick()] == [after]  # both seen in this poll: the one during the run starts none
    triggered = sqlite_project.events.list(kind="loop.triggered", limit=1)[0]
    assert triggered.payload["signals"] == [after]
    (suppressed,) = sqlite_project.events.list(kind="loop.suppressed")
    assert suppressed.payload["signals"] == [raised[0]] and "recorded during run" in suppressed.payload["reason"]
    loop.close()


def test_a_signal_during_a_run_is_still_suppressed_after_a_restart_mid_run(project: Project) -> None:
    """The rule is read from the event log: a scheduler killed mid-canary, restarted past the cooldown, resumes
    the run and still starts none for the drift raised during it, before or while it was down."""
    calls: list[Any] = []
    raised: list[int] = []

    def canary(ctx: Any) -> dict[str, Any]:
        if not raised:  # the first run only
            raised.append(ctx.project.events.emit("drift.detected", "txns"))
            raise Crash  # killed mid-rollout
        return {"promoted": True}

    policy = Policy("retrain", when=[drift_detected("txns")], then=[record(calls), Hook(canary)], cooldown_s=60)
    day = 1_000_000_000.0
    crashed = Loop(project, [policy], lease_ttl_s=0.2)
    crashed.start(now=day)
    first = project.events.emit("drift.detected", "txns")
    with pytest.raises(Crash):
        crashed.tick(now=day)
    crashed._heartbeat.stop()  # type: ignore[union-attr]  # the process is dead
    raised.append(project.events.emit("drift.detected", "txns"))  # while it was down, the run still in flight
    time.sleep(0.3)  # its lease runs out

    restarted = Loop(project, [policy])
    (resumed,) = restarted.tick(now=day + 3600)
    assert resumed.status == "finished" and calls == [first]
    (suppressed,) = project.events.list(kind="loop.suppressed")
    assert suppressed.payload["signals"] == raised and resumed.id[:12] in suppressed.payload["reason"]
    assert restarted.tick(now=day + 3700) == []
    after = project.events.emit("drift.detected", "txns")
    assert [r.cause for r in restarted.tick(now=day + 7200)] == [after]
    restarted.close()


def test_a_policy_can_act_on_signals_raised_during_its_runs(sqlite_project: Project) -> None:
    """New rows materialized during a training run are evidence that run never saw: such a policy opts out."""
    loop, calls, raised = retrain_loop(sqlite_project, ignore_signals_during_run=False)
    loop.start()
    sqlite_project.events.emit("drift.detected", "txns")
    loop.tick()
    assert [r.cause for r in loop.tick()] == [raised[0]]
    assert sqlite_project.events.list(kind="loop.suppressed") == []
    loop.close()
    with pytest.raises(ConfigError, match=r"ignore_signals_during_run='false' must be True or False"):
        Policy("p", then=[record(calls)], ignore_signals_during_run="false")  # type: ignore[arg-type]


def test_a_signal_raised_during_a_run_that_failed_starts_a_run_after_it(sqlite_project: Project) -> None:
    """A failed run answered nothing: the drift raised during it (and an operator's trigger) were suppressed
    as "already answered", and no run ever followed."""
    calls: list[Any] = []
    raised: list[int] = []

    def out_of_memory(ctx: Any) -> dict[str, Any]:
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return {}

    policy = Policy("retrain", when=[drift_detected("txns")],
                    then=[record(calls), drift_during_run(raised), Hook(out_of_memory, name="train")])
    loop = Loop(sqlite_project, [policy])
    loop.start()
    sqlite_project.events.emit("drift.detected", "txns")
    (failed,) = loop.tick()
    assert failed.status == "failed"
    (retried,) = loop.tick()  # the drift raised during the failed run
    assert retried.cause == raised[0] and retried.status == "finished"
    assert sqlite_project.events.list(kind="loop.suppressed") == []
    loop.close()


def test_the_run_boundaries_are_read_from_the_cursor_on_not_from_the_policys_whole_history(
    sqlite_project: Project,
) -> None:
    """SQLite chose the (subject, time) index and read every loop event of the policy at each poll with a
    matching signal (51 ms at 500k events), however recent the cursor."""
    from loopstack.pipelines.state import boundaries_query

    query = boundaries_query(sqlite_project.db.table("events"), "retrain", 12_345)
    sql = str(query.compile(dialect=sqlite_project.db.engine.dialect, compile_kwargs={"literal_binds": True}))
    with sqlite_project.db.read() as connection:
        plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "INTEGER PRIMARY KEY (rowid>?)" in plan, plan


def test_a_stop_during_a_run_fires_no_other_trigger_of_the_tick(sqlite_project: Project) -> None:
    """The tick checked for a stop between policies only: a SIGTERM during the run of one trigger let the
    policy's next trigger fire a second run, and both were left in flight."""
    loop: Loop

    def preempted(ctx: Any) -> dict[str, Any]:
        loop.stop()  # what SIGTERM does, mid-action
        return {}

    policy = Policy("retrain", when=[drift_detected("txns"), drift_detected("users")],
                    then=[Hook(preempted, name="train"), Hook(lambda ctx: {}, name="canary")])
    loop = Loop(sqlite_project, [policy])
    loop.start()
    sqlite_project.events.emit("drift.detected", "txns")
    sqlite_project.events.emit("drift.detected", "users")
    loop.tick()
    assert len(runs(sqlite_project, policy="retrain")) == 1
    loop.close()
