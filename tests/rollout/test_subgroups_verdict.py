"""Subgroup breakdowns and verdicts keep the numbers and withhold judgement under SRM."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats import (
    Summary,
    analyze,
    holm,
    srm_check,
    subgroup_breakdown,
    verdict,
    welch_ttest,
    ztest_proportions,
)


def _units(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 6000
    segment = rng.choice(["app", "web", "tv"], n)
    variant = rng.choice(["control", "treatment"], n)
    effect = np.where((segment == "app") & (variant == "treatment"), 1.0, 0.0)
    value = rng.normal(10, 2, n) + effect
    return segment, variant, value


def test_subgroups_match_direct_per_segment_tests():
    segment, variant, value = _units()
    results = subgroup_breakdown(segment, variant, value, control="control", treatment="treatment")
    assert [r.segment for r in results] == ["app", "tv", "web"]
    raw = []
    for r in results:
        mask = segment == r.segment
        direct = welch_ttest(value[mask & (variant == "control")], value[mask & (variant == "treatment")])
        assert r.comparison.diff == pytest.approx(direct.diff)
        assert r.comparison.p_value == pytest.approx(direct.p_value, rel=1e-6)
        raw.append(direct.p_value)
    assert [r.p_adjusted for r in results] == pytest.approx(holm(raw))
    assert results[0].p_adjusted < 0.05  # the app segment has the effect
    assert results[1].p_adjusted > 0.05


def test_subgroups_for_proportions_and_small_segments():
    segment = np.array(["a"] * 200 + ["tiny"])
    variant = np.array(["c", "t"] * 100 + ["t"])
    value = np.r_[np.tile([0, 1], 100), 1]
    results = subgroup_breakdown(segment, variant, value, control="c", treatment="t", kind="proportion")
    a, tiny = results
    assert a.comparison.diff == pytest.approx(1.0)
    assert tiny.comparison is None and "fewer than" in tiny.note
    assert np.isnan(tiny.p_adjusted)


def test_subgroups_reject_ragged_input():
    with pytest.raises(ValidationError, match="one entry per unit"):
        subgroup_breakdown(["a"], ["c", "t"], [1.0], control="c", treatment="t")


@pytest.mark.parametrize(
    ("x_c", "x_t", "higher", "outcome"),
    [
        (100, 140, True, "better"),
        (100, 140, False, "worse"),
        (140, 100, True, "worse"),
        (100, 105, True, "inconclusive"),
    ],
)
def test_verdict_direction(x_c, x_t, higher, outcome):
    v = verdict("m", ztest_proportions(x_c, 1000, x_t, 1000), higher_is_better=higher)
    assert v.outcome == outcome
    assert v.comparison.diff == pytest.approx((x_t - x_c) / 1000)


def test_sample_ratio_mismatch_withholds_every_verdict():
    c, t = Summary.from_proportion(5000, 50_800), Summary.from_proportion(6000, 49_200)
    report = analyze({"conversion": (c, t)}, counts=[50_800, 49_200], weights=[0.5, 0.5])
    assert report.srm.flagged
    assert [v.outcome for v in report.verdicts] == ["withheld"]
    assert "MISMATCH" in report.to_markdown()


def test_analyze_corrects_across_metrics_and_renders():
    metrics = {
        "conversion": (Summary.from_proportion(1000, 10_000), Summary.from_proportion(1100, 10_000)),
        "revenue": (Summary(10_000, 5.0, 4.0), Summary(10_000, 5.02, 4.0)),
        "latency_ms": (Summary(10_000, 100.0, 100.0), Summary(10_000, 101.0, 100.0)),
    }
    report = analyze(metrics, counts=[10_000, 10_000], weights=[0.5, 0.5], higher_is_better={"latency_ms": False})
    raw = [welch_ttest(*pair).p_value for pair in metrics.values()]
    assert [v.p_adjusted for v in report.verdicts] == pytest.approx(holm(raw))
    assert {v.metric: v.outcome for v in report.verdicts} == {
        "conversion": "better",
        "revenue": "inconclusive",
        "latency_ms": "worse",
    }
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["verdicts"][0]["lift"] == pytest.approx(0.1)
    markdown = report.to_markdown()
    assert "| conversion |" in markdown and "+10.00%" in markdown
    console = Console(record=True, width=160)
    console.print(report)
    text = console.export_text()
    assert "latency_ms" in text and "worse" in text


def test_sequential_analysis_is_more_conservative():
    pair = (Summary.from_proportion(1000, 10_000), Summary.from_proportion(1090, 10_000))
    fixed = analyze({"c": pair}).verdicts[0]
    seq = analyze({"c": pair}, method="sequential", planned_n=20_000).verdicts[0]
    assert fixed.outcome == "better"
    assert seq.outcome == "inconclusive"
    assert seq.comparison.p_value > fixed.comparison.p_value


def test_analyze_rejects_unknown_method():
    pair = (Summary.from_proportion(1, 10), Summary.from_proportion(2, 10))
    with pytest.raises(ValidationError, match="'bayes'"):
        analyze({"c": pair}, method="bayes")  # type: ignore[arg-type]


def test_srm_result_is_json_ready():
    assert json.loads(json.dumps(srm_check([10, 12], [0.5, 0.5]).to_dict()))["flagged"] is False


def test_subgroups_keep_the_variance_of_a_metric_with_a_large_mean():
    # e.g. timestamps or amounts in micro-units: sum of squares minus n * mean**2 cancelled to 0 at 1e8
    rng = np.random.default_rng(4)
    segment, variant = np.array(["a"] * 2000), np.array(["c", "t"] * 1000)
    value = 1e8 + rng.normal(0, 1, 2000) + np.where(variant == "t", 0.1, 0.0)
    (result,) = subgroup_breakdown(segment, variant, value, control="c", treatment="t")
    direct = welch_ttest(value[variant == "c"], value[variant == "t"])
    assert result.comparison.treatment.var == pytest.approx(direct.treatment.var, rel=1e-6)
    assert result.comparison.p_value == pytest.approx(direct.p_value, rel=1e-6)


def test_a_sequential_analysis_before_any_data_says_so():
    # the default planned_n is the units seen so far: with none, the error spoke of planned_n the caller never passed
    empty = (Summary(0, 0.0, 0.0), Summary(0, 0.0, 0.0))
    with pytest.raises(ValidationError, match=r"'conversion' has no data yet \(n=0 in both variants\)"):
        analyze({"conversion": empty}, method="sequential")
    assert analyze({"conversion": empty}, method="sequential", planned_n=1000).verdicts[0].outcome == "inconclusive"
