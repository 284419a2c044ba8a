"""`loopstack init` on a folder that already holds a project."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import loopstack as ls
from loopstack.core.cli import init


def test_init_here_in_an_existing_project_says_it_is_one_without_a_cd_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loopstack init .` in a project said "work in that project with `cd .`"."""
    ls.Project.init(tmp_path / "p", name="p").close()
    monkeypatch.chdir(tmp_path / "p")
    for path in (".", str(tmp_path / "p")):
        result = CliRunner().invoke(init, [path])
        assert result.exit_code == 1 and isinstance(result.exception, ls.ConflictError)
        message = str(result.exception)
        assert message.startswith("this folder is already a loopstack project (") and "`cd" not in message
        assert "run loopstack commands here" in message
    monkeypatch.chdir(tmp_path)  # from elsewhere, the hint still says how to get there
    message = str(CliRunner().invoke(init, ["p"]).exception)
    assert "work in that project with `cd p` or `loopstack -p p ...`" in message
