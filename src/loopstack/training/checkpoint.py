"""Checkpoints that survive a crash mid-write and resume a run exactly.

A checkpoint holds everything the next step depends on: model, optimizer,
scheduler and grad-scaler states, every RNG state, the data loader's position
and the step. It is written to a temporary file in the same folder, flushed to
disk and renamed over its final name (``os.replace`` is atomic on POSIX), so a
reader sees either the old checkpoint or the new one, never half of one. The
index of checkpoints is written the same way. The manager keeps the last
`keep_last` checkpoints plus the `keep_best` best by a metric, and logs each
one as an artifact of the active tracking run. An FSDP model's shards are
gathered into one full checkpoint (torch.distributed.checkpoint) and sharded
again on restore.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from loopstack.core.errors import ConfigError, NotFoundError
from loopstack.core.paths import atomic_write
from loopstack.training import distributed
from loopstack.training.determinism import rng_state, set_rng_state

INDEX = "checkpoints.json"


@dataclass(frozen=True)
class CheckpointInfo:
    """One stored checkpoint: its step, metric value and file name."""

    step: int
    path: str
    metric: float | None = None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def _sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 sharded the model: each rank then holds only its shards of parameters and optimizer state."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a build without FSDP2
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def _full_options(**changes: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **changes)


def _classes(**objects: Any) -> dict[str, str]:
    """The class name of each object given (not None): what a resume must use to read its state."""
    return {key: type(obj).__qualname__ for key, obj in objects.items() if obj is not None}


def _check_classes(state: dict[str, Any], **objects: Any) -> None:
    """Refuse to load an optimizer or scheduler state into an object of another class.

    Was: an AdamW state loaded into SGD failed steps later with KeyError 'momentum', and a StepLR
    state loaded into CosineAnnealingLR was taken silently. A checkpoint written before the classes
    were recorded is not checked.
    """
    saved = state.get("classes") or {}
    for key, obj in objects.items():
        if obj is None or state.get(key) is None or key not in saved:
            continue
        given = type(obj).__qualname__
        if saved[key] != given:
            raise ConfigError(
                f"checkpoint step {state.get('step')} holds the state of a {saved[key]} {key}, but the {key} "
                f"given now is a {given}; resume with a {saved[key]} as the run was started, or start a new run "
                "in another checkpoint folder"
            )


def _gather_states(model: torch.nn.Module, optimizer: Any) -> tuple[dict[str, Any], Any]:
    """Full (unsharded) model and optimizer states on rank 0; a collective every rank must join.

    Under FSDP rank 0's own ``state_dict()`` holds only its shards, so saving
    it would lose the other ranks' halves. torch.distributed.checkpoint
    all-gathers every shard and offloads the result to rank 0's CPU memory;
    the optimizer state comes keyed by parameter name, which is what lets a
    resume on another world size (or on one process) shard it again.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    options = _full_options(cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=options), None
    return get_state_dict(model, optimizer, options=options)


