"""A drift monitor: compare fresh data with a reference on demand or on a schedule, and emit events.

Each run compares `current` with `reference` and records one ``drift.checked``
event whose payload holds every column's test, score, threshold and verdict,
plus ``drift.detected`` (caused by it) when the data set drifted. The loop
engine and the UI read these events.

`reference` and `current` are tables or zero-argument callables returning
tables, so a monitor can pull the newest window of a log each run. With
``current=PredictionLogSource(...)`` a run reads the serving prediction log
and its feedback, and also checks prediction drift, label drift and
performance per window (events ``drift.predictions``, ``drift.labels``,
``performance.checked``; see `loopstack.drift.logcheck`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from loopstack.core.errors import ConfigError, ConflictError
from loopstack.drift.compare import DriftOptions, EmptySampleError, compare
from loopstack.drift.data import as_table
from loopstack.drift.reference import Loader, load_reference
from loopstack.drift.result import DriftResult
from loopstack.drift.sources import EmptyWindowError, LogWindow

CHECKED = "drift.checked"
DETECTED = "drift.detected"
FAILED = "drift.failed"
logger = logging.getLogger("loopstack.drift")


class Monitor:
    """Compare current data with a reference and emit ``drift.*`` events.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from loopstack import Project
    >>> project = Project.init(tempfile.mkdtemp(), name="demo")
    >>> rng = np.random.default_rng(0)
    >>> monitor = Monitor(project, "fraud", reference={"x": rng.normal(size=2000)})
    >>> monitor.run({"x": rng.normal(2, 1, size=2000)}).dataset_drift
    True
    >>> [e.kind for e in project.events.list(kind="drift.")]
    ['drift.detected', 'drift.checked']
    >>> project.close()
    """

    def __init__(
        self,
        project: Any,
        name: str,
        reference: Any,
        current: Any = None,
        options: DriftOptions | None = None,
        *,
        reference_outputs: Any = None,
        target: str | None = None,
        **settings: Any,
    ) -> None:
        self.project = project
        self.name = name
        self._reference_source = reference
        self._reference: Any = None
        self.current = current
        self.options = options or DriftOptions(**settings)
        # For prediction-log windows: outputs to compare the window's outputs with (a table, a
        # function (reference, window) -> table, or "previous"), and the reference's label column.
        self.reference_outputs = reference_outputs
        self.target = target
        self._outputs: Any = None
        self._previous: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_model(
        cls,
        project: Any,
        model: str,
        version: int | str | None = None,
        current: Any = None,
        loader: Loader | None = None,
        *,
        target: str | None = None,
        reference_outputs: Any = "model",
        **settings: Any,
    ) -> Monitor:
        """A monitor whose reference is the training data recorded for `model` at `version`.

        On prediction-log windows the outputs are compared with the model's own
        outputs on that data (``reference_outputs="model"``), and the labels that
        arrived with its `target` column.
        """
        from loopstack.drift.logcheck import model_outputs

        subject = f"{model}@{version}" if version is not None else model
        if isinstance(reference_outputs, str) and reference_outputs == "model":
            reference_outputs = model_outputs(project, model, version)
        return cls(project, subject, lambda: load_reference(project, model, version, loader), current,
                   reference_outputs=reference_outputs, target=target, **settings)

    @property
    def reference(self) -> Any:
        """The reference table, loaded once on first use."""
        if self._reference is None:
            source = self._reference_source
            self._reference = as_table(source() if callable(source) else source)
        return self._reference

    def reference_outputs_for(self, window: LogWindow) -> tuple[str, Any]:
        """What a log window's outputs are compared with: ("reference" or "previous", table or None)."""
        source = self.reference_outputs
        if isinstance(source, str) and source == "previous":
            return "previous", self._previous  # replaced once this window's check has finished (`run`)
        if source is not None and self._outputs is None:
            self._outputs = as_table(source(self.reference, window) if callable(source) else source)
        return "reference", self._outputs

    def run(self, current: Any = None) -> DriftResult:
        """Compare `current` (or the monitor's own source) with the reference and emit the events."""
        data = current if current is not None else self.current
        if data is None:
            raise ConfigError(f"monitor {self.name!r} has no current data; pass run(current) or Monitor(current=...)")
        if callable(data):
            data = data()
        if isinstance(data, LogWindow):
            from loopstack.drift.logcheck import check_window

            checked_window = check_window(self, data)
            # the next window's "previous" is this one only now: a check that raised compared nothing
            self._previous = data.table.select(data.outputs)
            return checked_window
        result = compare(self.reference, data, self.options)
        payload = result.to_dict()
        checked = self.project.events.emit(CHECKED, self.name, payload)
        if result.dataset_drift:
            summary = {"share": result.share, "drifted_columns": result.drifted_columns}
            self.project.events.emit(DETECTED, self.name, summary, cause=checked)
        return result

    def run_every(self, seconds: float, max_runs: int | None = None,
                  on_result: Callable[[DriftResult], None] | None = None) -> int:
        """Run every `seconds` until `stop()` or `max_runs`; returns the number of runs.

        A run that fails (the database or the log briefly unreachable, a bad window) is logged and
        recorded as a ``drift.failed`` event, and the schedule goes on: a monitor thread that died
        of one error would stop watching without a word. A `ConfigError` (the monitor itself is
        set up wrong, and every later run would fail the same way) is raised.
        """
        if seconds <= 0:
            raise ConfigError(f"interval {seconds} must be positive")
        runs = 0
        while not self._stop.is_set() and (max_runs is None or runs < max_runs):
            started = time.monotonic()
            try:
                result: DriftResult | None = self.run()
            except EmptyWindowError as quiet:  # an hour without traffic must not stop the schedule
                self.project.events.emit("drift.skipped", self.name, {"reason": str(quiet)})
                result = None
            except EmptySampleError as empty:
                if empty.side != "current":  # an empty reference is a monitor set up wrong: recorded as failed
                    self._record_failure(empty)
                else:  # an empty batch, like an empty window, is skipped
                    self.project.events.emit("drift.skipped", self.name, {"reason": str(empty)})
                result = None
            except ConfigError:
                raise
            except Exception as error:
                self._record_failure(error)
                result = None
            runs += 1
            if on_result is not None and result is not None:
                on_result(result)
            if max_runs is not None and runs >= max_runs:
                break
            self._stop.wait(max(0.0, seconds - (time.monotonic() - started)))
        return runs

    def _record_failure(self, error: Exception) -> None:
        logger.exception("monitor %r: a scheduled run failed; the next runs as planned", self.name)
        try:
            self.project.events.emit(FAILED, self.name, {"error": f"{type(error).__name__}: {error}"})
        except Exception:  # the event store may be what failed: the log above has it
            logger.exception("monitor %r: recording the failure failed too", self.name)

    def start(self, seconds: float) -> threading.Thread:
        """Run every `seconds` on a daemon thread until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            # clearing the stop flag would revive the old thread next to the new one
            raise ConflictError(f"monitor {self.name!r} is running (or still finishing a run after stop()); "
                                "call stop() and let it finish before starting it again")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_every, args=(seconds,), name=f"monitor-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Stop a scheduled monitor and wait for its current run to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():  # kept while it finishes, so start() can tell
                self._thread = None
