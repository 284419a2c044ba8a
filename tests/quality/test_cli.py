"""`loopstack quality` refuses bad input in one line and never writes over the data it reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import cli_fails

from loopstack.quality.cli import quality


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    pd.DataFrame({"x": [1.0, 2.0, 3.0]}).to_parquet(tmp_path / "data.parquet")
    (tmp_path / "suite.yaml").write_text("name: s\nexpectations:\n  - {kind: not_null, column: x}\n")
    return tmp_path


def _fails(*args: str | Path, code: int = 1) -> str:
    return cli_fails(quality, *args, code=code)


def test_unreadable_data_is_named(folder: Path) -> None:
    (folder / "bad.parquet").write_text("not parquet")
    (folder / "empty").mkdir()
    cases = {folder / "bad.parquet": "Parquet file", folder / "empty": "No files found",
             "SELECT * FROM nosuchtable": "nosuchtable does not exist"}
    for data, message in cases.items():
        for args in (("check", folder / "suite.yaml", data), ("profile", data)):
            text = _fails(*args)
            assert f"cannot read {str(data)!r}" in text and message in text


def test_a_suite_file_that_is_not_text_or_lacks_kinds(folder: Path) -> None:
    assert "is not text" in _fails("check", folder / "data.parquet", folder / "data.parquet")
    (folder / "nokind.yaml").write_text("name: s\nexpectations:\n  - {expect: not_null, column: x}\n")
    assert "has no 'kind'" in _fails("check", folder / "nokind.yaml", folder / "data.parquet")


def test_profile_never_writes_over_its_data(folder: Path) -> None:
    data = folder / "data.parquet"
    before = data.read_bytes()
    assert "would overwrite the data" in _fails("profile", data, "-o", data)
    assert "would overwrite the data" in _fails("profile", folder, "-o", folder / "s.yaml")
    assert data.read_bytes() == before


def test_counts_must_not_be_negative(folder: Path) -> None:
    assert "-1 is not in the range x>=0" in _fails("check", folder / "suite.yaml", folder / "data.parquet",
                                                   "--sample-size", "-1", code=2)
    assert "-1 is not in the range x>=0" in _fails("profile", folder / "data.parquet", "--max-categories", "-1",
                                                   code=2)


def test_brackets_in_names_and_values_print_as_text(folder: Path, sqlite_project) -> None:
    """Rich read '[/]' in a value, column or suite name as markup: MarkupError, a traceback, no table."""
    from click.testing import CliRunner

    pd.DataFrame({"[/]col": [1, 2], "s": ["a", "[/]"]}).to_parquet(folder / "odd.parquet")
    (folder / "odd.yaml").write_text("name: '[bold]s[/]'\nexpectations:\n  - {kind: in_set, column: s, values: [a]}\n"
                                     "  - {kind: between, column: '[/]col', max: 1}\n")
    obj = {"project_path": str(sqlite_project.root)}
    done = CliRunner().invoke(quality, ["check", "--record", str(folder / "odd.yaml"), str(folder / "odd.parquet")],
                              obj=obj)
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), repr(done.exception)
    assert "'[bold]s[/]'" in done.output and "between([/]col)" in done.output and "'s': '[/]'" in done.output
    shown = CliRunner().invoke(quality, ["history"], obj=obj, env={"COLUMNS": "400"})  # wide: no folded cells
    assert shown.exit_code == 0, shown.output
    assert "[bold]s[/]" in shown.output and "between([/]col)" in shown.output
