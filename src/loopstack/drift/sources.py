"""The serving prediction log (and its feedback) as a monitor's current data.

The server writes every prediction to Parquet (`loopstack.serving`'s
prediction log) and every label posted to ``/v1/feedback`` beside it. A
`PredictionLogSource` reads one time window of that log for one model and
flattens it into plain columns that `compare` and `performance` take:

* one column per model input field (``inputs.*`` in the log),
* ``prediction`` (the output for ``predict``; the index of the largest
  probability for ``predict_proba``), ``score`` (the positive-class
  probability of a binary classifier) or ``score_0 ... score_k`` (multi-class),
* ``label``: the latest feedback for the request, null until it arrives
  (a number when every label is numeric, an integer when all are integral,
  else the label as text). One label labels every row of its request.

Pass the source as ``Monitor(current=...)`` (or to ``Monitor.for_model``):
each run then also checks prediction drift, label drift and performance (see
`loopstack.drift.logcheck`).

Examples
--------
>>> import tempfile
>>> from loopstack import Project
>>> project = Project.init(tempfile.mkdtemp(), name="doc")
>>> source = PredictionLogSource(project, "fraud", window=3600)
>>> source.log_dir.name, source.window
('logs', 3600.0)
>>> project.close()
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loopstack.core.errors import ConfigError, ValidationError

PREDICTION, SCORE, LABEL = "prediction", "score", "label"
LOG_COLUMNS = ("request_id", "row", "time", "version", "variant")


class EmptyWindowError(ValidationError):
    """A window of the prediction log holds no predictions: nothing to monitor yet."""


@dataclass(frozen=True)
class LogWindow:
    """One window of the prediction log, flattened: what a `PredictionLogSource` read.

    `table` holds ``request_id, row, time, version, variant``, the `features`,
    the `outputs` columns and ``label``; `start` and `end` are epoch seconds.
    """

    table: Any
    features: list[str]
    outputs: list[str]
    method: str
    start: float
    end: float

    @property
    def rows(self) -> int:
        """Predictions in the window."""
        return int(self.table.num_rows)

    @property
    def labelled(self) -> int:
        """Predictions whose label has arrived."""
        return self.rows - int(self.table.column(LABEL).null_count)

    @property
    def labelled_share(self) -> float:
        """Share of the window's predictions that have a label so far."""
        return self.labelled / self.rows if self.rows else 0.0

    def describe(self) -> dict[str, Any]:
        """The window as event payload: bounds, rows and label coverage."""
        return {"start": self.start, "end": self.end, "rows": self.rows, "labelled": self.labelled}


class PredictionLogSource:
    """Read a model's logged predictions, joined with their feedback, one window per call.

    Parameters
    ----------
    project : Project
        The project whose server writes the log.
    model : str
        The served model name (the folder under ``predictions/``).
    since : datetime or float, optional
        Only predictions at or after this time (epoch seconds or a datetime).
    window : float or timedelta, optional
        Only the last `window` seconds of predictions, ending `label_delay` ago.
    label_delay : float or timedelta
        How far back the window ends, so that its labels have had time to arrive.
    log_dir : path, optional
        The log folder; default ``<project>/.loopstack/logs`` (``loopstack serve``'s default).
    version : str or int, optional
        Only predictions of this model version.

    Examples
    --------
    >>> source = PredictionLogSource(None, "fraud", window=dt.timedelta(hours=1), log_dir="logs")
    >>> source.bounds(now=7200.0)
    (3600.0, 7200.0)
    """

    def __init__(self, project: Any, model: str, *, since: dt.datetime | float | None = None,
                 window: float | dt.timedelta | None = None, label_delay: float | dt.timedelta = 0.0,
                 log_dir: str | os.PathLike[str] | None = None, version: str | int | None = None) -> None:
        if log_dir is None and project is None:
            raise ConfigError(f"prediction log source for {model!r} needs a project or log_dir=")
        self.project = project
        self.model = model
        self.since = since.timestamp() if isinstance(since, dt.datetime) else since
        self.window = _seconds(window) if window is not None else None
        self.label_delay = _seconds(label_delay)
        self.log_dir = Path(log_dir) if log_dir is not None else Path(project.root) / ".loopstack" / "logs"
        self.version = None if version is None else str(version)
        if self.window is not None and self.window <= 0:
            raise ConfigError(f"window={window!r} must be positive (seconds or a timedelta)")

    def bounds(self, now: float | None = None) -> tuple[float, float]:
        """The window as epoch seconds ``[start, end)``: ends `label_delay` before `now`; start -inf if unbounded."""
        now = time.time() if now is None else now
        end = now - self.label_delay
        start = end - self.window if self.window is not None else float("-inf")
        if self.since is not None:
            start = max(start, float(self.since))
        return start, end

    def read(self, now: float | None = None) -> LogWindow:
        """The window's predictions with their labels so far; raises when it holds none."""
        from loopstack.serving import read_feedback, read_prediction_log

        start, end = self.bounds(now)
        try:
            log = read_prediction_log(self.log_dir, model=self.model)
        except ValidationError as missing:  # no segment written yet: an empty window, not a broken setup
            if not str(missing).startswith("no predictions"):
                raise
            raise EmptyWindowError(str(missing)) from None
        log = _between(log, start, end, self.version)
        if not log.num_rows:
            raise EmptyWindowError(
                f"no predictions of model {self.model!r} between {_iso(start)} and {_iso(end)} under "
                f"{self.log_dir}; serve some traffic or widen the window"
            )
        table, features, outputs, method = flatten(log)
        table = table.append_column(LABEL, join_feedback(table.column("request_id"), read_feedback(self.log_dir)))
        times = _micros(log) / 1e6
        return LogWindow(table, features, outputs, method,
                         float(times.min()) if start == float("-inf") else start,
                         end)

    __call__ = read

    def __repr__(self) -> str:
        return f"PredictionLogSource(model={self.model!r}, window={self.window}, log_dir={str(self.log_dir)!r})"


