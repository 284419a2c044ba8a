"""`loopstack drift report` refuses bad input in one line and never writes over its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import cli_fails

from loopstack.drift.cli import drift


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.normal(size=300)}).to_parquet(tmp_path / "ref.parquet")
    pd.DataFrame({"x": rng.normal(1, 1, size=300)}).to_parquet(tmp_path / "cur.parquet")
    return tmp_path


def _fails(*args: str | Path) -> str:
    return cli_fails(drift, "report", *args)


def test_unreadable_or_empty_data_is_named(data: Path) -> None:
    (data / "bad.parquet").write_text("not parquet")
    (data / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (data / "empty").mkdir()
    ref = data / "ref.parquet"
    assert "bad.parquet is not a Parquet file" in _fails("--reference", ref, "--current", data / "bad.parquet")
    assert "ragged.csv as CSV" in _fails("--reference", ref, "--current", data / "ragged.csv")
    assert "holds no Parquet files" in _fails("--reference", ref, "--current", data / "empty")


def test_the_report_never_overwrites_its_data(data: Path) -> None:
    ref, cur = data / "ref.parquet", data / "cur.parquet"
    before = ref.read_bytes()
    assert "would overwrite the data" in _fails("--reference", ref, "--current", cur, "--output", ref)
    assert "would overwrite the data" in _fails("--reference", ref, "--current", cur, "--output", data, "--json", cur)
    assert ref.read_bytes() == before
    assert "give the JSON its own path" in _fails("--reference", ref, "--current", cur, "--output", data / "r",
                                                  "--json", data / "r")


def test_unwritable_report_paths_and_bad_thresholds(data: Path) -> None:
    ref, cur = data / "ref.parquet", data / "cur.parquet"
    (data / "out").mkdir()
    assert "cannot write the report to" in _fails("--reference", ref, "--current", cur, "--output", data / "out")
    assert "cannot write the report to" in _fails("--reference", ref, "--current", cur, "--output",
                                                  data / "missing" / "r.html")
    assert "threshold=-1.0 must be a positive number" in _fails("--reference", ref, "--current", cur,
                                                                "--threshold", "-1")
