"""Memory/speed switches: mixed precision and gradient (activation) checkpointing.

* Mixed precision (Micikevicius et al. 2018): the forward and backward run in
  bf16 or fp16 under ``torch.autocast`` while the weights and the optimizer
  stay fp32; fp16 needs loss scaling against gradient underflow, bf16 does not.
* Gradient checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear
  Memory Cost"): each block keeps only its input and recomputes its inside
  during backward, trading about one extra forward for activation memory:
  Korthikanti et al. 2022's "full recomputation".
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from torch.utils.checkpoint import checkpoint

from loopstack.core.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: Precision, device: torch.device | str = "cpu") -> AbstractContextManager[Any]:
    """The autocast context for `precision` on `device` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    if precision not in _DTYPES:
        raise ConfigError(f"precision={precision!r} must be 'fp32', 'bf16' or 'fp16'")
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(precision: Precision, device: torch.device | str = "cpu") -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (None otherwise: bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(torch.device(device).type) if precision == "fp16" else None


_classes: dict[type, type] = {}


def _checkpointed(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """A subclass of `cls` whose forward recomputes itself in backward; cached per class.

    Swapping the class (rather than wrapping the block) keeps the state-dict
    keys unchanged, so checkpoints load with the switch on or off.
    """
    if cls not in _classes:

        def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return cls.forward(self, *args, **kwargs)
            return checkpoint(cls.forward, self, *args, use_reentrant=False, **kwargs)

        _classes[cls] = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": forward, "__module__": cls.__module__})
    return _classes[cls]


def enable_gradient_checkpointing(model: torch.nn.Module) -> int:
    """Checkpoint every block of `model`; returns how many blocks were switched.

    A Hugging Face model's own ``gradient_checkpointing_enable`` is used when
    present; otherwise every entry of each ``nn.ModuleList`` (the usual home
    of transformer blocks) recomputes its forward in backward.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Module()
    >>> net.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
    >>> enable_gradient_checkpointing(net)
    3
    >>> sorted(net.state_dict())[:2]
    ['blocks.0.bias', 'blocks.0.weight']
    """
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        return sum(1 for m in model.modules() if getattr(m, "gradient_checkpointing", False))
    switched = 0
    for module in list(model.modules()):
        if isinstance(module, torch.nn.ModuleList):
            for block in module:
                if type(block) not in _classes.values():
                    block.__class__ = _checkpointed(type(block))
                    switched += 1
    return switched
