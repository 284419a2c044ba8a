"""Every flavor saves, registers, loads and predicts exactly what the original predicts.

Flavors never touch the metadata database, so these run on SQLite only; the
registry's own tests cover both backends.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import loopstack as ls
from loopstack.registry.flavors import FLAVOR_NAMES, detect_flavor


@pytest.fixture
def project(sqlite_project):
    return sqlite_project


def _roundtrip(project, log_in_run, model, example, **kwargs):
    run_id, logged = log_in_run(project, model, example, **kwargs)
    version = ls.register_model(run_id, "model", name="m", project=project)
    loaded = ls.load_model(f"m/{version.version}", project=project)
    return logged, loaded


def test_sklearn_pipeline_roundtrip(project, log_in_run, classification):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = classification
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0)).fit(X, y)
    logged, loaded = _roundtrip(project, log_in_run, model, X.head())
    assert (logged.flavor, loaded.flavor, loaded.name, loaded.version) == ("sklearn", "sklearn", "m", 1)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.signature.inputs.names == list(X.columns)
    assert loaded.signature.outputs.dtype == "int64"


def test_xgboost_sklearn_api_roundtrip(project, log_in_run, classification):
    import xgboost

    X, y = classification
    model = xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(X, y)
    logged, loaded = _roundtrip(project, log_in_run, model, X.head())
    assert logged.flavor == "xgboost"
    assert list(logged.files) == ["model.ubj"]  # the native format, not a pickle
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=0, atol=0)


def test_xgboost_booster_roundtrip(project, log_in_run, classification):
    import xgboost

    X, y = classification
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, xgboost.DMatrix(X, y), 8)
    _, loaded = _roundtrip(project, log_in_run, booster, X.head())
    np.testing.assert_array_equal(loaded.predict(X), booster.predict(xgboost.DMatrix(X)))
    with pytest.raises(ls.ValidationError, match="has no predict_proba"):
        loaded.predict_proba(X)
    assert not loaded.has_predict_proba


def test_xgboost_booster_trained_on_array(project, log_in_run, classification):
    import xgboost

    X, y = classification
    array = X.to_numpy()
    booster = xgboost.train({"objective": "reg:squarederror", "nthread": 1}, xgboost.DMatrix(array, y), 5)
    _, loaded = _roundtrip(project, log_in_run, booster, array[:5])
    np.testing.assert_array_equal(loaded.predict(array), booster.predict(xgboost.DMatrix(array)))


def test_lightgbm_booster_uses_native_text(project, log_in_run, classification):
    import lightgbm

    X, y = classification
    data = lightgbm.Dataset(X, y, params={"verbose": -1})
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_threads": 1}, data, num_boost_round=8)
    logged, loaded = _roundtrip(project, log_in_run, booster, X.head())
    assert (logged.flavor, list(logged.files)) == ("lightgbm", ["model.txt"])
    np.testing.assert_array_equal(loaded.predict(X), booster.predict(X))


def test_lightgbm_sklearn_api_roundtrip(project, log_in_run, classification):
    import lightgbm

    X, y = classification
    model = lightgbm.LGBMClassifier(n_estimators=8, verbose=-1, n_jobs=1).fit(X, y)
    _, loaded = _roundtrip(project, log_in_run, model, X.head())
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("zipmap", [True, False])
def test_onnx_classifier_roundtrip(project, log_in_run, classification, zipmap):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = classification
    features = X.to_numpy(dtype=np.float32)
    model = LogisticRegression().fit(features, y)
    graph = to_onnx(model, features[:1], options={id(model): {"zipmap": zipmap}}, target_opset=17)
    logged, loaded = _roundtrip(project, log_in_run, graph, features[:5])
    assert logged.flavor == "onnx"
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))
    proba = loaded.predict_proba(X.to_numpy())  # float64 input is cast to the graph's float32
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba, model.predict_proba(features), atol=1e-5)


def test_onnx_regressor_predictions_are_one_dimensional(project, log_in_run, classification):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    X, y = classification
    features = X.to_numpy(dtype=np.float32)
    model = LinearRegression().fit(features, y)
    _, loaded = _roundtrip(project, log_in_run, to_onnx(model, features[:1], target_opset=17), features[:5])
    np.testing.assert_allclose(loaded.predict(features), model.predict(features), atol=1e-5)
    with pytest.raises(ls.ValidationError, match="has no predict_proba"):
        loaded.predict_proba(features)


def test_python_function_and_object(project, log_in_run, classification):
    X, _ = classification
    threshold = 0.25  # captured by value: cloudpickle serializes the closure

    def score(frame: pd.DataFrame) -> np.ndarray:
        return (frame["age"] > threshold).to_numpy()

    class Scaled:
        def predict(self, frame):
            return frame["income"].to_numpy() * 2

        def predict_proba(self, frame):
            p = 1 / (1 + np.exp(-frame["income"].to_numpy()))
            return np.column_stack([1 - p, p])

    _, function = _roundtrip(project, log_in_run, score, X.head())
    _, instance = _roundtrip(project, log_in_run, Scaled(), X.head())
    assert (function.flavor, instance.flavor) == ("python", "python")
    np.testing.assert_array_equal(function.predict(X), score(X))
    np.testing.assert_array_equal(instance.predict(X), Scaled().predict(X))
    np.testing.assert_array_equal(instance.predict_proba(X), Scaled().predict_proba(X))
    with pytest.raises(ls.ValidationError, match="has no predict_proba"):
        function.predict_proba(X)


def test_arrow_example_keeps_arrow_input(project, log_in_run):
    import pyarrow as pa

    table = pa.table({"x": [1.0, 2.0], "n": [1, 2]})
    _, loaded = _roundtrip(project, log_in_run, lambda t: pa.compute.multiply(t["x"], t["n"]).to_numpy(), table)
    assert loaded.signature.inputs.container == "arrow"
    frame = pd.DataFrame({"n": [3, 4], "x": [0.5, 1.5]})  # pandas in, reordered, handed over as Arrow
    np.testing.assert_array_equal(loaded.predict(frame), [1.5, 6.0])


def test_detect_flavor_picks_the_library_before_sklearn():
    import lightgbm
    import xgboost
    from sklearn.linear_model import LinearRegression

    assert detect_flavor(xgboost.XGBRegressor()).name == "xgboost"
    assert detect_flavor(lightgbm.LGBMRegressor()).name == "lightgbm"
    assert detect_flavor(LinearRegression()).name == "sklearn"
    assert detect_flavor(len).name == "python"
    with pytest.raises(ls.ValidationError, match="pass flavor="):
        detect_flavor(42)
    assert set(FLAVOR_NAMES) == {"sklearn", "xgboost", "lightgbm", "onnx", "python"}


def test_explicit_flavor_and_bad_flavor(project, log_in_run, classification):
    from sklearn.linear_model import LogisticRegression

    X, y = classification
    model = LogisticRegression().fit(X, y)
    _, logged = log_in_run(project, model, X.head(), flavor="python")  # any object with predict can go as python
    assert logged.flavor == "python"
    with pytest.raises(ls.ValidationError, match="unknown model flavor 'pytorch'"):
        log_in_run(project, model, X.head(), flavor="pytorch")
    with pytest.raises(ls.ValidationError, match="xgboost flavor"):
        log_in_run(project, model, X.head(), flavor="xgboost")


def test_manifest_records_versions_and_files(project, log_in_run, classification):
    import json

    import sklearn

    X, y = classification
    from sklearn.linear_model import LogisticRegression

    run_id, logged = log_in_run(project, LogisticRegression().fit(X, y), X.head())
    manifest = json.loads(project.artifacts.get_bytes(logged.digest))
    assert manifest["flavor"] == "sklearn"
    assert manifest["model_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert manifest["versions"]["libraries"] == {"scikit-learn": sklearn.__version__}
    assert manifest["versions"]["loopstack"] == ls.__version__
    assert manifest["files"] == logged.files
    assert project.tracking.artifact_digest(run_id, "model") == logged.digest
    assert ls.load_model(logged.uri, project=project).predict(X).shape == (len(X),)


def test_a_function_logged_with_an_arrow_example_holding_nulls_predicts_on_it(project, log_in_run):
    """log_model refused its own example ('column 'n': expected int64, got float64') when an int column had nulls."""
    import pyarrow as pa

    example = pa.table({"n": pa.array([1, None, 3]), "t": pa.array([1, 2, 3], pa.timestamp("ms", tz="UTC"))})
    logged, loaded = _roundtrip(project, log_in_run, lambda table: table.column("n").fill_null(0), example)
    assert str(logged.signature.inputs) == "{n: int64, t: datetime64[ms, UTC]}"
    assert loaded.predict(example).to_pylist() == [1, 0, 3]
