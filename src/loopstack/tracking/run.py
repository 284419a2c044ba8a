"""An active run: the object `start_run` returns and every log call goes through.

Log calls validate their input and append to the writer's buffer; nothing on
this path touches the database, so a training loop does not notice them.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import ConflictError, ValidationError
from loopstack.tracking import capture
from loopstack.tracking.entities import (
    FAILED,
    FINISHED,
    KILLED,
    RunInfo,
    check_storable,
    validate_key,
    validate_status,
)

if TYPE_CHECKING:
    from loopstack.registry.flavors import LoggedModel
    from loopstack.tracking.store import TrackingStore

MAX_PARAM_LENGTH = 6000
MAX_STEP = 2**63 - 1  # the step column is a 64-bit integer on every backend
ENVIRONMENT_FILE = "loopstack/environment.json"
_process_capture: dict[str, Any] = {}
_process_capture_lock = threading.Lock()


class ActiveRun:
    """A run that is being logged to; a context manager that ends it.

    Examples
    --------
    >>> import loopstack as ls, tempfile
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="demo")
    >>> with ls.start_run(project=project, run_name="first") as run:
    ...     run.log_metric("loss", 0.5, step=1)
    >>> ls.Client(project).get_run(run.id).metrics["loss"]
    0.5
    >>> project.close()
    """

    def __init__(self, store: TrackingStore, info: RunInfo, seed: int | None = None) -> None:
        self.store = store
        self.info = info
        self.id = info.id
        self._writer = store.writer
        self._metrics = store.writer.metrics
        self._max_buffered = store.writer.max_buffered // 2
        self._known_keys: set[str] = set()
        self._params: dict[str, str] = {}
        self._step_first_seen: dict[int, float] = {}
        self._started = time.perf_counter()
        self._ended = False
        self._owner_pid = os.getpid()
        settings = store.settings
        self._sampler = capture.ResourceSampler(settings.sample_resources_s)
        self._capture_thread: threading.Thread | None = None
        if "environment" in _process_capture:  # set last, so the capture is complete
            self._record_capture()  # cached: a few appends, no thread to start and join
        else:
            self._capture_thread = threading.Thread(target=self._capture, name="loopstack-capture", daemon=True)
            self._capture_thread.start()
        if seed is not None:
            self.set_tag("loopstack.seed", str(seed))

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"ActiveRun(id={self.id!r}, name={self.name!r})"

    # -- metrics -----------------------------------------------------------------
    def log_metric(self, key: str, value: float, step: int | None = None, timestamp: float | None = None) -> None:
        """Buffer one point; `timestamp` is epoch seconds (now by default), `step` 0 by default."""
        if key not in self._known_keys:
            validate_key(key, "metric key")
            self._known_keys.add(key)
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValidationError(f"metric {key!r} got {value!r}; pass a number") from None
        now = time.time() if timestamp is None else _checked_timestamp(key, timestamp)
        if step is None:
            step = 0
        else:
            if type(step) is not int or not -MAX_STEP <= step <= MAX_STEP:
                step = _checked_step(key, step)
            if step not in self._step_first_seen:
                self._step_first_seen[step] = now
        self._metrics.append((self.id, key, value, step, now))
        if len(self._metrics) > self._max_buffered:
            self._writer.nudge()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, timestamp: float | None = None) -> None:
        """Buffer several metrics at one step and time (log_metric checks `timestamp`, as for one metric)."""
        now = time.time() if timestamp is None else timestamp
        for key, value in metrics.items():
            self.log_metric(key, value, step, now)

    # -- params and tags -------------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        """Record a hyperparameter; a param once logged cannot change within a run."""
        validate_key(key, "param key")
        text = _as_text(value, f"param {key!r}")
        if len(text) > MAX_PARAM_LENGTH:
            raise ValidationError(
                f"param {key!r} is {len(text)} characters; the limit is {MAX_PARAM_LENGTH}; log it as an artifact"
            )
        previous = self._params.get(key)
        if previous is not None and previous != text:
            raise ConflictError(
                f"param {key!r} of run {self.id} is already {previous!r}; params are immutable, "
                f"so {text!r} was refused. Use a tag or a metric for values that change"
            )
        self._params[key] = text
        self._writer.params.append((self.id, key, text))

    def log_params(self, params: dict[str, Any]) -> None:
        for key, value in params.items():
            self.log_param(key, value)

    def set_tag(self, key: str, value: Any) -> None:
        validate_key(key, "tag key")
        self._writer.tags.append((self.id, key, _as_text(value, f"tag {key!r}")))

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.set_tag(key, value)

    # -- artifacts, inputs, models -------------------------------------------------
    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> str:
        """Store a file under the run; returns its sha256 digest."""
        path = Path(local_path)
        if not path.is_file():
            raise ValidationError(f"artifact {path} is not a file; use log_artifacts for a folder")
        logical = _join(artifact_path, path.name)
        digest = self.store.project.artifacts.put_file(path)
        self.store.record_artifact(self.id, logical, digest, path.stat().st_size, "file")
        return digest

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> dict[str, str]:
        """Store every file of a folder, keeping relative paths; returns path -> digest."""
        root = Path(local_dir)
        if not root.is_dir():
            raise ValidationError(f"{root} is not a folder; use log_artifact for a file")
        stored = {}
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = file.relative_to(root).parent.as_posix()
            folder = _join(artifact_path, relative) if relative != "." else artifact_path
            stored[_join(folder, file.name)] = self.log_artifact(file, folder)
        return stored

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> str:
        """Store a dict as a JSON artifact."""
        import json

        payload = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
        digest = self.store.project.artifacts.put_bytes(payload)
        self.store.record_artifact(self.id, artifact_file, digest, len(payload), "file")
        return digest

    def log_input(self, data: Any, name: str | None = None, context: str = "training", targets: Any = None) -> str:
        """Version a data set read by this run: content hash, rows, columns, label balance."""
        from loopstack.tracking.datasets import describe

        record = describe(data, name, source=name or "in-memory", targets=targets)
        self.store.record_input(self.id, record, context)
        return str(record["digest"])

    def log_model(self, model: Any, name: str = "model", example: Any = None, flavor: str | None = None,
                  features: Any = None) -> LoggedModel:
        """Save a model with its signature as an artifact of this run.

        `features` (a feature service name or ``"view:feature"`` references) is what the model
        reads from the feature store; servers then resolve entity-key requests through it.
        """
        from loopstack.registry.flavors import log_model

        return log_model(self, model, name, example=example, flavor=flavor, features=features)

    # -- ending ------------------------------------------------------------------------
    def end(self, status: str = FINISHED) -> None:
        """End the run with `status` (FINISHED, FAILED or KILLED).

        As `end_run` does, this takes the run off the fluent run stack, ending
        the runs nested in it that are still open: a run ended here used to
        stay active there, so the next `start_run` refused to start.
        """
        from loopstack.tracking import fluent

        validate_status(status)  # before anything changes, so that a typo leaves the run open to end properly
        fluent._end(self, status)

    def _finish(self, status: str) -> None:
        """Write what is buffered and mark the run ended, once; the caller has taken it off the fluent stack."""
        if self._ended:
            return
        self._ended = True
        if os.getpid() != self._owner_pid:  # a forked child leaving the block or exiting: the run is its parent's
            self._writer.flush_pending()  # the points the child logged
            return
        if status != KILLED and self._capture_thread is not None:
            self._capture_thread.join(timeout=30)
        summary = self._sampler.stop()
        summary["system.duration_s"] = time.perf_counter() - self._started
        summary.update(capture.step_timing(self._step_first_seen))
        self.log_metrics(summary)
        self.store.end_run(self.id, status)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        from loopstack.tracking import fluent

        status = FINISHED if exc_type is None else (KILLED if exc_type is KeyboardInterrupt else FAILED)
        fluent._end(self, status)

    def _capture(self) -> None:
        """Record code and environment once per process (the code that runs is what was imported)."""
        import hashlib  # on the capture thread, not on start_run's

        settings = self.store.settings
        with _process_capture_lock:
            if "tags" not in _process_capture:
                tags: dict[str, str] = {"loopstack.source": _entry_point(), "loopstack.host": capture.HOSTNAME}
                if settings.capture_git:
                    tags.update(capture.git_state(os.getcwd()))
                env = capture.environment() if settings.capture_environment else None
                payload = digest = None
                if env is not None:
                    tags.update(capture.environment_tags(env))
                    payload = json.dumps(env, indent=2, sort_keys=True, default=str).encode()
                    digest = hashlib.sha256(payload).hexdigest()
                for key in tags:
                    validate_key(key, "tag key")  # once here, not on every run that reuses them
                _process_capture.update(tags=tags, environment_digest=digest, environment=payload)
        self._record_capture()

    def _record_capture(self) -> None:
        """Tag the run and attach the environment; rows go through the writer's next batch."""
        self._writer.tags.extend([(self.id, key, value) for key, value in _process_capture["tags"].items()])
        payload, digest = _process_capture["environment"], _process_capture["environment_digest"]
        if payload is not None:
            artifacts = self.store.project.artifacts
            if not artifacts.exists(digest):  # a stat per run; the hash was taken once
                artifacts.put_bytes(payload)
            self._writer.artifacts.append((self.id, ENVIRONMENT_FILE, digest, len(payload), "file"))


