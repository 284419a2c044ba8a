"""`run_demo`: set the project up, train the champion, replay the world through the loop, write the report.

Each phase records its completion in the demo's state file, and the replay
records its position after every chunk, so running the demo again without
``--fresh`` after a crash (or a ``kill -9``) continues where it stopped: the
loop engine resumes its in-flight action (a canary at step 2 carries on at
step 2) and the replay goes on from the last finished chunk.
"""

from __future__ import annotations

import shlex
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopstack.core.errors import ConflictError
from loopstack.demo import features as fs
from loopstack.demo.config import MODEL, Scenario
from loopstack.demo.data import day_start, generate
from loopstack.demo.world import STATE, World, load_state, save_state

Say = Callable[[str], None]


def run_demo(path: Path, fresh: bool, backend: str, rows: int, say: Say,
             on_day: Callable[[int, dict[str, Any]], None] | None = None, scenario: Scenario | None = None,
             report: bool = True) -> dict[str, Any]:
    """The whole demo; returns what it did (for tests).

    ``scenario`` replaces the timeline of a new demo (tests use `Scenario.compact`); a
    continued demo keeps the one it started with.
    """
    import loopstack as ls

    started = time.perf_counter()
    path = Path(path).resolve()
    project = _open(path, fresh, backend, scenario or Scenario.for_rows(rows), say)
    state = load_state(path)
    scenario = Scenario(**state["scenario"])
    tx, snapshots = generate(scenario)
    say(f"[bold]Data[/] {len(tx):,} card transactions over {scenario.days} days, "
        f"{tx.card_id.nunique():,} cards; drift and concept change from day {scenario.drift_day}")
    if "champion" not in state:
        _setup_features(project, scenario, snapshots, tx, say)
        _train_champion(project, scenario, say)
    world = World(project, scenario, tx, snapshots, on_day=on_day)
    outcome = _replay(project, world, say)
    outcome.update(project=project, state=world.state, seconds=time.perf_counter() - started)
    if report and world.finished:
        from loopstack.demo.report import write_report

        target = write_report(project, world)
        outcome["report"] = target
        say(f"[bold]Report[/] {target}")
    say(f"Done in {outcome['seconds']:.1f} s. Explore what it left behind:")
    for command in explore_commands(project):
        say(f"  loopstack -p {path} {command}")
    ls.set_project(project)
    return outcome


def explore_commands(project: Any) -> list[str]:
    """CLI commands worth running afterwards, with the ids of the story's key events."""
    commands = []
    for kind, what in (("rollout.promoted", "promotion"), ("rollout.rolled_back", "rollback")):
        found = project.events.list(kind=kind, limit=1)
        if found:
            commands.append(f"events --chain {found[0].id}      # the story of the {what}, from its signal")
    return [*commands, "events --kind rollout.", "runs", "models show fraud", "pipelines list", "loop status",
            "features list"]


def _open(path: Path, fresh: bool, backend: str, scenario: Scenario, say: Say) -> Any:
    import loopstack as ls

    if path.exists() and fresh:
        if not (path / STATE).exists():
            raise ConflictError(f"{path} exists and was not made by `loopstack demo`; choose another --path")
        shutil.rmtree(path)
    if (path / "loopstack.yaml").exists():
        project = ls.Project.open(path)
        say(f"[bold]Project[/] {project.root} (continuing; metadata: {_safe(project.config.metadata)})")
        return ls.set_project(project)
    settings = services_settings() if backend == "services" else {}
    path.mkdir(parents=True, exist_ok=True)
    (path / fs.DEFINITIONS).write_text(fs.DEFINITIONS_SOURCE)
    project = ls.Project.init(path, name="fraud-demo", definitions=[fs.DEFINITIONS], **settings)
    save_state(path, {"scenario": scenario.to_dict(), "day": 0, "chunk": 0,
                      "routing": {"mode": "stable", "weight": 0.0}, "counts": {}, "backend": backend})
    say(f"[bold]Project[/] {project.root} (metadata: {_safe(project.config.metadata)})")
    return ls.set_project(project)


