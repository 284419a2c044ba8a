"""The public surface of loopstack.economics is what we mean to export, and it imports no torch."""

from __future__ import annotations

import subprocess
import sys

import loopstack.economics as ec


def test_all_names_exist_and_are_unique() -> None:
    assert len(ec.__all__) == len(set(ec.__all__))
    for name in ec.__all__:
        assert hasattr(ec, name), name
    assert {"training_memory", "inference_memory", "right_size", "UsageMeter", "PriceTable"} <= set(ec.__all__)


def test_importing_economics_does_not_import_torch_or_pandas() -> None:
    code = (
        "import sys, loopstack.economics, loopstack.economics.cli; "
        "print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
