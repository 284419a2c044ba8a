"""The Python examples in docs/rollout.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "rollout.md"


def test_docs_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["report"].verdicts[0].outcome == "better"
    assert namespace["decision"].action == "rollback"
    assert namespace["test"].stopped
    assert namespace["shadow_report"].pairs == 50
    assert namespace["canary_decision"].action == "promote"
