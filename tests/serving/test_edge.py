"""ONNX export of scikit-learn, XGBoost and LightGBM models, parity with the original, and serving the graph."""

from __future__ import annotations

import httpx2 as httpx
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from tests.serving.conftest import running

from loopstack.serving import ModelSpec, create_app, export_onnx


def _models():
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor

    yield "hgb", HistGradientBoostingClassifier(max_iter=10, random_state=0), True
    yield "rf-reg", RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0), False
    xgb = pytest.importorskip("xgboost")
    yield "xgb", xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1), True
    yield "xgb-reg", xgb.XGBRegressor(n_estimators=10, max_depth=3, n_jobs=1), False
    lgb = pytest.importorskip("lightgbm")
    yield "lgbm", lgb.LGBMClassifier(n_estimators=10, num_leaves=7, n_jobs=1, verbose=-1), True
    yield "lgbm-reg", lgb.LGBMRegressor(n_estimators=10, num_leaves=7, n_jobs=1, verbose=-1), False


@pytest.mark.parametrize(("name", "model", "classifier"), list(_models()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_export_reproduces_the_model(name: str, model, classifier: bool) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    X[::11, 3] = np.nan  # missing values take the trees' default branches in both runtimes
    y = (np.nan_to_num(X[:, 0]) + X[:, 1] > 0).astype(int) if classifier else X[:, 1] * 2 + np.nan_to_num(X[:, 0])
    model.fit(X, y)
    onnx_model, report = export_onnx(model, X)
    assert report.ok, report
    assert report.rows == 300 and report.max_abs_diff < 1e-4
    if classifier:
        np.testing.assert_array_equal(onnx_model.predict(X), model.predict(X))


def test_an_onnx_model_is_served_and_float64_training_is_reported(clf, data) -> None:
    X, _ = data
    onnx_model, report = export_onnx(clf, X)  # trained on float64: a few rows may sit between thresholds
    assert report.agreement >= 0.99 and report.rows == len(X)
    with running(create_app([ModelSpec(name="edge", model=onnx_model)])) as address:
        body = httpx.post(f"http://{address}/v1/models/edge:predict", json={"instances": X[:4].tolist()}).json()
    np.testing.assert_allclose(body["predictions"], onnx_model.predict_proba(X[:4]))


def test_unsupported_models_are_refused() -> None:
    from sklearn.dummy import DummyRegressor

    from loopstack.core.errors import ValidationError

    with pytest.raises(ValidationError, match="non-empty 2-D"):
        export_onnx(DummyRegressor().fit([[0.0]], [0.0]), np.zeros(3))


def test_a_model_fitted_on_a_frame_is_exported_and_served_by_field_name() -> None:
    """Its feature names were dropped: parity warned (an error here) and the served graph took only x0, x1, ..."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(60, 2)), columns=["amount", "age"])
    model = LogisticRegression().fit(frame, frame.amount > frame.age)
    onnx_model, report = export_onnx(model, frame)
    assert report.ok, report
    row = {"age": 0.5, "amount": -1.0}
    with running(create_app([ModelSpec(name="edge", model=onnx_model)])) as address:
        body = httpx.post(f"http://{address}/v1/models/edge:predict", json={"instances": [row]}).json()
    expected = model.predict_proba(pd.DataFrame([row])[["amount", "age"]])
    np.testing.assert_allclose(body["predictions"], expected, atol=1e-6)


def test_a_multi_output_regressor_is_exported() -> None:
    """predict squeezed its (n, targets) output to one column and failed for two targets."""
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    model = LinearRegression().fit(X, np.column_stack([X[:, 0], X[:, 1] - X[:, 2]]))
    onnx_model, report = export_onnx(model, X)
    assert report.ok, report
    np.testing.assert_allclose(onnx_model.predict(X[:5]), model.predict(X[:5]), atol=1e-5)


def test_text_inputs_are_refused_by_column_name() -> None:
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from loopstack.core.errors import ValidationError

    frame = pd.DataFrame({"city": ["a", "b", "c", "a"] * 5, "x": np.arange(20.0)})
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["city"]), remainder="passthrough"),
                          LogisticRegression()).fit(frame, np.arange(20) % 2)
    with pytest.raises(ValidationError, match=r"non-numeric column\(s\) \['city'\]; ONNX export takes"):
        export_onnx(model, frame)


def test_parity_is_measured_on_the_rows_as_a_client_sends_them() -> None:
    """Rounding the rows to float32 for the original model too reported a 0.11 difference on its own training
    rows, where the exported graph gave the original's answers to within 1e-7 on every one of them."""
    X = np.random.default_rng(0).normal(size=(2_000, 20))
    model = HistGradientBoostingClassifier(random_state=0).fit(X, X[:, 0] + X[:, 1] > 0)
    onnx_model, report = export_onnx(model, X[:1000])
    assert report.ok and report.max_abs_diff < 1e-6
    assert np.abs(onnx_model.predict_proba(X[:1000]) - model.predict_proba(X[:1000])).max() == report.max_abs_diff


def test_a_row_between_a_float64_threshold_and_its_float32_rounding_shows_in_the_report() -> None:
    X = np.random.default_rng(1).normal(size=(500, 3))
    model = HistGradientBoostingClassifier(max_iter=1, max_depth=1, random_state=0).fit(X, X[:, 0] > 0.3)
    (root,) = [node for node in model._predictors[0][0].nodes if not node["is_leaf"]]
    threshold = float(root["num_threshold"])
    above = np.nextafter(threshold, np.inf)  # right of the split in float64; the same float32 as the threshold
    assert np.float32(above) == np.float32(threshold)
    row = np.zeros((1, 3))
    row[0, root["feature_idx"]] = above
    _, report = export_onnx(model, row)
    assert not report.ok and report.max_abs_diff > 0.01  # the graph sent it left, scikit-learn right
