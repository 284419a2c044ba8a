"""`loopstack models delete`: asks first, refuses what is in use with one line, deletes what is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import loopstack as ls
from loopstack.cli import cli


def test_models_delete_asks_then_deletes_and_refuses_what_an_alias_uses(tmp_path: Path, log_in_run,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("loopstack.core.cli.stdin_is_terminal", lambda: True)  # someone answers the prompt
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


def test_models_delete_without_a_terminal_asks_for_yes(tmp_path: Path, log_in_run) -> None:
    """With stdin not a terminal the prompt read end of input: a bare "Aborted." and exit 130, no hint."""
    project = ls.Project.init(tmp_path, name="cli", tracking={"capture_environment": False})
    run_id, _ = log_in_run(project, lambda x: np.asarray(x) * 2, np.ones((2, 3)))
    project.registry.register_model(run_id, name="fraud")
    result = CliRunner().invoke(cli, ["-p", str(tmp_path), "models", "delete", "fraud", "1"])
    assert result.exit_code == 1 and isinstance(result.exception, ls.ConfigError)
    assert str(result.exception) == "refusing to delete without confirmation; pass --yes"
    assert [v.version for v in project.registry.search_model_versions("fraud")] == [1]
    project.close()
