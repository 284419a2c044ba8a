"""Training memory: model states under ZeRO/FSDP sharding, activations, LoRA and QLoRA.

Every number is per GPU, in bytes. The formulas and their sources:

* Model states, Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
  Training Trillion Parameter Models", section 3.1 and Figure 1. Mixed-precision
  Adam keeps 16-bit weights (2 bytes/param), 16-bit gradients (2) and K = 12
  bytes of fp32 master weights, momentum and variance: 16 bytes per parameter.
  Over N data-parallel GPUs, stage 1 shards the optimizer states
  (2 + 2 + K/N), stage 2 also the gradients (2 + (2 + K)/N), stage 3 also the
  weights ((2 + 2 + K)/N). PyTorch FSDP's SHARD_GRAD_OP is stage 2 and
  FULL_SHARD is stage 3 (Zhao et al. 2023, "PyTorch FSDP", section 3).
* Activations, Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models", section 4 and Table 2: one layer stores
  ``s*b*h*(34 + 5*a*s/h)`` bytes at 16 bit; selective recomputation drops the
  ``5*a*s/h`` attention term, full recomputation keeps only the layer input
  ``2*s*b*h``; tensor parallelism over t divides the parts inside the parallel
  region, sequence parallelism the rest.
* LoRA, Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
  section 4: an adapted ``d_in x d_out`` matrix trains ``r*(d_in + d_out)``
  parameters; the base is frozen, so it needs weights only.
* QLoRA, Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs",
  section 3: NF4 weights take 4 bits plus one fp32 absmax per block of 64
  (0.5 bits/param); double quantization stores those constants in 8 bit with
  one fp32 constant per 256 of them: ``8/64 + 32/(64*256) = 0.127`` bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from loopstack.core.errors import ConfigError
from loopstack.economics.models import ModelConfig, get_model

GB = 1e9
GiB = 2**30

Recompute = Literal["none", "selective", "full"]
Method = Literal["full", "lora", "qlora"]

#: (weight bytes, gradient bytes, optimizer-state bytes K) per trained parameter.
OPTIMIZERS: dict[str, tuple[float, float, float]] = {
    # ZeRO paper section 3.1: fp16 weights and grads, fp32 master + momentum + variance.
    "adam-mixed": (2, 2, 12),
    # Everything in fp32: weights, grads, momentum, variance.
    "adam-fp32": (4, 4, 8),
    # 16-bit weights and grads with fp32 Adam states, no master copy (QLoRA's ">780 GB" baseline).
    "adam-16bit": (2, 2, 8),
    # 8-bit Adam states (Dettmers et al. 2022) over an fp32 master copy.
    "adam-8bit": (2, 2, 6),
    # SGD with momentum, mixed precision: fp32 master + momentum.
    "sgd-mixed": (2, 2, 8),
}

FSDP_STRATEGIES = {"NO_SHARD": 0, "SHARD_GRAD_OP": 2, "FULL_SHARD": 3, "HYBRID_SHARD": 3}

NF4_BITS = 4.0
NF4_CONSTANT_BITS = 32 / 64  # one fp32 absmax per 64 weights
NF4_DOUBLE_QUANT_CONSTANT_BITS = 8 / 64 + 32 / (64 * 256)  # 0.127 bits


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU by category; `total` adds them up.

    Examples
    --------
    >>> from loopstack.economics import training_memory
    >>> est = training_memory("llama-2-7b", seq=2048, batch=1, recompute="full")
    >>> round(est.weights / 1e9, 1), round(est.optimizer / 1e9, 1)
    (13.5, 80.9)
    """

    weights: float
    gradients: float = 0.0
    optimizer: float = 0.0
    activations: float = 0.0
    kv_cache: float = 0.0
    trainable_parameters: int = 0
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.kv_cache

    def as_dict(self, unit: float = GiB) -> dict[str, float]:
        """Each category and the total in `unit` (GiB by default)."""
        parts = ("weights", "gradients", "optimizer", "activations", "kv_cache")
        out = {k: getattr(self, k) / unit for k in parts}
        out["total"] = self.total / unit
        return out


def fsdp_stage(strategy: str) -> int:
    """The ZeRO stage a PyTorch FSDP sharding strategy corresponds to.

    Examples
    --------
    >>> fsdp_stage("FULL_SHARD")
    3
    """
    try:
        return FSDP_STRATEGIES[strategy.upper()]
    except KeyError:
        raise ConfigError(f"FSDP strategy {strategy!r} is unknown; use one of {', '.join(FSDP_STRATEGIES)}") from None


