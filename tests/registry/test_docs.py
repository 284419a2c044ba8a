"""The examples in docs/registry.md run, in order, as one script."""

from __future__ import annotations

import re
from pathlib import Path

import loopstack as ls

DOC = Path(__file__).resolve().parents[2] / "docs" / "registry.md"


def test_docs_examples_run(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    code = "\n".join(blocks).replace("/tmp/registry-demo", str(tmp_path / "registry-demo"))
    try:
        exec(compile(code, str(DOC), "exec"), {})
    finally:
        root = tmp_path / "registry-demo"
        if (root / "loopstack.yaml").exists():
            ls.Project.open(root).close()
    out = capsys.readouterr().out
    assert "fraud/1 ('champion',)" in out
    assert "model 'fraud' has no alias 'staging'; its aliases: champion->1" in out
    assert "column 'amount': expected float64, got string" in out
