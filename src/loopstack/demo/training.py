"""The training pipeline: load labelled days from the warehouse, join card features, check, train, evaluate.

Each function is a `@step`, so a run is tracked (a child run per step), its
outputs are artifacts with lineage, and a re-run after a crash finds the
finished steps in the cache. The last days of the window are the
evaluation set; the current champion is scored on the same rows, so the
gate compares like with like.
"""

from __future__ import annotations

from typing import Any

from loopstack.demo.config import CARD_FEATURES, FEATURES, MODEL
from loopstack.pipelines import pipeline, step

PARAMS = {"learning_rate": 0.1, "max_depth": 4, "max_iter": 120}


@step
def load_window(root: str, first_day: int, last_day: int) -> object:
    """Labelled transactions of days [first_day, last_day] as the warehouse holds them."""
    from pathlib import Path

    import pandas as pd

    from loopstack.demo.features import TRANSACTIONS

    files = [Path(root) / TRANSACTIONS / f"day={d:03d}.parquet" for d in range(first_day, last_day + 1)]
    found = [f for f in files if f.exists()]
    if not found:
        from loopstack.core.errors import NotFoundError

        raise NotFoundError(f"no labelled transactions for days {first_day}-{last_day} under {TRANSACTIONS}")
    return pd.concat([pd.read_parquet(f) for f in found], ignore_index=True)


@step
def join_features(root: str, rows: object) -> object:
    """Card features as of each transaction's time (point-in-time join in DuckDB)."""
    import loopstack as ls

    store = ls.Project.open(root).feature_store
    entity = rows[["tx_id", "card_id", "event_timestamp", "day", "amount", "hour", "merchant_risk", "distance_km",
                   "is_fraud"]]
    frame = store.get_historical_features(entity, CARD_FEATURES).to_pandas()
    frame["tx_count_7d"] = frame["tx_count_7d"].astype("float64")
    return frame


@step
def validate(frame: object) -> dict:
    """A data-quality suite over the training frame; a failed suite fails the pipeline."""
    from loopstack.core.errors import ValidationError
    from loopstack.quality import Between, InSet, NotNull, RowCount, Suite

    suite = Suite("training-frame", [
        RowCount(min=200),
        NotNull("amount"),
        Between("amount", min=0),
        Between("hour", min=0, max=23),
        Between("merchant_risk", min=0, max=1),
        InSet("is_fraud", [0, 1]),
        NotNull("avg_amount_7d", mostly=0.8),
    ])
    result = suite.run(frame)
    if not result.passed:
        raise ValidationError(f"training frame failed its checks:\n{result.summary()}")
    return {"rows": len(frame), "checks": len(result.to_pandas()), "fraud_rate": float(frame.is_fraud.mean())}


@step
def fit(frame: object, eval_days: int, champion: str) -> dict:
    """Train on all but the last `eval_days` days; score the candidate and the champion on those days."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    import loopstack as ls
    from loopstack.pipelines import current_step

    cut = int(frame.day.max()) - eval_days + 1
    train, test = frame[frame.day < cut], frame[frame.day >= cut]
    ls.log_input(train[[*FEATURES, "is_fraud"]], name="fraud-train", targets="is_fraud")
    ls.log_input(test[[*FEATURES, "is_fraud"]], name="fraud-eval", context="evaluation", targets="is_fraud")
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingClassifier(random_state=7, early_stopping=False, **PARAMS)
    with threadpool_limits(1):  # OpenMP threads spin on a busy machine; one thread is faster and predictable here
        model.fit(train[FEATURES], train.is_fraud.to_numpy())
    metrics = scores(model.predict_proba(test[FEATURES])[:, 1], test.is_fraud.to_numpy())
    ls.log_params({**PARAMS, "train_days": f"{int(train.day.min())}-{cut - 1}", "eval_days": eval_days})
    ls.log_metrics(metrics)
    ls.log_model(model, "model", example=test[FEATURES].head(5))
    baseline = None
    if champion:
        current = ls.load_model(champion)
        baseline = scores(current.predict_proba(test[FEATURES])[:, 1], test.is_fraud.to_numpy())
        ls.log_metrics({f"champion_{k}": v for k, v in baseline.items()})
    return {
        "run_id": current_step().tracking_run_id,
        "metrics": metrics,
        "champion": baseline,
        "champion_ref": champion,
        "train_rows": len(train),
        "eval_rows": len(test),
        "eval_fraud_rate": float(np.mean(test.is_fraud)),
    }


def scores(probability: Any, label: Any) -> dict[str, float]:
    """AUC, average precision and Brier score (lower is better) of fraud probabilities."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    p, y = np.asarray(probability, dtype=float), np.asarray(label)
    one_class = len(np.unique(y)) < 2
    return {
        "auc": float("nan") if one_class else float(roc_auc_score(y, p)),
        "average_precision": float("nan") if one_class else float(average_precision_score(y, p)),
        "brier": float(np.mean((p - y) ** 2)),
    }


@pipeline
def train_fraud(root: str = ".", first_day: int = 0, last_day: int = 0, eval_days: int = 2, champion: str = ""):
    """Load labelled days, join card features, check the frame, train and evaluate a candidate."""
    frame = join_features(root, load_window(root, first_day, last_day))
    checks = validate(frame)
    return {"candidate": fit(frame, eval_days, champion), "checks": checks, "frame": frame}


def register(project: Any, candidate: dict[str, Any], alias: str) -> Any:
    """Register the candidate's logged model under `MODEL` with `alias`."""
    import loopstack as ls

    return ls.register_model(candidate["run_id"], "model", name=MODEL, alias=alias, project=project)


def read_output(project: Any, digest: str) -> Any:
    """A JSON output of a pipeline run, by artifact digest."""
    import json

    return json.loads(project.artifacts.get_bytes(digest))
