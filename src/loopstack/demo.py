"""`loopstack demo`: generate card transactions, train, track, register and load a model.

This is the first slice of the closed loop; the pipelines work grows it into
drift detection, retraining, shadow, canary and promotion.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import click

DEMO_MARKER = ".loopstack-demo"
FEATURES = ["amount", "hour", "merchant_risk", "distance_km", "card_age_days", "tx_last_24h"]


def generate_transactions(rows: int, seed: int = 7) -> Any:
    """Synthetic card transactions with a daily cycle and a fraud label driven by the features."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-01T00:00:00")
    seconds = np.sort(rng.integers(0, 60 * 86_400, rows))
    timestamps = start + seconds.astype("timedelta64[s]")
    hour = (seconds // 3600) % 24
    frame = pd.DataFrame(
        {
            "card_id": rng.integers(1, 2_000, rows),
            "event_timestamp": timestamps,
            "amount": np.round(rng.lognormal(3.5, 1.0, rows), 2),
            "hour": hour.astype("int64"),
            "merchant_risk": rng.beta(2, 8, rows),
            "distance_km": rng.exponential(15, rows),
            "card_age_days": rng.integers(1, 3_000, rows).astype("int64"),
            "tx_last_24h": rng.poisson(3, rows).astype("int64"),
        }
    )
    night = ((frame.hour < 6) | (frame.hour > 22)).astype(float)
    logit = (
        -5.0
        + 0.6 * np.log1p(frame.amount) / 2
        + 4.0 * frame.merchant_risk
        + 0.02 * frame.distance_km
        + 1.2 * night
        - 0.0005 * frame.card_age_days
        + 0.15 * frame.tx_last_24h
    )
    frame["is_fraud"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def train_and_register(project: Any, frame: Any, say: Any) -> dict[str, Any]:
    """Train a few candidates as tracked runs, register the best as champion."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score, roc_auc_score

    import loopstack as ls

    split = int(len(frame) * 0.8)
    train, test = frame.iloc[:split], frame.iloc[split:]
    X_train, y_train = train[FEATURES], train["is_fraud"].to_numpy()
    X_test, y_test = test[FEATURES], test["is_fraud"].to_numpy()
    ls.set_experiment("fraud-demo")
    ls.seed_everything(7)
    candidates = [
        {"learning_rate": 0.05, "max_depth": 3},
        {"learning_rate": 0.1, "max_depth": 6},
        {"learning_rate": 0.2, "max_depth": None},
    ]
    results = []
    with ls.start_run(run_name="sweep") as sweep:
        for params in candidates:
            with ls.start_run(nested=True, params={**params, "max_iter": 150}) as run:
                ls.log_input(train, name="transactions-train", targets="is_fraud")
                ls.log_input(test, name="transactions-test", context="evaluation", targets="is_fraud")
                model = HistGradientBoostingClassifier(max_iter=150, random_state=7, early_stopping=False, **params)
                model.fit(X_train, y_train)
                for step, proba in enumerate(model.staged_predict_proba(X_test)):
                    if step % 10 == 9:
                        run.log_metric("test_auc", roc_auc_score(y_test, proba[:, 1]), step=step + 1)
                scores = model.predict_proba(X_test)[:, 1]
                auc, ap = roc_auc_score(y_test, scores), average_precision_score(y_test, scores)
                run.log_metrics({"auc": auc, "average_precision": ap, "fraud_rate": float(np.mean(y_test))})
                run.log_model(model, "model", example=X_test.head(5))
                results.append((auc, run.id, params))
                say(f"  run [bold]{run.name}[/] {params}: AUC {auc:.4f}, AP {ap:.4f}")
        best_auc, best_run, best_params = max(results, key=lambda item: item[0])
        sweep.log_metric("best_auc", best_auc)
    version = ls.register_model(best_run, "model", name="fraud", alias="champion")
    return {
        "version": version,
        "best_run": best_run,
        "best_auc": best_auc,
        "sweep": sweep.id,
        "params": best_params,
        "X_test": X_test,
    }


def run_demo(path: Path, fresh: bool, backend: str, rows: int, say: Any) -> dict[str, Any]:
    """The whole demo; returns what it did (for tests)."""
    import loopstack as ls

    path = path.resolve()
    if path.exists() and fresh:
        if not (path / DEMO_MARKER).exists():
            raise click.ClickException(f"{path} exists and was not made by `loopstack demo`; choose another --path")
        shutil.rmtree(path)
    settings = {}
    if backend == "services":
        schema = f"demo_{uuid.uuid4().hex[:8]}"
        _create_postgres_schema(schema)
        settings["metadata"] = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    started = time.perf_counter()
    project = (
        ls.Project.open(path)
        if (path / "loopstack.yaml").exists()
        else ls.Project.init(path, name="fraud-demo", **settings)
    )
    (path / DEMO_MARKER).touch()
    ls.set_project(project)
    say(f"[bold]Project[/] {project.root} (metadata: {project.config.metadata})")
    frame = generate_transactions(rows)
    say(f"[bold]Data[/] {len(frame):,} card transactions, fraud rate {frame.is_fraud.mean():.2%}")
    say("[bold]Training[/] three candidates, each a tracked run:")
    outcome = train_and_register(project, frame, say)
    version = outcome["version"]
    say(f"[bold]Registered[/] fraud/{version.version} as [green]fraud@champion[/] (AUC {outcome['best_auc']:.4f})")
    model = ls.load_model("fraud@champion")
    scores = [round(float(p), 4) for p in model.predict_proba(outcome["X_test"].head(3))[:, 1]]
    say(f"[bold]Loaded[/] fraud@champion (sha256 verified) and scored 3 transactions: {scores}")
    say(f"Done in {time.perf_counter() - started:.1f} s. Explore what it left behind:")
    for command in ("runs", "runs compare <id> <id>", "models", "models show fraud", "events"):
        say(f"  loopstack -p {path} {command}")
    outcome["project"] = project
    return outcome


def _create_postgres_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    engine.dispose()


@click.command()
@click.option(
    "--path", type=click.Path(file_okay=False, path_type=Path), default=Path("loopstack-demo"), show_default=True
)
@click.option("--fresh", is_flag=True, help="Start from an empty demo folder.")
@click.option(
    "--backend",
    type=click.Choice(["embedded", "services"]),
    default="embedded",
    show_default=True,
    help="embedded: SQLite and local files; services: the local PostgreSQL.",
)
@click.option("--rows", default=60_000, show_default=True, help="Transactions to generate.")
def demo(path: Path, fresh: bool, backend: str, rows: int) -> None:
    """Run the loop on generated card transactions: train, track, register, load."""
    from rich.console import Console

    console = Console()
    run_demo(path, fresh, backend, rows, console.print)
