"""What a run records without being asked must never make the run fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import loopstack as ls
from loopstack.core.project import Project
from loopstack.tracking import capture
from loopstack.tracking import run as run_module

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def repo_on_a_latin1_branch(tmp_path: Path) -> Path:
    """A git repository whose branch name is not UTF-8 (git keeps ref names as bytes), with a dirty file."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str | bytes) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True)

    git("init", "-q")
    (repo / "train.py").write_text("print(1)\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    git("checkout", "-q", "-b", b"caf\xe9")
    (repo / "train.py").write_text("print(2)\n")
    return repo


def test_git_output_that_is_not_utf8_is_decoded_with_replacement(repo_on_a_latin1_branch: Path) -> None:
    """Strict decoding raised UnicodeDecodeError on the capture thread."""
    state = capture.git_state(str(repo_on_a_latin1_branch))
    assert state["loopstack.git.branch"] == "caf\ufffd"
    assert len(state["loopstack.git.commit"]) == 40 and state["loopstack.git.dirty"] == "true"
    assert len(state["loopstack.git.diff_sha256"]) == 64


def test_a_run_started_on_such_a_branch_records_it_and_finishes(
    project: Project, repo_on_a_latin1_branch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "_process_capture", {})  # capture afresh, in this repository
    monkeypatch.chdir(repo_on_a_latin1_branch)
    with ls.start_run() as run:
        run.log_metric("loss", 0.5)
    stored = ls.Client(project).get_run(run.id)
    assert stored.status == "FINISHED" and stored.metrics["loss"] == 0.5
    assert stored.tags["loopstack.git.branch"] == "caf\ufffd"


def test_git_failing_after_the_first_command_records_no_git_state(
    repo_on_a_latin1_branch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first git command was guarded; a later one failing (a timeout) raised on the capture thread."""
    real_run = subprocess.run

    def slow_status(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if args[:2] == ["git", "status"]:
            raise subprocess.TimeoutExpired(args, capture.GIT_TIMEOUT_S)
        return real_run(args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(subprocess, "run", slow_status)
    assert capture.git_state(str(repo_on_a_latin1_branch)) == {}