def model_states(
    params: int, *, optimizer: str = "adam-mixed", zero_stage: int = 0, gpus: int = 1
) -> tuple[float, float, float]:
    """(weights, gradients, optimizer states) bytes per GPU, ZeRO paper section 3.1 / Figure 1.

    Examples
    --------
    The paper's 7.5B-parameter model over 64 GPUs, stage 1: 31.4 GB.

    >>> round(sum(model_states(7_500_000_000, zero_stage=1, gpus=64)) / 1e9, 1)
    31.4
    """
    w, g, k = _optimizer(optimizer)
    if zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"zero_stage={zero_stage!r} must be 0, 1, 2 or 3")
    if gpus < 1:
        raise ConfigError(f"gpus={gpus!r} must be at least 1")
    return (
        params * w / (gpus if zero_stage >= 3 else 1),
        params * g / (gpus if zero_stage >= 2 else 1),
        params * k / (gpus if zero_stage >= 1 else 1),
    )


def activation_bytes_per_layer(
    model: ModelConfig | str,
    *,
    seq: int,
    batch: int = 1,
    recompute: Recompute = "none",
    tensor_parallel: int = 1,
    sequence_parallel: bool = False,
    flash_attention: bool = False,
) -> float:
    """Activation bytes one transformer layer keeps for backward at 16 bit.

    Korthikanti et al. 2022, section 4.1 counts, for a GPT layer with a 4h
    GELU MLP, attention ``11sbh + 5as^2b``, MLP ``19sbh`` and layer norms
    ``4sbh``: ``sbh(34 + 5as/h)``. We keep each term's origin so the same
    count holds for other shapes: key/value tensors shrink with grouped-query
    attention, the MLP stores ``3sbh + 4sbI`` (``3sbh + 8sbI`` when gated: gate,
    up, activation and product outputs), dropout masks (1 byte each) vanish
    when the model has no dropout, and flash attention (Dao et al. 2022) keeps no
    ``s x s`` scores, as selective recomputation does.

    Examples
    --------
    GPT-3 (a=96, s=2048, h=12288): ``5as/h = 80``, so 34 + 80 = 114 bytes per sbh.

    >>> from loopstack.economics import get_model
    >>> gpt3 = get_model("gpt3-175b")
    >>> activation_bytes_per_layer(gpt3, seq=2048) / (2048 * 12288)
    114.0
    """
    m = get_model(model)
    s, b, h, a, t = seq, batch, m.hidden, m.heads, tensor_parallel
    if s < 1 or b < 1:
        raise ConfigError(f"seq={s} and batch={b} must be positive")
    m.check_tensor_parallel(t)
    if recompute == "full":
        return 2 * s * b * h / (t if sequence_parallel else 1)
    if recompute not in ("none", "selective"):
        raise ConfigError(f"recompute={recompute!r} must be 'none', 'selective' or 'full'")
    drop = 1 if m.dropout else 0
    kv_width = m.kv * m.dim
    # Outside the tensor-parallel region: 2 layer-norm inputs (2sbh each), the attention and MLP
    # inputs (2sbh each), and 2 dropout masks (sbh each): 10sbh in the paper.
    outside = s * b * h * (4 + 2 + 2 + 2 * drop)
    # Inside it: Q (2sbh), K and V (2sb*kv_width each), the output-projection input (2sbh)...
    inside = s * b * (2 * h + 4 * kv_width + 2 * h)
    # ... the MLP's intermediate tensors ...
    inside += s * b * m.intermediate * (8 if m.gated_mlp else 4)
    # ... and the s x s attention scores: softmax output (2), its dropout mask (1) and output (2).
    if recompute == "none" and not flash_attention:
        inside += a * s * s * b * (5 if drop else 2)
    return outside / (t if sequence_parallel else 1) + inside / t


def activation_bytes(
    model: ModelConfig | str,
    *,
    seq: int,
    batch: int = 1,
    recompute: Recompute = "none",
    tensor_parallel: int = 1,
    sequence_parallel: bool = False,
    flash_attention: bool = False,
    include_output: bool = True,
) -> float:
    """Activation bytes of the whole model for one micro-batch.

    ``layers * activation_bytes_per_layer`` plus, with `include_output`, the
    output layer Korthikanti et al. 2022 add in section 4.3: final layer-norm
    input and output-projection input (``4sbh``) and the fp32 logits the
    cross-entropy keeps (``4sbv``), which dominate for large vocabularies.
    """
    m = get_model(model)
    per_layer = activation_bytes_per_layer(
        m, seq=seq, batch=batch, recompute=recompute, tensor_parallel=tensor_parallel,
        sequence_parallel=sequence_parallel, flash_attention=flash_attention,
    )
    total = m.layers * per_layer
    if include_output:
        total += (4 * seq * batch * m.hidden + 4 * seq * batch * m.vocab) / tensor_parallel
    return total


