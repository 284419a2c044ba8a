"""Training infrastructure: reproducible, preemption-safe, data-parallel training on torch.

Needs the ``torch`` extra (``pip install loopstack[torch]``). The pieces:
`seed_everything` and the determinism switch; `CheckpointManager` (atomic,
keep last k and best, exact resume, logged as run artifacts); `fit` with
gradient accumulation, mixed precision, gradient checkpointing and SIGTERM
handling; `launch` and `loopstack train --nproc N` over torch.distributed;
`GpuUsage` to record GPU type, peak memory, GPU-seconds and cost; LoRA
through PEFT (`apply_lora`, ``lora`` extra).
"""

from loopstack.training.checkpoint import CheckpointInfo, CheckpointManager, atomic_write
from loopstack.training.data import ResumableLoader
from loopstack.training.determinism import rng_state, seed_everything, set_deterministic, set_rng_state
from loopstack.training.distributed import gather_object, init_distributed, is_main, launch, rank, world_size, wrap
from loopstack.training.gpu import CudaProbe, GpuProbe, GpuUsage
from loopstack.training.loop import TrainConfig, TrainResult, fit
from loopstack.training.lora import (
    CausalLMPredictor,
    TrainableShare,
    apply_lora,
    load_adapter,
    merge_adapter,
    register_merged,
    save_adapter,
    trainable_share,
)
from loopstack.training.preemption import Preempted, PreemptionGuard
from loopstack.training.switches import autocast, enable_gradient_checkpointing, grad_scaler
from loopstack.training.tiny import TinyTransformer, lm_loss

__all__ = [
    # reproducibility
    "seed_everything",
    "set_deterministic",
    "rng_state",
    "set_rng_state",
    # data
    "ResumableLoader",
    # checkpoints and preemption
    "CheckpointManager",
    "CheckpointInfo",
    "atomic_write",
    "PreemptionGuard",
    "Preempted",
    # the loop and its switches
    "fit",
    "TrainConfig",
    "TrainResult",
    "autocast",
    "grad_scaler",
    "enable_gradient_checkpointing",
    # distributed
    "launch",
    "init_distributed",
    "wrap",
    "rank",
    "world_size",
    "is_main",
    "gather_object",
    # LoRA through PEFT (the lora extra)
    "apply_lora",
    "trainable_share",
    "TrainableShare",
    "save_adapter",
    "load_adapter",
    "merge_adapter",
    "register_merged",
    "CausalLMPredictor",
    # GPU accounting
    "GpuUsage",
    "GpuProbe",
    "CudaProbe",
    # a model for tests and examples
    "TinyTransformer",
    "lm_loss",
]
