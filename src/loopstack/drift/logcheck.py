"""What a `Monitor` checks on a window of the prediction log, and the events it emits.

A window read by `PredictionLogSource` holds inputs, outputs and the labels
that have arrived. Each monitor run over it emits:

* ``drift.checked`` (+ ``drift.detected``): input drift against the reference
  data, as for any table, with the window's bounds added;
* ``drift.predictions``: drift of the outputs (``prediction``, ``score``)
  against the reference model's outputs on the reference data, or against the
  previous window's outputs (``reference_outputs="previous"``); skipped when
  neither exists yet;
* ``drift.labels``: drift of the labels that arrived against the reference
  data's `target` column, when the monitor knows it;

(the output and label tests take the monitor's options, so ``threshold=`` or
``thresholds={"score": ...}`` apply to them too);
* ``performance.checked``: ``{"metrics", "basis", "labelled_share", "window",
  "estimated"}``. `metrics` are realized over the labelled rows (accuracy, F1,
  AUC for classifiers; RMSE, MAE for regression) and, before any label has
  arrived, the confidence-based estimate of a binary classifier's metrics
  (``basis: "estimate"``, NannyML's CBPE: right only for calibrated scores).
  The loop engine's ``performance_below`` trigger reads ``metrics``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from loopstack.drift.compare import EmptySampleError, compare
from loopstack.drift.monitor import CHECKED, DETECTED
from loopstack.drift.sources import LABEL, PREDICTION, SCORE, LogWindow, output_columns

PREDICTIONS, LABELS, PERFORMANCE = "drift.predictions", "drift.labels", "performance.checked"


def check_window(monitor: Any, window: LogWindow) -> Any:
    """Run every check of a log window and emit its events; returns the input drift result."""
    events = monitor.project.events
    where = window.describe()
    features = [name for name in window.features if name in set(monitor.reference.column_names)]
    # the reference's other columns (the target, fields the model is not served) are not missing from the log
    options = monitor.options if monitor.options.columns is not None or not features else \
        replace(monitor.options, columns=features)
    result = compare(monitor.reference, window.table.select(features), options)
    checked = events.emit(CHECKED, monitor.name, {**result.to_dict(), "window": where})
    if result.dataset_drift:
        summary = {"share": result.share, "drifted_columns": result.drifted_columns, "window": where}
        events.emit(DETECTED, monitor.name, summary, cause=checked)
    _prediction_drift(monitor, window, where, checked)
    _label_drift(monitor, window, where, checked)
    events.emit(PERFORMANCE, monitor.name, performance_payload(window), cause=checked)
    return result


def _prediction_drift(monitor: Any, window: LogWindow, where: dict[str, Any], cause: int) -> None:
    current = window.table.select(window.outputs)
    against, reference = monitor.reference_outputs_for(window)
    if reference is None:
        return
    shared = [name for name in window.outputs if name in set(reference.column_names)]
    if shared:
        try:
            drift = compare(reference, current, replace(monitor.options, columns=shared, histograms=False))
        except EmptySampleError:  # no output values on one side: nothing to say about output drift
            return
        payload = {**drift.to_dict(), "against": against, "window": where}
        monitor.project.events.emit(PREDICTIONS, monitor.name, payload, cause=cause)


def _label_drift(monitor: Any, window: LogWindow, where: dict[str, Any], cause: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    target = monitor.target
    if target is None or not window.labelled or target not in monitor.reference.column_names:
        return
    labels = window.table.column(LABEL)
    current = pa.table({LABEL: labels.filter(pc.is_valid(labels))})
    reference = pa.table({LABEL: monitor.reference.column(target)})
    try:
        drift = compare(reference, current, replace(monitor.options, columns=None, histograms=False))
    except EmptySampleError:  # a reference target with no values: no label drift to measure
        return
    payload = {**drift.to_dict(), "target": target, "window": where}
    monitor.project.events.emit(LABELS, monitor.name, payload, cause=cause)


def performance_payload(window: LogWindow) -> dict[str, Any]:
    """Realized metrics over the labelled rows, and the CBPE estimate over all rows of a binary classifier."""
    from loopstack.drift.cbpe import expected_metrics
    from loopstack.drift.performance import performance

    table = window.table
    has_score = SCORE in window.outputs
    classifier = window.method == "predict_proba" or not _is_float(table.column(PREDICTION))
    names = (["accuracy", "f1", "auc"] if has_score else ["accuracy", "f1"]) if classifier else ["rmse", "mae"]
    realized: dict[str, float] = {}
    if window.labelled:
        [row] = performance(table, prediction=PREDICTION, label=LABEL, score=SCORE if has_score else None,
                            metrics=names)
        realized = _finite({name: row[name] for name in names})
    estimated = {}
    if has_score:
        scores = table.column(SCORE).to_numpy(zero_copy_only=False).astype(np.float64)
        scores = scores[~np.isnan(scores)]  # a null score estimates nothing (expected_metrics refuses NaN)
        if scores.size:
            estimated = _finite({k: v for k, v in expected_metrics(scores).items() if k in ("accuracy", "f1", "auc")})
    basis = "labels" if realized else ("estimate" if estimated else None)
    return {"metrics": realized or estimated, "basis": basis, "labelled_share": window.labelled_share,
            "window": window.describe(), "estimated": estimated}


def model_outputs(project: Any, model: str, version: int | str | None) -> Any:
    """A function ``(reference, window) -> outputs table``: the registered model's outputs on the reference.

    The model is called the way the server called it (the log's method), on
    the reference columns named like the served model's input fields.
    """

    def outputs(reference: Any, window: LogWindow) -> Any:
        import pyarrow as pa

        from loopstack.drift.reference import resolve_version
        from loopstack.registry.api import load_model

        loaded = load_model(f"{model}/{resolve_version(project, model, version)}", project=project)
        frame = reference.select(window.features).to_pandas()
        method = loaded.predict_proba if window.method == "predict_proba" else loaded.predict
        return pa.table(output_columns(method(frame)))

    return outputs


def _is_float(column: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_floating(column.type))


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
