"""A small, exact training loop: accumulation, mixed precision, checkpoints, resume, preemption.

`fit` is deliberately plain (no callbacks zoo): per optimizer step it reads
`grad_accumulation` micro-batches, runs forward and backward under autocast,
syncs gradients once per step under DDP, clips, steps the optimizer and the
scheduler, logs the loss, and checkpoints when asked or when SIGTERM came.
Started with a `CheckpointManager` that already holds a checkpoint, it
resumes from it, and because the checkpoint restores RNGs and the loader's
position, the resumed run ends with the same weights as one never stopped.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from loopstack.core.errors import ConfigError
from loopstack.economics import PriceTable
from loopstack.training import distributed
from loopstack.training.checkpoint import CheckpointManager
from loopstack.training.gpu import GpuUsage
from loopstack.training.preemption import Preempted, PreemptionGuard
from loopstack.training.switches import Precision, autocast, enable_gradient_checkpointing, grad_scaler

logger = logging.getLogger("loopstack.training")

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """The switches of `fit`.

    Parameters
    ----------
    steps
        Optimizer steps to reach (a resumed run continues up to the same number).
    grad_accumulation
        Micro-batches per optimizer step; the loss is divided by it, so the
        update equals one on the concatenated batch.
    precision
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (with loss scaling) autocast.
    grad_checkpointing
        Recompute block activations in backward.
    max_grad_norm
        Clip the global gradient norm to this value.
    checkpoint_every
        Save every this many steps (0: only at the end and on SIGTERM).
    prices
        The price table (a YAML path or a `PriceTable`) that prices the run's GPU time
        (``gpu.cost``); default the packaged one.
    """

    steps: int
    grad_accumulation: int = 1
    precision: Precision = "fp32"
    grad_checkpointing: bool = False
    max_grad_norm: float | None = None
    checkpoint_every: int = 0
    log_every: int = 1
    prices: str | os.PathLike[str] | PriceTable | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.grad_accumulation < 1 or self.checkpoint_every < 0 or self.log_every < 1:
            raise ConfigError(
                f"steps={self.steps} and grad_accumulation={self.grad_accumulation} must be positive, "
                f"checkpoint_every={self.checkpoint_every} non-negative"
            )
        if self.max_grad_norm is not None and not 0 < self.max_grad_norm < math.inf:
            # clip_grad_norm_ scales by max_norm / norm: 0 zeroes every update, a negative one reverses it
            raise ConfigError(f"max_grad_norm={self.max_grad_norm} must be a positive number, or None for no clipping")
        if self.prices is not None and not isinstance(self.prices, PriceTable):
            object.__setattr__(self, "prices", PriceTable.load(self.prices))  # a bad file fails now, not after


@dataclass
class TrainResult:
    """What `fit` did: the last step, the loss of each step it ran, where it resumed from."""

    step: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _cycle(loader: Any) -> Callable[[], Any]:
    """``next_batch`` over an iterable: a new pass (epoch) each time one ends, like a DataLoader's epochs.

    A bare StopIteration out of `fit` told the user nothing; an iterable that cannot be read again
    (a generator) or holds no batch is refused by name instead.
    """
    state = {"iterator": iter(loader), "read": 0}

    def next_batch() -> Any:
        try:
            batch = next(state["iterator"])
        except StopIteration:
            state["iterator"] = iter(loader)
            try:
                batch = next(state["iterator"])
            except StopIteration:
                raise ConfigError(
                    f"the loader ran out after {state['read']} batches and gives none on a new pass; pass a "
                    "re-iterable loader (a DataLoader, a list) or a ResumableLoader, or train fewer steps"
                ) from None
        state["read"] += 1
        return batch

    return next_batch


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, next_batch: Callable[[], Any], loss_fn: LossFn,
          config: TrainConfig, device: torch.device, scaler: Any) -> float:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for micro in range(config.grad_accumulation):
        batch = _to(next_batch(), device)
        last = micro == config.grad_accumulation - 1
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(config.precision, device):
                loss = loss_fn(model, batch) / config.grad_accumulation
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += float(loss.detach())
    if config.max_grad_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total


def _agree(loss: float, stop: bool) -> tuple[float, bool]:
    """Mean loss over ranks, and whether any rank was asked to stop (so all stop at the same step)."""
    if distributed.world_size() == 1:
        return loss, stop
    values = torch.tensor([loss, float(stop)], dtype=torch.float64)
    dist.all_reduce(values)
    return float(values[0]) / distributed.world_size(), bool(values[1] > 0)


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    scheduler: Any = None,
    checkpoints: CheckpointManager | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `model` for ``config.steps`` optimizer steps; resume from `checkpoints` if it holds one.

    ``loss_fn(model, batch)`` returns a scalar loss; `loader` has
    ``next_batch()`` (a `ResumableLoader`, whose position is checkpointed) or
    is any iterable. On SIGTERM the loop saves a checkpoint after the current
    step and raises `Preempted` (exit status 143).

    Examples
    --------
    >>> import torch
    >>> from loopstack.training import ResumableLoader, seed_everything
    >>> _ = seed_everything(0)
    >>> x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> mse = lambda m, b: torch.nn.functional.mse_loss(m(b[0]).squeeze(-1), b[1])
    >>> result = fit(model, opt, ResumableLoader((x, y), 16), mse, TrainConfig(steps=50))
    >>> result.losses[-1] < 0.01 * result.losses[0]
    True
    """
    device = next(model.parameters()).device
    if config.grad_checkpointing:
        enable_gradient_checkpointing(getattr(model, "module", model))
    scaler = grad_scaler(config.precision, device)
    result = TrainResult(step=0)
    if checkpoints is not None and checkpoints.latest() is not None:
        state = checkpoints.restore(model, optimizer, scheduler, loader=loader, scaler=scaler)
        result.step = result.resumed_from = int(state["step"])
        if not hasattr(loader, "state_dict"):  # a plain iterable starts over: batches seen before come again
            logger.warning("resuming at step %d with a %s, which keeps no position: its data starts again from "
                           "the first batch; a ResumableLoader goes on where the run stopped",
                           result.step, type(loader).__name__)
    # only after the restore: a DataLoader or StatefulDataLoader fixes its start when iter() is called, so an
    # iterator made before load_state_dict started at the old position and a resumed run read batches again
    next_batch = loader.next_batch if hasattr(loader, "next_batch") else _cycle(loader)
    from loopstack.tracking.fluent import active_run

    run = active_run() if distributed.is_main() else None
    with PreemptionGuard() as guard, GpuUsage(run=run, prices=config.prices) if run is not None else nullcontext():
        for step in range(result.step + 1, config.steps + 1):
            loss = _step(model, optimizer, next_batch, loss_fn, config, device, scaler)
            if scheduler is not None:
                scheduler.step()
            if on_step is not None:
                on_step(step, loss)
            loss, stop = _agree(loss, guard.requested)
            result.step = step
            result.losses.append(loss)
            if run is not None and step % config.log_every == 0:
                run.log_metric("train.loss", loss, step=step)
            due = config.checkpoint_every and step % config.checkpoint_every == 0
            if checkpoints is not None and (stop or due or step == config.steps):
                resumable = loader if hasattr(loader, "state_dict") else None
                checkpoints.save(step, model, optimizer, scheduler, loader=resumable, scaler=scaler, metric=loss)
            if stop:
                raise Preempted(step)
    return result
