"""A canary's primary metric as a scoring rule of prediction and label, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, mean_absolute_error, mean_squared_error

from loopstack.core.errors import ValidationError
from loopstack.core.project import Project
from loopstack.rollout.rewards import higher_is_better, score

from .conftest import register


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 60), k=st.integers(2, 5))
def test_scoring_rules_average_to_scikit_learns_metrics(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(k), size=n)
    labels = rng.integers(0, k, size=n)
    assert np.isclose(score("log_loss", probabilities, labels).mean(), log_loss(labels, probabilities, labels=range(k)))
    assert np.isclose(score("accuracy", probabilities, labels).mean(),
                      accuracy_score(labels, probabilities.argmax(axis=1)))
    onehot = np.eye(k)[labels]
    assert np.allclose(score("brier", probabilities, labels), ((probabilities - onehot) ** 2).sum(axis=1)
                       if k > 2 else (probabilities[:, 1] - labels) ** 2)
    if k == 2:
        assert np.isclose(score("brier", probabilities, labels).mean(), brier_score_loss(labels, probabilities[:, 1]))
        assert np.isclose(score("log_loss", probabilities[:, 1], labels).mean(),
                          log_loss(labels, probabilities, labels=[0, 1]))
    predictions, targets = rng.normal(size=n), rng.normal(size=n)
    assert np.isclose(score("squared_error", predictions, targets).mean(), mean_squared_error(targets, predictions))
    assert np.isclose(score("absolute_error", predictions[:, None], targets).mean(),
                      mean_absolute_error(targets, predictions))


def test_bad_labels_and_shapes_name_the_fix() -> None:
    with pytest.raises(ValidationError, match=r"label 2\.0 is not a class index of a 2-class"):
        score("brier", np.array([[0.5, 0.5], [0.1, 0.9]]), np.array([1, 2]))
    with pytest.raises(ValidationError, match="use brier, log_loss or accuracy"):
        score("squared_error", np.array([[0.5, 0.5]]), np.array([1]))


def test_a_scoring_rule_knows_its_direction(sqlite_project: Project) -> None:
    assert (higher_is_better("log_loss", None), higher_is_better("accuracy", None)) == (False, True)
    assert (higher_is_better(None, None), higher_is_better("revenue", None), higher_is_better("cost", False)) == (
        True, True, False)
    refs = register(sqlite_project, count=1)
    assert sqlite_project.deployments.create("api", refs[0], primary_metric="brier").higher_is_better is False
    with pytest.raises(ValidationError, match="better when lower"):
        sqlite_project.deployments.create("other", refs[0], primary_metric="brier", higher_is_better=True)
    for blank in ("", "  "):
        with pytest.raises(ValidationError, match="names no metric"):
            sqlite_project.deployments.create("blank", refs[0], primary_metric=blank)
    assert "blank" not in sqlite_project.deployments.names()