def flatten(log: Any) -> tuple[Any, list[str], list[str], str]:
    """The log's ``inputs`` and ``outputs`` structs as plain columns: (table, features, outputs, method)."""
    import pyarrow as pa

    inputs, outputs = log.column("inputs").combine_chunks(), log.column("outputs").combine_chunks()
    features = [field.name for field in inputs.type]
    method = outputs.type.field(0).name
    columns = {name: log.column(name) for name in LOG_COLUMNS}
    columns.update({name: inputs.field(name) for name in features})
    produced = output_columns(outputs.field(0))
    columns.update(produced)
    return pa.table(columns), features, list(produced), method


def output_columns(values: Any) -> dict[str, Any]:
    """Model outputs (an Arrow list/scalar array or a NumPy array) as ``prediction`` and ``score`` columns.

    Examples
    --------
    >>> sorted(output_columns(np.array([[0.2, 0.8], [0.9, 0.1]])).items())
    [('prediction', [1, 0]), ('score', [0.8, 0.1])]
    """
    matrix = _as_matrix(values)
    if matrix.ndim == 1:
        return {PREDICTION: matrix.tolist() if matrix.dtype == object else matrix}
    columns: dict[str, Any] = {PREDICTION: np.argmax(matrix, axis=1).tolist()}
    if matrix.shape[1] <= 2:
        columns[SCORE] = matrix[:, -1].tolist()
    else:
        columns.update({f"{SCORE}_{j}": matrix[:, j].tolist() for j in range(matrix.shape[1])})
    return columns


def join_feedback(request_ids: Any, feedback: Any) -> Any:
    """Each request's latest label (null where none yet), aligned with `request_ids`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not feedback.num_rows:
        return pa.nulls(len(request_ids), pa.int64())
    feedback = feedback.sort_by([("time", "descending")])  # index_in finds the first match: the latest
    where = pc.index_in(request_ids, value_set=feedback.column("request_id").combine_chunks())
    values = feedback.column("label_value").combine_chunks()
    if values.null_count > feedback.column("label").null_count:  # some labels are not numbers
        texts = feedback.column("label").to_pylist()
        values = pa.array([None if t is None else str(json.loads(t)) for t in texts], pa.string())
    elif _integral(values):
        values = values.cast(pa.int64())
    return values.take(where)


def _integral(values: Any) -> bool:
    numbers = values.drop_null().to_numpy()
    return bool(numbers.size) and bool(np.all(numbers == np.round(numbers)))


def _as_matrix(values: Any) -> np.ndarray:
    import pyarrow as pa

    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        flat = values.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(values), -1) if len(values) else flat.reshape(0, 1)
    return values.to_numpy(zero_copy_only=False)


def _between(log: Any, start: float, end: float, version: str | None) -> Any:
    micros = _micros(log)
    keep = (micros >= start * 1e6) & (micros < end * 1e6)
    if version is not None:
        keep &= log.column("version").to_numpy(zero_copy_only=False) == version
    return log if keep.all() else log.filter(keep)


def _micros(log: Any) -> np.ndarray:
    import pyarrow as pa

    return log.column("time").cast(pa.int64()).to_numpy().astype(np.float64)


def _seconds(value: float | dt.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def _iso(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "the start" if seconds < 0 else "now"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")
