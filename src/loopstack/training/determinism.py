"""Seeds, the determinism switch, and RNG state capture for exact resume.

On CPU, the same seed with ``deterministic=True`` reproduces the same weights
bit for bit on the same machine and thread count. On CUDA the switch also
selects deterministic kernels (``torch.use_deterministic_algorithms``, cuDNN
without autotuning, ``CUBLAS_WORKSPACE_CONFIG``); ops without a deterministic
implementation then raise instead of silently drifting.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import numpy as np
import torch

from loopstack.tracking import fluent


def seed_everything(seed: int, deterministic: bool = True) -> int:
    """Seed Python, NumPy and torch (all devices), record the seed on the run, and set determinism.

    Examples
    --------
    >>> import torch
    >>> _ = seed_everything(7)
    >>> a = torch.nn.Linear(3, 2).weight.clone()
    >>> _ = seed_everything(7)
    >>> torch.equal(a, torch.nn.Linear(3, 2).weight)
    True
    """
    fluent.seed_everything(seed, deterministic=False)
    set_deterministic(deterministic)
    return seed


def set_deterministic(enabled: bool = True) -> None:
    """Switch deterministic algorithms on or off for torch on every device."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    eager_only = "torch._inductor" not in sys.modules and not torch.cuda.is_available()
    if not eager_only or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(enabled)
    else:
        # The public call also imports torch._inductor to set its flag, which takes seconds; without
        # torch.compile in use, setting the eager flag is the whole effect.
        torch._C._set_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step can consume: Python, NumPy, torch CPU and CUDA."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured, so the next random draw is the one that would have come."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
