"""Compiled tree ensembles: the same answers as scikit-learn, bit for bit, without importing it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

import loopstack as ls
from loopstack.core.project import Project
from loopstack.registry.api import get_model_version
from loopstack.registry.flavors import trees


def _data(seed: int, rows: int = 2000, features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features)) * rng.uniform(0.1, 100, features)
    X[rng.random(X.shape) < 0.05] = np.nan
    y = np.nansum(X[:, :3] / X[:, :3].std(axis=0, where=~np.isnan(X[:, :3])), axis=1)
    return X, y


def _unseen(seed: int, features: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    X = rng.standard_normal((3000, features)) * 200
    X[rng.random(X.shape) < 0.1] = np.nan
    X[0, 0], X[1, 1], X[2, 2] = np.inf, -np.inf, -0.0
    return X


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_classifier_compiles_to_the_same_predictions_and_probabilities(seed: int) -> None:
    X, y = _data(seed)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=seed).fit(X, y > 0)
    compiled = trees.load(trees.dump(trees.compile_trees(model)))
    unseen = _unseen(seed)
    assert np.array_equal(compiled.predict_proba(unseen), model.predict_proba(unseen))
    assert np.array_equal(compiled.predict(unseen), model.predict(unseen))
    assert compiled.predict(unseen).dtype == model.predict(unseen).dtype
    assert list(compiled.classes_) == list(model.classes_)


def test_string_labels_and_named_columns_are_kept() -> None:
    X, y = _data(3)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = HistGradientBoostingClassifier(max_iter=30).fit(frame, np.where(y > 0, "fraud", "ok"))
    compiled = trees.load(trees.dump(trees.compile_trees(model)))
    unseen = pd.DataFrame(_unseen(3), columns=frame.columns)
    assert np.array_equal(compiled.predict(unseen), model.predict(unseen))
    assert np.array_equal(compiled.predict_proba(unseen), model.predict_proba(unseen))
    with pytest.raises(ValueError, match="in that order"):
        compiled.predict(unseen[list(reversed(frame.columns))])


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "poisson"])
def test_a_regressor_compiles_to_the_same_predictions(loss: str) -> None:
    X, y = _data(4)
    target = np.abs(y) if loss == "poisson" else y
    model = HistGradientBoostingRegressor(loss=loss, max_iter=40).fit(X, target)
    compiled = trees.load(trees.dump(trees.compile_trees(model)))
    assert np.array_equal(compiled.predict(_unseen(4)), model.predict(_unseen(4)))
    assert not hasattr(compiled, "predict_proba")


def test_unsupported_models_are_not_compiled() -> None:
    X, y = _data(5)
    multiclass = HistGradientBoostingClassifier(max_iter=5).fit(X, np.digitize(y, [-1, 1]))
    categorical = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(
        np.column_stack([np.arange(len(X)) % 4, X[:, 1:]]), y > 0)
    for model in (multiclass, categorical, LogisticRegression().fit(np.nan_to_num(X), y > 0)):
        assert trees.compile_trees(model) is None


def test_a_compiled_form_that_disagrees_on_the_probe_rows_is_not_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _data(6)
    model = HistGradientBoostingClassifier(max_iter=10).fit(X, y > 0)
    exact = trees.CompiledClassifier.predict_proba
    monkeypatch.setattr(trees.CompiledClassifier, "predict_proba", lambda self, d: np.nextafter(exact(self, d), 2))
    assert trees.compile_trees(model) is None


def _registered(project: Project) -> tuple[Any, np.ndarray]:
    X, y = _data(7)
    model = HistGradientBoostingClassifier(max_iter=20).fit(X, y > 0)
    with ls.start_run(project=project) as run:
        logged = run.log_model(model, "model", example=X[:5])
    ls.register_model(run.id, "model", name="fraud", alias="champion", project=project)
    assert "trees.npz" in logged.files
    return model, _unseen(7)


def test_the_registry_loads_the_compiled_form_on_request(sqlite_project: Project) -> None:
    model, unseen = _registered(sqlite_project)
    native = ls.load_model("fraud@champion", project=sqlite_project)
    compiled = ls.load_model("fraud@champion", project=sqlite_project, compiled=True)
    assert type(native.raw) is HistGradientBoostingClassifier
    assert isinstance(compiled.raw, trees.CompiledClassifier) and compiled.flavor == "sklearn"
    assert np.array_equal(compiled.predict_proba(unseen), native.predict_proba(unseen))
    assert np.array_equal(compiled.predict(unseen), model.predict(unseen))


def test_a_tampered_compiled_file_is_refused(sqlite_project: Project) -> None:
    _registered(sqlite_project)
    version = get_model_version("fraud@champion", project=sqlite_project)
    manifest = json.loads(sqlite_project.artifacts.get_bytes(version.digest))
    path = sqlite_project.artifacts.path_of(manifest["files"]["trees.npz"])
    Path(path).write_bytes(Path(path).read_bytes()[:-10])
    with pytest.raises(ls.IntegrityError):
        ls.load_model("fraud@champion", project=sqlite_project, compiled=True)


def test_loading_the_compiled_form_does_not_import_scikit_learn(sqlite_project: Project) -> None:
    _registered(sqlite_project)
    code = (
        "import sys, numpy as np, loopstack as ls\n"
        f"project = ls.Project.open({str(sqlite_project.root)!r})\n"
        "model = ls.load_model('fraud@champion', project=project, compiled=True)\n"
        "print(model.predict_proba(np.zeros((2, 8))).shape, 'sklearn' in sys.modules, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["False", "False"]


def test_a_server_loads_the_compiled_form(sqlite_project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopstack.serving.config import ModelSpec
    from loopstack.serving.models import load

    _, unseen = _registered(sqlite_project)
    monkeypatch.setenv("LOOPSTACK_PROJECT", str(sqlite_project.root))
    adapter = load(ModelSpec.parse("fraud@champion"))
    assert isinstance(adapter.model.raw, trees.CompiledClassifier) and adapter.method == "predict_proba"
    native = ls.load_model("fraud@champion", project=sqlite_project)
    assert np.array_equal(adapter.run(unseen[:64]), native.predict_proba(unseen[:64]))


def test_rows_walked_in_many_chunks_give_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _data(8)
    model = HistGradientBoostingClassifier(max_iter=25).fit(X, y > 0)
    compiled = trees.load(trees.dump(trees.compile_trees(model)))
    monkeypatch.setattr(trees, "_CHUNK_CELLS", 7 * 25)  # 7 rows per chunk
    assert np.array_equal(compiled.predict_proba(_unseen(8)[:100]), model.predict_proba(_unseen(8)[:100]))


_SMALL_BATCH_MODEL = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=3).fit(
    *(lambda X, y: (X, y > 0))(*_data(3)))
_SMALL_BATCH_COMPILED = trees.load(trees.dump(trees.compile_trees(_SMALL_BATCH_MODEL)))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 90), nan_share=st.sampled_from([0.0, 0.0, 0.2, 1.0]), seed=st.integers(0, 2**16))
def test_any_batch_with_or_without_missing_values_matches_scikit_learn(rows: int, nan_share: float,
                                                                        seed: int) -> None:
    """Trees of unequal depth walked tree-major: a batch with no NaN takes the shorter test."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 8)) * 50
    X[rng.random(X.shape) < nan_share] = np.nan
    assert np.array_equal(_SMALL_BATCH_COMPILED.predict_proba(X), _SMALL_BATCH_MODEL.predict_proba(X))


def test_a_tree_that_is_one_leaf_adds_its_value() -> None:
    X, y = _data(5, rows=200)
    model = HistGradientBoostingRegressor(max_iter=5, min_samples_leaf=150).fit(X, y)  # too few rows to split
    arrays = trees.compile_trees(model)
    assert arrays is not None and arrays["leaf"].all()
    compiled = trees.load(trees.dump(arrays))
    assert np.array_equal(compiled.predict(_unseen(5)), model.predict(_unseen(5)))
