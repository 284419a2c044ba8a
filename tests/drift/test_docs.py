"""The Python examples in docs/drift.md run as written and print what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "drift.md"


def test_docs_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    printed = out.getvalue()
    assert "True 0.5 ['age']" in printed and "age wasserstein 0.3231" in printed
    assert "age wasserstein" in printed and "city jensenshannon" in printed
    assert namespace["detector"].score(namespace["cur"]).drifted
    assert "['drift.detected', 'drift.checked']" in printed
    assert "['drift.checked', 'drift.detected', 'drift.labels', 'drift.predictions', 'performance.checked']" in printed
    assert "labels 0.5 {'accuracy': 0.08, 'f1': 0.0}" in printed
