"""`loopstack models delete`: asks first, refuses what is in use with one line, deletes what is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

import loopstack as ls
from loopstack.cli import cli


def test_models_delete_asks_then_deletes_and_refuses_what_an_alias_uses(tmp_path: Path, log_in_run) -> None:
    project = ls.Project.init(tmp_path, name="cli", tracking={"capture_environment": False})
    run_id, _ = log_in_run(project, lambda x: np.asarray(x) * 2, np.ones((2, 3)))
    for alias in ("champion", None, None):
        project.registry.register_model(run_id, name="fraud", alias=alias)
    runner = CliRunner()
    base = ["-p", str(tmp_path), "models", "delete"]
    declined = runner.invoke(cli, [*base, "fraud", "3"], input="n\n")
    assert declined.exit_code == 1 and "Delete fraud/3?" in declined.output
    assert [v.version for v in project.registry.search_model_versions("fraud")] == [3, 2, 1]
    assert runner.invoke(cli, [*base, "fraud", "3"], input="y\n").exit_code == 0
    assert "deleted fraud/2" in runner.invoke(cli, [*base, "fraud", "2", "--yes"]).output
    refused = runner.invoke(cli, [*base, "fraud", "1", "--yes"])
    assert refused.exit_code == 1 and isinstance(refused.exception, ls.ConflictError)
    assert "target of alias champion" in str(refused.exception)
    assert runner.invoke(cli, [*base, "fraud", "--yes"]).exit_code == 0  # the whole model, alias included
    assert project.registry.list_models() == []
    project.close()
