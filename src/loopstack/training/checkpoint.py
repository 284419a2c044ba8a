"""Checkpoints that survive a crash mid-write and resume a run exactly.

A checkpoint holds everything the next step depends on: model, optimizer,
scheduler and grad-scaler states, every RNG state, the data loader's position
and the step. It is written to a temporary file in the same folder, flushed to
disk and renamed over its final name (``os.replace`` is atomic on POSIX), so a
reader sees either the old checkpoint or the new one, never half of one. The
index of checkpoints is written the same way. The manager keeps the last
`keep_last` checkpoints plus the `keep_best` best by a metric, and logs each
one as an artifact of the active tracking run.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from loopstack.core.errors import ConfigError, NotFoundError
from loopstack.training import distributed
from loopstack.training.determinism import rng_state, set_rng_state

INDEX = "checkpoints.json"


@dataclass(frozen=True)
class CheckpointInfo:
    """One stored checkpoint: its step, metric value and file name."""

    step: int
    path: str
    metric: float | None = None


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file next to `path`, fsync it, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself reaches the disk
    finally:
        os.close(dir_fd)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


class CheckpointManager:
    """Save and restore training state in a folder, keeping the last k and the best.

    Parameters
    ----------
    directory
        Where checkpoint files and their index live.
    keep_last
        How many most recent checkpoints to keep.
    keep_best, metric_mode
        How many best checkpoints to keep in addition, by the metric passed to
        `save` (``"min"`` for a loss, ``"max"`` for accuracy).
    track
        Log each checkpoint as an artifact of the active tracking run.

    Examples
    --------
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> manager = CheckpointManager(tempfile.mkdtemp(), keep_last=2, track=False)
    >>> for step in (1, 2, 3):
    ...     _ = manager.save(step, model, opt, metric=1.0 / step)
    >>> [c.step for c in manager.checkpoints()]
    [2, 3]
    >>> manager.restore(model, opt)["step"]
    3
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int = 3,
        keep_best: int = 1,
        metric_mode: Literal["min", "max"] = "min",
        track: bool = True,
    ) -> None:
        if keep_last < 1 or keep_best < 0 or metric_mode not in ("min", "max"):
            raise ConfigError(
                f"keep_last={keep_last} must be >= 1, keep_best={keep_best} >= 0, metric_mode={metric_mode!r} min|max"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_last, self.keep_best, self.metric_mode, self.track = keep_last, keep_best, metric_mode, track

    # -- index ----------------------------------------------------------------------
    def checkpoints(self) -> list[CheckpointInfo]:
        """Stored checkpoints, oldest step first."""
        index = self.directory / INDEX
        if not index.exists():
            return []
        return [CheckpointInfo(**row) for row in json.loads(index.read_text())]

    def _write_index(self, rows: list[CheckpointInfo]) -> None:
        payload = json.dumps([asdict(r) for r in sorted(rows, key=lambda r: r.step)], indent=1).encode()
        atomic_write(self.directory / INDEX, lambda f: f.write(payload))

    def latest(self) -> CheckpointInfo | None:
        rows = self.checkpoints()
        return rows[-1] if rows else None

    def best(self) -> CheckpointInfo | None:
        rows = [r for r in self.checkpoints() if r.metric is not None and not math.isnan(r.metric)]
        if not rows:
            return None
        pick = min if self.metric_mode == "min" else max
        return pick(rows, key=lambda r: r.metric)  # type: ignore[arg-type, return-value]

    # -- save -------------------------------------------------------------------------
    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        loader: Any = None,
        scaler: Any = None,
        metric: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> CheckpointInfo | None:
        """Write a checkpoint of `step` (on rank 0; every rank must call it, for the RNG gather)."""
        rng = distributed.gather_object(rng_state())
        if not distributed.is_main():
            return None
        state = {
            "step": step,
            "model": _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "loader": loader.state_dict() if loader is not None else None,
            "rng": rng,
            "metric": metric,
            "extra": extra or {},
        }
        name = f"step-{step:09d}.pt"
        atomic_write(self.directory / name, lambda f: torch.save(state, f))
        info = CheckpointInfo(step, name, None if metric is None else float(metric))
        rows = [r for r in self.checkpoints() if r.step != step] + [info]
        kept = self._retain(rows)
        self._write_index(kept)
        for row in rows:
            if row not in kept:
                (self.directory / row.path).unlink(missing_ok=True)
        if self.track:
            self._log_artifact(info)
        return info

    def _retain(self, rows: list[CheckpointInfo]) -> list[CheckpointInfo]:
        rows = sorted(rows, key=lambda r: r.step)
        keep = set(map(id, rows[-self.keep_last :]))
        scored = [r for r in rows if r.metric is not None and not math.isnan(r.metric)]
        scored.sort(key=lambda r: r.metric, reverse=self.metric_mode == "max")  # type: ignore[arg-type, return-value]
        keep |= set(map(id, scored[: self.keep_best]))
        return [r for r in rows if id(r) in keep]

    def _log_artifact(self, info: CheckpointInfo) -> None:
        from loopstack.tracking.fluent import active_run

        run = active_run()
        if run is not None:
            run.log_artifact(self.directory / info.path, "checkpoints")
            run.log_metric("checkpoint.step", info.step, step=info.step)

    # -- restore ---------------------------------------------------------------------------
    def load(self, which: CheckpointInfo | str | None = None) -> dict[str, Any]:
        """The raw state dict of a checkpoint: the latest by default, ``"best"``, or a given one."""
        info = self.best() if which == "best" else (which if isinstance(which, CheckpointInfo) else self.latest())
        if info is None:
            raise NotFoundError(f"no checkpoint in {self.directory}; train with a CheckpointManager first")
        return torch.load(self.directory / info.path, map_location="cpu", weights_only=False)

    def restore(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        loader: Any = None,
        scaler: Any = None,
        which: CheckpointInfo | str | None = None,
        restore_rng: bool = True,
    ) -> dict[str, Any]:
        """Load a checkpoint into the given objects (and the RNGs); returns the whole state."""
        state = self.load(which)
        _unwrap(model).load_state_dict(state["model"])
        for obj, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (loader, "loader"), (scaler, "scaler")):
            if obj is not None and state.get(key) is not None:
                obj.load_state_dict(state[key])
        if restore_rng:
            rngs = state["rng"]
            set_rng_state(rngs[distributed.rank()] if distributed.rank() < len(rngs) else rngs[0])
        return state
