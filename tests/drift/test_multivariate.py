"""Multivariate drift: a broken correlation that no single column shows is found by both detectors."""

from __future__ import annotations

import numpy as np
import pytest

from loopstack.core.errors import ValidationError
from loopstack.drift import DomainClassifier, ReconstructionDrift, compare


def _sample(rng: np.random.Generator, n: int, sign: float = 1.0) -> dict[str, np.ndarray]:
    a = rng.normal(size=n)
    return {"a": a, "b": sign * a + 0.3 * rng.normal(size=n), "c": rng.normal(size=n),
            "cat": rng.choice(["x", "y"], n)}


def test_correlation_break_is_invisible_per_column_but_found_jointly() -> None:
    rng = np.random.default_rng(0)
    ref, same, flipped = _sample(rng, 5000), _sample(rng, 1000), _sample(rng, 1000, sign=-1.0)
    assert compare(ref, flipped).drifted_columns == []
    detector = ReconstructionDrift().fit(ref)
    assert detector.reference_errors_.size == 10
    assert not detector.score(same).drifted
    assert detector.score(flipped).drifted
    chunks = detector.score_chunks({k: np.r_[same[k], flipped[k]] for k in same}, 500)
    assert [c.drifted for c in chunks] == [False, False, True, True]


def test_reconstruction_needs_fit_and_valid_components() -> None:
    with pytest.raises(ValidationError, match="not fitted"):
        ReconstructionDrift().score({"a": [1.0]})
    with pytest.raises(Exception, match="n_components"):
        ReconstructionDrift(n_components=1.5).fit({"a": np.arange(100.0), "b": np.arange(100.0) ** 2})


def test_domain_classifier_auc() -> None:
    rng = np.random.default_rng(1)
    ref = _sample(rng, 400)
    found = DomainClassifier(max_rows=400, folds=3).score(ref, _sample(rng, 400, sign=-1.0))
    calm = DomainClassifier(max_rows=400, folds=3).score(ref, _sample(rng, 400))
    assert found.drifted and found.auc > 0.8 and len(found.fold_aucs) == 3
    assert not calm.drifted and calm.auc < 0.56