def lora_parameters(model: ModelConfig | str, rank: int, targets: Iterable[str] = ("q", "v")) -> int:
    """Trainable parameters of LoRA adapters of rank `rank` on `targets` in every layer.

    ``r * (d_in + d_out)`` per adapted matrix (Hu et al. 2021, section 4.1).
    Targets are short names q, k, v, o, gate, up, down (``q_proj`` works
    too) or ``"all-linear"``; MoE expert matrices count once per expert.

    Examples
    --------
    PEFT's ``print_trainable_parameters`` for Llama-2-7B, r=8 on q_proj and
    v_proj, prints ``trainable params: 4,194,304``:

    >>> lora_parameters("llama-2-7b", 8, ["q_proj", "v_proj"])
    4194304
    """
    m = get_model(model)
    if rank < 1:
        raise ConfigError(f"LoRA rank={rank!r} must be a positive integer")
    shapes = m.linear_shapes()
    names = [targets] if isinstance(targets, str) else list(targets)  # "q_proj" is one target, not 6 letters
    names = list(shapes) if names == ["all-linear"] else names
    chosen: list[str] = []
    for raw in names:
        name = raw.strip().removesuffix("_proj")
        if name not in shapes:
            raise ConfigError(f"LoRA target {raw!r} is not a linear layer of {m.name}; use some of {', '.join(shapes)}")
        if name not in chosen:  # "q" and "q_proj" name one matrix: PEFT adapts it once
            chosen.append(name)
    total = 0
    for name in chosen:
        d_in, d_out = shapes[name]
        total += rank * (d_in + d_out) * (m.experts if name not in "qkvo" else 1)
    return m.layers * total


def nf4_bits_per_param(double_quant: bool = True) -> float:
    """Bits per weight of an NF4 tensor with its quantization constants (QLoRA section 3).

    Examples
    --------
    >>> round(nf4_bits_per_param(False), 3), round(nf4_bits_per_param(True), 3)
    (4.5, 4.127)
    """
    return NF4_BITS + (NF4_DOUBLE_QUANT_CONSTANT_BITS if double_quant else NF4_CONSTANT_BITS)


def qlora_base_bytes(model: ModelConfig | str, double_quant: bool = True) -> float:
    """Bytes of a QLoRA base model: block linear weights in NF4, everything else in bf16.

    bitsandbytes replaces only ``nn.Linear`` layers inside the blocks; the
    embedding, output head and norms stay 16 bit.
    """
    m = get_model(model)
    quantized = m.block_linear_parameters()
    return quantized * nf4_bits_per_param(double_quant) / 8 + (m.parameters() - quantized) * 2


def training_memory(
    model: ModelConfig | str,
    *,
    method: Method = "full",
    seq: int = 2048,
    batch: int = 1,
    gpus: int = 1,
    zero_stage: int = 0,
    optimizer: str = "adam-mixed",
    recompute: Recompute = "none",
    flash_attention: bool = False,
    tensor_parallel: int = 1,
    sequence_parallel: bool = False,
    lora_rank: int = 16,
    lora_targets: Iterable[str] = ("q", "k", "v", "o", "gate", "up", "down"),
    double_quant: bool = True,
) -> MemoryEstimate:
    """Per-GPU memory to train `model` with data parallelism over `gpus`.

    ``method="full"`` trains every weight (model states per the ZeRO paper);
    ``"lora"`` freezes a 16-bit base and trains adapters with `optimizer`;
    ``"qlora"`` does the same over an NF4 base. Activations follow Korthikanti
    et al. 2022 for a micro-batch of `batch` sequences of `seq` tokens. With
    `tensor_parallel` > 1 the weights are also split over the tensor-parallel
    group; `gpus` counts data-parallel replicas only.

    Examples
    --------
    >>> est = training_memory("llama-2-7b", method="qlora", lora_rank=8, lora_targets=["q", "v"], recompute="full")
    >>> est.trainable_parameters
    4194304
    >>> round(est.weights / 1e9, 2)
    3.87
    """
    m = get_model(model)
    notes = [f"{m.name}: {m.parameters():,} parameters"]
    if method == "full":
        weights, grads, states = model_states(m.parameters(), optimizer=optimizer, zero_stage=zero_stage, gpus=gpus)
        trainable = m.parameters()
    elif method in ("lora", "qlora"):
        trainable = lora_parameters(m, lora_rank, lora_targets)
        w, grads, states = model_states(trainable, optimizer=optimizer, zero_stage=zero_stage, gpus=gpus)
        base = m.parameters() * 2.0 if method == "lora" else qlora_base_bytes(m, double_quant)
        weights = base / (gpus if zero_stage >= 3 else 1) + w
        notes.append(f"{trainable:,} trainable adapter parameters ({100 * trainable / m.parameters():.3f}%)")
    else:
        raise ConfigError(f"method={method!r} must be 'full', 'lora' or 'qlora'")
    activations = activation_bytes(
        m, seq=seq, batch=batch, recompute=recompute, tensor_parallel=tensor_parallel,
        sequence_parallel=sequence_parallel, flash_attention=flash_attention,
    )
    tp = tensor_parallel
    return MemoryEstimate(
        weights=weights / tp, gradients=grads / tp, optimizer=states / tp, activations=activations,
        trainable_parameters=trainable, notes=tuple(notes),
    )


def _optimizer(name: str) -> tuple[float, float, float]:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(f"optimizer {name!r} is unknown; use one of {', '.join(OPTIMIZERS)}") from None