def services_settings() -> dict[str, str]:
    """A fresh PostgreSQL schema in db `test` and a unique Redis key prefix."""
    tag = f"demo_{uuid.uuid4().hex[:8]}"
    _create_postgres_schema(tag)
    return {
        "metadata": f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{tag}",
        "online_store": f"redis://127.0.0.1:6379/0?prefix={tag}:",
    }


def _create_postgres_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    engine.dispose()


def _setup_features(project: Any, scenario: Scenario, snapshots: Any, tx: Any, say: Say) -> None:
    """History into the warehouse, feature definitions applied, the online store filled."""
    root = Path(project.root)
    history = range(scenario.history_days)
    fs.write_snapshots(root, snapshots, history)  # the nightly job's past output
    for day in history:
        rows = tx[tx.day == day]
        fs.write_day(root, fs.TRANSACTIONS, day, rows[["tx_id", "card_id", "event_timestamp", "day", "amount", "hour",
                                                       "merchant_risk", "distance_km", "is_fraud"]])
    store = project.feature_store
    store.apply()  # the project's definitions file: features.py
    end = day_start(scenario.history_days).astype(object)
    counts = store.materialize(start=day_start(0).astype(object), end=end, progress=False)
    say(f"[bold]Features[/] card_stats (7-day amount and count per card) applied and materialized: {counts}")


def _train_champion(project: Any, scenario: Scenario, say: Say) -> None:
    import loopstack as ls
    from loopstack.demo.training import read_output, register, train_fraud

    ls.set_experiment("fraud-demo")
    run = train_fraud.run(project, params={"root": str(project.root), "first_day": 7,
                                           "last_day": scenario.history_days - 1, "eval_days": 3, "champion": ""})
    candidate = read_output(project, run.results["candidate"].digest)
    version = register(project, candidate, alias="champion")
    state = load_state(Path(project.root))
    state.update(champion=version.ref, reference=run.results["frame"].digest, day=scenario.history_days,
                 initial_metrics=candidate["metrics"])
    save_state(Path(project.root), state)
    m = candidate["metrics"]
    say(f"[bold]Champion[/] pipeline {run.id[:8]} ({', '.join(run.executed)}) -> {version.ref} "
        f"[green]@champion[/] (eval AUC {m['auc']:.3f}, Brier {m['brier']:.4f})")


def _replay(project: Any, world: World, say: Say) -> dict[str, Any]:
    from loopstack.demo.loop import WEEKLY_POLICY, make_loop
    from loopstack.pipelines import trigger

    world.start_server()
    loop = make_loop(project, world)
    try:
        loop.start()
        say(_replaying(project, world, list(loop.policies)))
        for run in loop.tick():  # a restarted demo resumes the run in flight first
            _said(say, run)
        while not world.finished:
            summary = world.advance()
            if not summary.get("end_of_day"):
                continue
            # at or after: a canary action advances the world itself and may have ended the retrain day
            if world.day >= world.scenario.retrain_day and not world.state.get("weekly_triggered"):
                trigger(project, WEEKLY_POLICY, reason=f"scheduled weekly retrain (day {world.day})", by="demo")
                world.state["weekly_triggered"] = True
                world.save()
            for run in loop.tick():
                _said(say, run)
    finally:
        loop.close()
        world.close()
    return {"day": world.day, "champion": world.state["champion"]}


def _replaying(project: Any, world: Any, policies: list[str]) -> str:
    """What the replay is about to do; a finished demo run again used to say "replaying days 60-59"."""
    if world.finished:
        return (f"[bold]Serving[/] nothing left to replay: all {world.scenario.days} days were replayed. "
                f"To start over, run `loopstack demo --fresh --path {shlex.quote(str(project.root))}`")
    return (f"[bold]Serving[/] {world.state['champion']} in process; replaying days {world.day}-"
            f"{world.scenario.days - 1} day by day (loop policies: {', '.join(policies)})")


def _said(say: Say, run: Any) -> None:
    result = run.results.get("canary", {})
    say(f"[bold]Loop[/] {run.policy}: {run.status}" + (f" ({result.get('outcome')} {result.get('challenger')})"
                                                      if result else f" ({run.error})" if run.error else ""))


def _safe(url: str) -> str:
    return url.split("?")[0]


__all__ = ["MODEL", "run_demo"]