def _checked_step(key: str, step: Any) -> int:
    """An integral step the database can store, or a ValidationError now: a point the writer cannot
    write would fail every later flush of the run, not just its own."""
    try:
        whole = int(step)
        integral = whole == step
    except (TypeError, ValueError, OverflowError):
        integral = False
    if not integral or not -MAX_STEP <= whole <= MAX_STEP:
        raise ValidationError(f"metric {key!r} got step {step!r}; pass a whole number between -2**63 and 2**63 - 1")
    return whole


def _checked_timestamp(key: str, timestamp: Any) -> float:
    """Epoch seconds as a finite float (the column cannot hold NaN, and infinity orders nothing)."""
    try:
        seconds = float(timestamp)
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ValidationError(f"metric {key!r} got timestamp {timestamp!r}; pass epoch seconds as a finite number")
    return seconds


def _as_text(value: Any, what: str) -> str:
    """The value as text every backend stores: refused now, since a row the writer cannot write would fail
    every later flush of the run (PostgreSQL text holds no NUL; no backend encodes a lone surrogate)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return check_storable(value if isinstance(value, str) else str(value), what)


def _join(folder: str | None, name: str) -> str:
    return f"{folder.strip('/')}/{name}" if folder else name


def _entry_point() -> str:
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if path else "<interactive>"
