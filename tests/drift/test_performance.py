"""Performance metrics against scikit-learn, delayed labels per window, and label-free estimation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from loopstack.core.errors import ValidationError
from loopstack.drift import CBPE, CountWindow, TimeWindow, expected_metrics, performance
from loopstack.drift.performance import accuracy, f1, mae, rmse, roc_auc

labels = st.lists(st.integers(0, 1), min_size=2, max_size=200)


@settings(max_examples=40, deadline=None)
@given(labels, st.data())
def test_classification_metrics_match_sklearn(y: list[int], data: st.DataObject) -> None:
    pred = data.draw(st.lists(st.integers(0, 1), min_size=len(y), max_size=len(y)))
    scores = data.draw(st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), min_size=len(y), max_size=len(y)))
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert f1(y, pred) == pytest.approx(skm.f1_score(y, pred, zero_division=0.0))
    if len(set(y)) == 2:
        assert roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))
    else:
        assert np.isnan(roc_auc(y, scores))


def test_multiclass_f1_and_regression_metrics() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    assert f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))
    t, q = rng.normal(size=300), rng.normal(size=300)
    assert rmse(t, q) == pytest.approx(np.sqrt(skm.mean_squared_error(t, q)))
    assert mae(t, q) == pytest.approx(skm.mean_absolute_error(t, q))


def test_delayed_labels_fill_windows_as_they_arrive() -> None:
    log = {"id": list(range(8)), "ts": [0, 10, 20, 30, 60, 70, 80, 90], "prediction": [1, 0, 1, 1, 0, 0, 1, 1],
           "score": [0.9, 0.2, 0.8, 0.6, 0.3, 0.1, 0.7, 0.6]}
    early = performance(log, {"id": [0, 1, 2], "label": [1, 0, 0]}, window=TimeWindow(60, "ts"))
    assert [(w["start"], w["n"], w["n_labelled"]) for w in early] == [(0.0, 4, 3), (60.0, 4, 0)]
    assert early[1]["accuracy"] is None
    late = performance(log, {"id": list(range(8)), "label": [1, 0, 0, 1, 0, 1, 1, 1]},
                       window=TimeWindow(60, "ts"), score="score")
    assert [w["coverage"] for w in late] == [1.0, 1.0]
    assert late[0]["accuracy"] == 0.75 and late[1]["auc"] == pytest.approx(skm.roc_auc_score([0, 1, 1, 1],
                                                                                              [0.3, 0.1, 0.7, 0.6]))
    counted = performance(log, {"id": list(range(8)), "label": [1] * 8}, window=CountWindow(4), metrics=["accuracy"])
    assert [w["accuracy"] for w in counted] == [0.75, 0.5]


def test_regression_metrics_per_window() -> None:
    log = {"id": [1, 2, 3, 4], "prediction": [1.0, 2.0, 3.0, 5.0], "label": [1.0, 2.0, 4.0, 4.0]}
    [whole] = performance(log, metrics=["rmse", "mae"])
    assert whole["mae"] == 0.5 and whole["rmse"] == pytest.approx(np.sqrt(0.5))


def test_expected_metrics_equal_realized_on_average_when_calibrated() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(2, 2, 200_000)
    y = rng.uniform(size=p.size) < p
    estimated = expected_metrics(p)
    pred = p >= 0.5
    assert estimated["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=0.005)
    assert estimated["f1"] == pytest.approx(skm.f1_score(y, pred), abs=0.005)
    assert estimated["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=0.005)


def test_cbpe_calibrates_and_alerts_on_a_harder_chunk() -> None:
    rng = np.random.default_rng(1)
    raw = rng.uniform(size=20_000)
    y = rng.uniform(size=raw.size) < raw**2  # raw scores overstate the positive rate
    estimator = CBPE(calibrate=True).fit(raw, y)
    estimated = estimator.estimate(raw)["accuracy"]
    assert estimated == pytest.approx(skm.accuracy_score(y, raw >= 0.5), abs=0.01)
    unsure = np.full(2000, 0.5)  # every prediction a coin flip: accuracy must drop out of the band
    chunks = estimator.estimate_chunks(np.r_[raw[:2000], unsure], 2000)
    assert chunks[0]["alerts"] == [] and "accuracy" in chunks[1]["alerts"]


def test_a_label_sent_twice_counts_once_and_the_last_one_wins() -> None:
    """A retried or corrected feedback row duplicated its prediction in the join: 5 predictions out of 4."""
    log = {"id": [1, 2, 3, 4], "prediction": [1, 0, 1, 1]}
    feedback = {"id": [1, 2, 4, 4, 2], "label": [1, 0, 0, 1, 0]}
    [whole] = performance(log, feedback)
    assert (whole["n"], whole["n_labelled"], whole["coverage"], whole["accuracy"]) == (4, 3, 0.75, 1.0)
    windows = performance(log, feedback, window=CountWindow(2))
    assert [(w["n"], w["n_labelled"]) for w in windows] == [(2, 2), (2, 1)]


def test_count_windows_follow_the_log_order_not_the_key() -> None:
    # with feedback joined, count windows were cut in key order ("a", "b", "m", "z"), not as served
    log = {"id": ["z", "a", "m", "b"], "prediction": [1, 1, 0, 0]}
    feedback = {"id": ["b", "m", "a", "z"], "label": [1, 0, 1, 1]}
    joined = performance(log, feedback, window=CountWindow(2), metrics=["accuracy"])
    inline = performance({**log, "label": [1, 1, 0, 1]}, window=CountWindow(2), metrics=["accuracy"])
    assert [w["accuracy"] for w in joined] == [w["accuracy"] for w in inline] == [1.0, 0.5]


@pytest.mark.parametrize(("negative", "positive"), [(-1, 1), (1, 2), ("no", "yes"), (False, True)])
def test_auc_takes_any_two_labels_like_sklearn(negative: object, positive: object) -> None:
    rng = np.random.default_rng(0)
    y = np.where(rng.uniform(size=200) < 0.4, positive, negative)
    scores = rng.integers(0, 5, 200) / 4  # ties too
    assert roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))
    assert np.isnan(roc_auc(np.full(5, positive), scores[:5]))  # one class: undefined


def test_cbpe_refuses_missing_scores_and_too_few_reference_rows() -> None:
    # a NaN score made every estimate NaN, and a NaN is never outside a band: no alert, no word
    with pytest.raises(ValidationError, match="1 of 3 scores are missing"):
        expected_metrics([0.2, np.nan, 0.9])
    with pytest.raises(ValidationError, match="too few for 10 chunks"):
        CBPE().fit([0.2, 0.8, 0.6], [0, 1, 1])  # empty chunks: 'Mean of empty slice', NaN bands


@pytest.mark.parametrize(("negative", "positive"), [(0, 1), (-1, 1), (1, 2), ("no", "yes"), (False, True)])
def test_cbpe_reads_any_two_labels_with_the_larger_one_positive(negative: object, positive: object) -> None:
    # labels were cast to int: -1/1 counted -1 as positive in recall, 1/2 had no negatives, "no"/"yes" raised
    rng = np.random.default_rng(0)
    p = rng.uniform(size=2000)
    y = np.where(rng.uniform(size=p.size) < p, positive, negative)
    bands = CBPE(n_chunks=1, std_multiplier=0.0).fit(p, y).bands_  # one chunk, no spread: the realized metrics
    pred = np.where(p >= 0.5, positive, negative)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, pos_label=positive),
        "recall": skm.recall_score(y, pred, pos_label=positive),
        "f1": skm.f1_score(y, pred, pos_label=positive),
        "auc": skm.roc_auc_score(y == positive, p),
    }
    assert {name: low for name, (low, _) in bands.items()} == pytest.approx(expected)


@pytest.mark.parametrize("labels", [[0] * 20, [0, 1, 2] * 7, [1, 2, 3] * 7])
def test_cbpe_refuses_labels_that_are_not_two_classes(labels: list[int]) -> None:
    with pytest.raises(ValidationError, match=r"exactly two classes.*found \d: \[.*pass 0/1 labels"):
        CBPE().fit(np.linspace(0, 1, len(labels)), labels)
