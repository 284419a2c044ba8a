"""The demo report's numbers are the ones the console printed."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from loopstack.demo.config import Scenario
from loopstack.demo.report import collect, render
from tests.conftest import fresh_project


def test_the_report_counts_the_generated_transactions_not_the_requested_rows(tmp_path: Path) -> None:
    """The page said 36,000 (the scenario's rows) while the console said 39,472 (the rows generated)."""
    world = mock.Mock(scenario=Scenario.for_rows(36_000), tx=[None] * 39_472, state={})
    no_models = mock.patch("loopstack.registry.search_model_versions", return_value=[])  # no champion trained here
    with fresh_project(tmp_path / "demo") as project, no_models:
        page = render(collect(project, world))
    assert "39,472 transactions over 60 days" in page
    assert "36,000 transactions" not in page
