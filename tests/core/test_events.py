import pytest

from loopstack.core.project import Project


def test_events_round_trip_with_cause_chain(project: Project) -> None:
    events = project.events
    root = events.emit("drift.detected", "fraud", {"share": 0.4})
    child = events.emit("pipeline.started", "retrain", {"why": "drift"}, cause=root)
    leaf = events.emit("model.registered", "fraud/2", {}, cause=child)
    chain = events.chain(leaf)
    assert [e.id for e in chain] == [root, child, leaf]
    assert chain[0].payload == {"share": 0.4}


def test_events_filter_by_kind_family_and_subject(project: Project) -> None:
    events = project.events
    events.emit("run.started", "a")
    events.emit("run.finished", "a")
    events.emit("model.registered", "m/1")
    assert {e.kind for e in events.list(kind="run.")} == {"run.started", "run.finished"}
    assert [e.kind for e in events.list(subject="m/1")] == ["model.registered"]


def test_numpy_payloads_are_stored_as_plain_json(project: Project) -> None:
    import numpy as np

    event_id = project.events.emit("drift.column", "x", {"score": np.float64(0.25), "bins": np.arange(3)})
    (event,) = [e for e in project.events.list() if e.id == event_id]
    assert event.payload == {"score": 0.25, "bins": [0, 1, 2]}


def test_payloads_store_as_their_json_round_trip(project: Project) -> None:
    payload = {"name": "a", "n": 3, "share": 0.5, "ok": True, "none": None, 7: "int key", "nested": {"k": (1, 2)}}
    event_id = project.events.emit("thing.done", "x", payload)
    (event,) = [e for e in project.events.list() if e.id == event_id]
    assert event.payload == {
        "name": "a",
        "n": 3,
        "share": 0.5,
        "ok": True,
        "none": None,
        "7": "int key",
        "nested": {"k": [1, 2]},
    }
    plain = {"name": "a", "n": 3}
    project.events.emit("thing.done", "y", plain)
    assert plain == {"name": "a", "n": 3}


def test_a_cause_that_does_not_exist_is_named(project: Project) -> None:
    from loopstack.core.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"cause 987654 .*loopstack events"):
        project.events.emit("model.registered", "m/1", cause=987654)
    assert project.events.list(kind="model.registered") == []


def test_an_event_rolled_back_with_its_transaction_is_not_stored(project: Project) -> None:
    def change_that_fails() -> None:
        with project.db.write() as connection:
            project.events.emit("model.registered", "m/1", connection=connection)
            raise RuntimeError("the change it describes failed")

    with pytest.raises(RuntimeError):
        change_that_fails()
    assert project.events.list(kind="model.registered") == []


def test_a_cause_chain_with_a_cycle_lists_each_event_once(project: Project) -> None:
    first = project.events.emit("a.one", "x")
    second = project.events.emit("a.two", "x", cause=first)
    with project.db.write() as connection:  # a hand edit, or a row copied from another project
        connection.execute(project.events.table.update().where(project.events.table.c.id == first).values(cause=second))
    assert [e.id for e in project.events.chain(second)] == [first, second]


def test_a_kind_family_matches_underscores_and_percents_literally(project: Project) -> None:
    project.events.emit("data_check.failed", "a")
    project.events.emit("dataXcheck.failed", "b")
    project.events.emit("share%.high", "c")
    project.events.emit("share-of.high", "d")
    assert [e.subject for e in project.events.list(kind="data_check.")] == ["a"]
    assert [e.subject for e in project.events.list(kind="share%.")] == ["c"]


@pytest.mark.postgres
def test_on_postgresql_events_commit_in_id_order(postgres_url: str, tmp_path) -> None:
    """An event emitted while another transaction holding a lower id is open waits for it to commit.

    Otherwise a reader can see id n+1 before id n, and the loop's triggers, which read after the last id
    seen, skip n for good: a drift signal from a slow transaction never fired a retrain.
    """
    import threading

    from loopstack.pipelines.engine import Loop
    from loopstack.pipelines.policy import Policy
    from loopstack.pipelines.triggers import drift_detected

    project = Project.init(tmp_path / "p", name="order", metadata=postgres_url)
    fired: list[int] = []
    loop = Loop(project, [Policy("retrain", when=[drift_detected(share_above=0.3)],
                                 then=[lambda context: fired.append(context.signal.id) or {}])])
    try:
        loop.tick()
        other: dict[str, int] = {}
        with project.db.write() as slow:
            slow_id = project.events.emit("drift.checked", "m1", {"share": 0.5}, connection=slow)
            writer = threading.Thread(target=lambda: other.update(id=project.events.emit(
                "drift.checked", "m2", {"share": 0.1})))
            writer.start()
            writer.join(timeout=0.5)
            assert writer.is_alive(), "the second emit committed while a lower id was still open"
            loop.tick()  # the loop polls meanwhile: it must not move past the open id
        writer.join(timeout=10)
        loop.tick()
        assert other["id"] > slow_id
        assert fired == [slow_id]
    finally:
        loop.close()
        project.close()


def test_non_finite_floats_in_a_payload_are_stored_as_null_on_every_backend(project: Project) -> None:
    import numpy as np

    nan, inf = float("nan"), float("inf")
    flat = project.events.emit("drift.column", "x", {"score": nan, "p": inf, "q": -inf, "ok": 0.5})
    nested = project.events.emit(
        "drift.checked", "y", {"columns": {"a": {"score": np.float64("nan")}}, "scores": [1.0, nan, np.inf]}
    )
    stored = {e.id: e.payload for e in project.events.list(kind="drift.")}
    assert stored[flat] == {"score": None, "p": None, "q": None, "ok": 0.5}
    assert stored[nested] == {"columns": {"a": {"score": None}}, "scores": [1.0, None, None]}
