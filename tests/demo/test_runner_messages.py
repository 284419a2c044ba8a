"""What the demo runner says before it replays."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from loopstack.demo.runner import _replaying


def _world(day: int, days: int = 60) -> SimpleNamespace:
    return SimpleNamespace(day=day, finished=day >= days, scenario=SimpleNamespace(days=days),
                           state={"champion": "fraud/1"})


def test_a_finished_demo_says_there_is_nothing_left_to_replay_and_how_to_start_over() -> None:
    """Run again without --fresh, a finished demo said "replaying days 60-59 day by day"."""
    project = SimpleNamespace(root=Path("/tmp/my demo"))
    said = _replaying(project, _world(60), ["retrain"])
    assert "60-59" not in said and "nothing left to replay: all 60 days were replayed" in said
    assert "loopstack demo --fresh --path '/tmp/my demo'" in said
    assert "replaying days 20-59 day by day (loop policies: retrain)" in _replaying(project, _world(20), ["retrain"])