def _correlated(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    a = rng.normal(size=(n, 2))
    return {f"c{j}": a[:, j % 2] + 0.5 * rng.normal(size=n) for j in range(5)}


def test_reconstruction_band_follows_the_current_chunk_size() -> None:
    # the band was learned for 500-row reference chunks; 100-row chunks of unchanged data drifted 1 time in 4
    alarms = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        detector = ReconstructionDrift().fit(_correlated(rng, 5000))
        alarms += detector.score(_correlated(rng, 100)).drifted
    assert alarms <= 4
    small, large = detector.score(_correlated(rng, 100)), detector.score(_correlated(rng, 2500))
    assert small.upper - small.lower > large.upper - large.lower


def test_reconstruction_never_keeps_every_component() -> None:
    # keeping all components rebuilt every row exactly: a shift of 100 went unseen, verdicts were rounding noise
    rng = np.random.default_rng(0)
    detector = ReconstructionDrift().fit({"x": rng.normal(size=1000)})
    assert detector.score({"x": rng.normal(size=300) + 100}).drifted
    assert not detector.score({"x": rng.normal(size=300)}).drifted
    pair = ReconstructionDrift().fit({"x": rng.normal(size=1000), "c": rng.choice(list("abc"), 1000)})
    assert not pair.score({"x": rng.normal(size=300), "c": rng.choice(list("abc"), 300)}).drifted
    assert pair.score({"x": rng.normal(size=300), "c": rng.choice(list("xyz"), 300)}).drifted


def test_reconstruction_band_of_zero_width_ignores_rounding() -> None:
    # every reference chunk scored the same, and the reference itself fell one rounding step outside
    flags = {"c": [None, "a"] * 100, "b": [True, False, None, True] * 50}
    assert not ReconstructionDrift().fit(flags).score(flags).drifted
    constant = ReconstructionDrift().fit({"a": np.ones(200), "b": np.ones(200)})  # warned 0/0, then saw nothing
    assert not constant.score({"a": np.ones(50), "b": np.ones(50)}).drifted
    assert constant.score({"a": np.full(50, 2.0), "b": np.ones(50)}).drifted


def test_reconstruction_refuses_data_it_cannot_judge() -> None:
    rng = np.random.default_rng(0)
    ref = {"a": rng.normal(size=200), "empty": np.full(200, np.nan)}  # an all-missing column: SVD did not converge
    assert not ReconstructionDrift().fit(ref).score(ref).drifted
    detector = ReconstructionDrift().fit({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    with pytest.raises(ValidationError, match="no rows"):
        detector.score({"a": np.array([]), "b": np.array([])})  # was NaN, reported as drift
    with pytest.raises(ValidationError, match=r"\['b'\] of the reference"):
        detector.score({"a": [1.0]})  # was a raw KeyError
    with pytest.raises(ValidationError, match="8 rows for 20 columns"):
        ReconstructionDrift(n_chunks=2).fit({f"c{i}": rng.normal(size=8) for i in range(20)})


def test_encoding_columns_the_reference_lacks_names_them() -> None:
    """fit(columns=[...]) with a name the reference does not have raised a raw KeyError."""
    from loopstack.drift.encode import FrequencyEncoder

    with pytest.raises(ValidationError, match=r"columns \['nope'\] are not in the reference"):
        FrequencyEncoder(columns=["x", "nope"]).fit({"x": [1.0, 2.0]})
    with pytest.raises(ValidationError, match=r"\['nope'\] are not in the reference"):
        ReconstructionDrift(columns=["x", "nope"]).fit({"x": np.arange(50.0), "y": np.arange(50.0)})


def test_domain_classifier_threshold_rises_at_small_samples() -> None:
    # at 30 rows a side, unchanged data reached the fixed AUC 0.55 about one time in four
    aucs, alarms = [], 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        same = [{"a": rng.normal(size=30), "c": rng.choice(list("xyz"), 30)} for _ in range(2)]
        result = DomainClassifier(folds=3, seed=seed).score(*same)
        aucs.append(result.auc)
        alarms += result.drifted
    assert result.threshold == result.chance_threshold > 0.65
    assert sum(a >= 0.55 for a in aucs) >= 8 and alarms <= 4  # what the fixed threshold flagged, and what is left
    rng = np.random.default_rng(0)
    large = DomainClassifier(max_rows=1500, folds=3).score({"a": rng.normal(size=1500)}, {"a": rng.normal(size=1500)})
    assert large.threshold == 0.55 > large.chance_threshold  # the floor holds where chance cannot reach it
    shifted = DomainClassifier(folds=3).score({"a": rng.normal(size=30)}, {"a": rng.normal(size=30) + 2})
    assert shifted.drifted  # a clear change is still found at 30 rows


def test_domain_classifier_refuses_samples_too_small_to_ever_flag() -> None:
    # 5 rows a side: the threshold came out at 1.05, and a shift of 100 standard deviations read "no drift"
    rng = np.random.default_rng(0)
    with pytest.raises(ValidationError, match=r"5 reference and 5 current rows are too few .* at least \d+ rows"):
        DomainClassifier(folds=5).score({"a": rng.normal(size=5)}, {"a": rng.normal(size=5) + 100})
    assert DomainClassifier(folds=2).score({"a": rng.normal(size=30)}, {"a": rng.normal(size=30) + 100}).drifted


@pytest.mark.parametrize(("kwargs", "match"), [({"alpha": 0.0}, "alpha must be in"), ({"folds": 1}, "at least 2")])
def test_domain_classifier_settings_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        DomainClassifier(**kwargs).score({"a": np.arange(20.0)}, {"a": np.arange(20.0)})


def test_an_infinite_value_is_missing_to_the_multivariate_detectors() -> None:
    """The column tests drop infinities; these passed them on, to scikit-learn's error and a failed SVD."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=1000)
    values[5] = np.inf
    rows = {"a": values, "b": rng.normal(size=1000), "c": rng.normal(size=1000)}
    assert not DomainClassifier(max_rows=300).score(rows, rows).drifted
    detector = ReconstructionDrift().fit(rows)
    assert np.isfinite(detector.score(rows).error)


def test_a_numpy_integer_is_a_component_count() -> None:
    rng = np.random.default_rng(0)
    rows = {k: rng.normal(size=500) for k in "abc"}
    detector = ReconstructionDrift(n_components=np.int64(2)).fit(rows)
    assert detector._components.shape[0] == 2
