"""The HTML report is self-contained, the JSON carries the same content, and the CLI writes both."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from click.testing import CliRunner

from loopstack.drift import compare
from loopstack.drift.cli import drift


def _frames(shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000)})
    cur = pd.DataFrame({"x": rng.normal(shift, 1, size=2000), "c": rng.choice(["a", "b"], 2000)})
    return ref, cur


def test_report_is_offline_html_with_plots_and_embedded_json(tmp_path) -> None:
    result = compare(*_frames(1.0))
    page = result.report(str(tmp_path / "r.html"), str(tmp_path / "r.json"))
    assert page.count("<svg") == 2
    assert not re.search(r"(src|href)=['\"]?https?:", page), "the report must not fetch anything"
    saved = json.loads((tmp_path / "r.json").read_text())
    embedded = json.loads(re.search(r"id='drift-data'>(.*)</script>", page).group(1))
    assert saved["columns"]["x"]["score"] == embedded["columns"]["x"]["score"] == result.columns["x"].score
    assert saved["dataset_drift"] is True and saved["share"] == 0.5  # 1 of 2 reaches the 0.5 share
    assert saved["columns"]["x"]["drifted"] is True and saved["columns"]["c"]["drifted"] is False
    assert len(saved["columns"]["x"]["histogram"]["reference"]) == len(saved["columns"]["x"]["histogram"]["labels"])


def test_cli_report(tmp_path) -> None:
    ref, cur = _frames(1.0)
    ref.to_parquet(tmp_path / "ref.parquet")
    cur.to_parquet(tmp_path / "cur.parquet")
    out, js = tmp_path / "out.html", tmp_path / "out.json"
    args = ["report", "--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "cur.parquet"),
            "--output", str(out), "--json", str(js)]
    done = CliRunner().invoke(drift, args)
    assert done.exit_code == 0, done.output
    assert "data-set drift (1 of 2 columns drifted: x; share threshold 50%)" in done.output
    assert f"wrote {out}, {js}" in done.output and out.exists() and js.exists()
    lenient = CliRunner().invoke(drift, [*args, "--drift-share", "0.75"])  # "no drift: 1 of 2 drifted" misread
    assert "no data-set drift (1 of 2 columns drifted: x; share threshold 75%)" in lenient.output
    strict = CliRunner().invoke(drift, [*args, "--drift-share", "0.5", "--fail-on-drift"])
    assert strict.exit_code == 1
    bad = CliRunner().invoke(drift, [*args, "--test", "nope"])
    assert bad.exit_code != 0 and "unknown drift test" in str(bad.exception)


def test_cli_test_runs_where_it_can_and_the_other_columns_keep_their_default(tmp_path) -> None:
    """``--test ks`` on data with a text column failed the whole report: ks cannot test categories."""
    ref, cur = _frames(1.0)
    ref.to_parquet(tmp_path / "ref.parquet")
    cur.to_parquet(tmp_path / "cur.parquet")
    js = tmp_path / "out.json"
    args = ["report", "--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "cur.parquet"),
            "--output", str(tmp_path / "out.html"), "--json", str(js)]
    for test, expected in (("ks", {"x": "ks", "c": "jensenshannon"}), ("psi", {"x": "psi", "c": "psi"})):
        done = CliRunner().invoke(drift, [*args, "--test", test])
        assert done.exit_code == 0, done.output
        columns = json.loads(js.read_text())["columns"]
        assert {name: column["test"] for name, column in columns.items()} == expected


def test_hostile_names_stay_text_in_the_page_and_the_embedded_json() -> None:
    """'<!--<script>' inside the JSON script block put the browser in its double-escaped state (the page swallowed)."""
    import html

    name = "<!--<script>x</script><img src=x onerror=alert(1)>&amp;"
    result = compare({name: np.arange(50.0), "c": ["<b>"] * 50}, {name: np.arange(50.0) + 9, "c": ["<i>"] * 50})
    page = result.report(title="<title>t</title>")
    embedded = re.search(r"id='drift-data'>(.*?)</script>", page, re.S).group(1)
    assert "<" not in embedded and json.loads(embedded)["columns"][name]["column"] == name
    outside = page.replace(embedded, "")
    assert "<img" not in outside and "<!--" not in outside and "<i>" not in outside and "<title>t" not in outside
    assert html.escape(name) in outside


def test_cli_refuses_an_empty_current_file(tmp_path) -> None:
    """An empty export printed "no data-set drift (0 of 1 columns drifted)" and passed --fail-on-drift."""
    ref, _ = _frames(0.0)
    ref.to_parquet(tmp_path / "ref.parquet")
    ref.head(0).to_parquet(tmp_path / "empty.parquet")
    args = ["report", "--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "empty.parquet"),
            "--output", str(tmp_path / "e.html"), "--json", str(tmp_path / "e.json")]
    for extra in ([], ["--fail-on-drift"]):
        done = CliRunner().invoke(drift, [*args, *extra])
        assert done.exit_code != 0 and "no data-set drift" not in done.output
        assert "empty.parquet has 0 rows" in str(done.exception)


def test_cli_reports_missing_and_new_columns_and_a_missing_one_fails_the_gate(tmp_path) -> None:
    """A column that vanished from --current was compared around in silence and the gate passed."""
    ref, cur = _frames(0.0)
    ref.to_parquet(tmp_path / "ref.parquet")
    cur.drop(columns=["c"]).to_parquet(tmp_path / "noc.parquet")
    cur.assign(extra=1.0).to_parquet(tmp_path / "extra.parquet")
    js = tmp_path / "out.json"

    def run(current: str, *extra: str):
        return CliRunner().invoke(drift, ["report", "--reference", str(tmp_path / "ref.parquet"), "--current",
                                          str(tmp_path / current), "--output", str(tmp_path / "out.html"),
                                          "--json", str(js), *extra])

    done = run("noc.parquet")
    assert done.exit_code == 0 and "no data-set drift (0 of 1 columns drifted" in done.output
    assert "warning: reference columns missing from the current data, not tested: c" in done.output
    assert json.loads(js.read_text())["missing_columns"] == ["c"]
    assert "Missing from the current data" in (tmp_path / "out.html").read_text()
    gate = run("noc.parquet", "--fail-on-drift")
    assert gate.exit_code == 1 and "failing --fail-on-drift: c missing from" in gate.output
    chosen = run("noc.parquet", "--fail-on-drift", "--column", "x")  # the columns restricted explicitly
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(js.read_text())["missing_columns"] == []
    added = run("extra.parquet", "--fail-on-drift")
    assert added.exit_code == 0, added.output
    assert "warning: current columns not in the reference, not tested: extra" in added.output
    assert json.loads(js.read_text())["new_columns"] == ["extra"]
