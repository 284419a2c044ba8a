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
