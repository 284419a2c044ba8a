"""The examples in docs/pipelines.md run, in order, as one script, and print what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import loopstack as ls

DOC = Path(__file__).resolve().parents[2] / "docs" / "pipelines.md"


def test_docs_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    code = "\n".join(blocks).replace("/tmp/pipelines-demo", str(tmp_path / "pipelines-demo"))
    try:
        exec(compile(code, str(DOC), "exec"), {"__name__": "pipelines_docs"})
    finally:
        root = tmp_path / "pipelines-demo"
        if (root / "loopstack.yaml").exists():
            ls.Project.open(root).close()
    out = capsys.readouterr().out
    for comment in re.findall(r"print\(.*?\)\s+# (.*)", "\n".join(blocks)):
        assert comment in out, comment
    lineage = re.search(r"for entry in lineage\(.*?\n(# .*?)\n```", text, re.S)
    assert lineage is not None
    printed = [line.removeprefix("# ") for line in lineage.group(1).splitlines()]
    assert len(printed) == 5 and all(line in out.splitlines() for line in printed), printed  # one per artifact
    story = re.search(r"The story printed is one cause chain, signal first:\n\n(.*?)\n\n", text, re.S)
    assert story is not None
    assert " ".join(story.group(1).split()) in out


def test_docs_cli_flows_file_runs_with_the_documented_command(tmp_path: Path) -> None:
    """The page ran `loopstack pipelines run flows.py:train` without showing a flows.py."""
    from click.testing import CliRunner

    from loopstack.cli import cli

    text = DOC.read_text(encoding="utf-8")
    flows = re.search(r"```py\n# flows.py\n(.*?)```", text, re.S)
    command = re.search(r"^    loopstack (pipelines run flows.py:train .*?)   ", text, re.M)
    assert flows is not None and command is not None
    ls.Project.init(tmp_path, name="cli-docs").close()
    (tmp_path / "flows.py").write_text(flows.group(1))
    result = CliRunner().invoke(cli, ["-p", str(tmp_path), *command.group(1).split()])
    assert result.exit_code == 0, result.output
    assert "of train: finished" in result.output and "2 step(s) ran" in result.output