def _load_full_states(model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """Shard a full checkpoint's model and optimizer states back onto this rank (each rank reads the file)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    if optimizer is None or state.get("optimizer") is None:
        set_model_state_dict(model, state["model"], options=_full_options())
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=_full_options())


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
        """Write a checkpoint of `step` (on rank 0; every rank must call it, for the RNG and FSDP gathers).

        Every rank returns only once rank 0 has written it: on SIGTERM the other ranks exit (143) right
        after `save`, and a launcher that saw them gone could stop rank 0 halfway through the file.
        """
        rng = distributed.gather_object(rng_state())
        sharded = _sharded(model)
        if sharded:
            model_state, optimizer_state = _gather_states(model, optimizer)
        try:
            if not distributed.is_main():
                return None
            if not sharded:
                model_state = _unwrap(model).state_dict()
                optimizer_state = optimizer.state_dict() if optimizer is not None else None
            state = {
                "step": step,
                "model": model_state,
                "optimizer": optimizer_state,
                "format": "full-by-name" if sharded else "module",
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "classes": _classes(optimizer=optimizer, scheduler=scheduler),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "loader": loader.state_dict() if loader is not None else None,
                "rng": rng,
                "metric": metric,
                "extra": extra or {},
            }
            return self._write(step, state, metric)
        finally:
            distributed.barrier()  # also when rank 0's write failed, so the others do not wait forever

    def _write(self, step: int, state: dict[str, Any], metric: float | None) -> CheckpointInfo:
        """Rank 0's part of `save`: the file, the index, retention and the run artifact."""
        name = f"step-{step:09d}.pt"
        atomic_write(self.directory / name, lambda f: torch.save(state, f))
        info = CheckpointInfo(step, name, None if metric is None else float(metric))
        rows = [r for r in self.checkpoints() if r.step != step] + [info]
        kept = self._retain(rows)
        self._write_index(kept)
        for row in rows:
            if row not in kept:
                (self.directory / row.path).unlink(missing_ok=True)
        self._remove_stale_temporaries()
        if self.track:
            self._log_artifact(info)
        return info

    def _remove_stale_temporaries(self) -> None:
        """Delete the half-written files of writers killed mid-save (kill -9 skips `atomic_write`'s cleanup).

        Each is as large as a checkpoint, and a spot job killed at every preemption would fill the disk.
        Only this rank writes here and its own temporaries are renamed by now, so any left are dead.
        """
        for pattern in (".step-*.pt.*.tmp", f".{INDEX}.*.tmp"):
            for stale in self.directory.glob(pattern):
                stale.unlink(missing_ok=True)

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
    def _pick(self, which: CheckpointInfo | str | int | None) -> CheckpointInfo | None:
        """``None``/``"latest"``, ``"best"``, a `CheckpointInfo`, a step number or a file name of the index."""
        if isinstance(which, CheckpointInfo):
            return which
        if which is None or which == "latest":
            return self.latest()
        if which == "best":
            return self.best()
        rows = self.checkpoints()
        match = [r for r in rows if r.step == which or r.path == which]
        if not match:  # a typo must not quietly restore the latest checkpoint instead
            kept = ", ".join(f"{r.step} ({r.path})" for r in rows) or "none"
            raise NotFoundError(f"no checkpoint {which!r} in {self.directory}; use 'latest', 'best', or a kept "
                                f"step or file: {kept}")
        return match[0]

    def load(self, which: CheckpointInfo | str | int | None = None) -> dict[str, Any]:
        """The raw state dict of a checkpoint: the latest by default, ``"best"``, a step, a file name or a given one."""
        info = self._pick(which)
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
        which: CheckpointInfo | str | int | None = None,
        restore_rng: bool = True,
    ) -> dict[str, Any]:
        """Load a checkpoint into the given objects (and the RNGs); returns the whole state."""
        state = self.load(which)
        _check_classes(state, optimizer=optimizer, scheduler=scheduler)  # before anything is loaded
        by_name = _sharded(model) or state.get("format") == "full-by-name"
        if by_name:  # an FSDP checkpoint, or a sharded model: torch.distributed.checkpoint shards it again
            _load_full_states(model, optimizer, state)
        else:
            _unwrap(model).load_state_dict(state["model"])
        pairs = [] if by_name else [(optimizer, "optimizer")]
        for obj, key in (*pairs, (scheduler, "scheduler"), (loader, "loader"), (scaler, "scaler")):
            if obj is not None and state.get(key) is not None:
                if key == "loader" and not hasattr(obj, "load_state_dict"):
                    raise ConfigError(
                        f"checkpoint step {state.get('step')} saved the data loader's position, but the loader "
                        f"given now ({type(obj).__name__}) cannot take it; resume with a ResumableLoader, as "
                        "the run was started"
                    )
                obj.load_state_dict(state[key])
        if restore_rng:
            rngs = state["rng"]
            set_rng_state(rngs[distributed.rank()] if distributed.rank() < len(rngs) else rngs[0])
        return state
