"""`loopstack demo` end to end on a small data set, on both metadata backends."""

from pathlib import Path

import pytest

import loopstack as ls
from loopstack.demo import run_demo


@pytest.mark.parametrize("backend", ["embedded", pytest.param("services", marks=pytest.mark.postgres)])
def test_demo_trains_tracks_registers_and_loads(tmp_path: Path, backend: str) -> None:
    if backend == "services":
        from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, require_service

        require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    lines: list[str] = []
    outcome = run_demo(tmp_path / "demo", fresh=True, backend=backend, rows=4000, say=lines.append)
    project = outcome["project"]
    try:
        client = ls.Client(project)
        sweep = client.get_run(outcome["sweep"])
        children = client.search_runs(f"parent_id = '{sweep.id}'")
        assert len(children) == 3
        best = max(children, key=lambda run: run.metrics["auc"])
        assert best.id == outcome["best_run"]
        assert {i["context"] for i in best.inputs} == {"training", "evaluation"}
        version = ls.get_project().registry.get_model_version("fraud@champion")
        assert version.run_id == best.id
        assert version.metrics["auc"] == pytest.approx(best.metrics["auc"])
        assert any("fraud@champion" in line for line in lines)
    finally:
        project.close()
