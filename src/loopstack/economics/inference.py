"""Inference memory: weights at a chosen precision plus the key/value cache.

* Weights: parameters times bytes per value, as `accelerate estimate-memory`
  reports them (fp32 4, fp16/bf16 2, int8 1, int4 0.5 bytes); ``nf4`` adds
  QLoRA's quantization constants (Dettmers et al. 2023, section 3).
* KV cache: ``2 * layers * kv_heads * head_dim * bytes`` per token (Kwon et
  al. 2023, "Efficient Memory Management for Large Language Model Serving with
  PagedAttention", section 3: 800 KB per token for OPT-13B at fp16), times
  context length and batch. Grouped-query attention (Ainslie et al. 2023,
  "GQA") shrinks it by ``heads / kv_heads``.
* Runtime overhead: EleutherAI's "Transformer Math 101" (Anthony et al. 2023)
  and the accelerate docs advise up to 20% on top of the weights for
  inference; `overhead` defaults to that.
"""

from __future__ import annotations

import math

from loopstack.core.errors import ConfigError
from loopstack.economics.memory import MemoryEstimate, nf4_bits_per_param
from loopstack.economics.models import ModelConfig, get_model

BYTES_PER_VALUE: dict[str, float] = {
    "fp32": 4,
    "float32": 4,
    "fp16": 2,
    "float16": 2,
    "bf16": 2,
    "bfloat16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
    "nf4": nf4_bits_per_param(True) / 8,
}


def bytes_per_value(dtype: str | float) -> float:
    """Bytes one value takes in `dtype` (a name from `BYTES_PER_VALUE`, or a number).

    Examples
    --------
    >>> bytes_per_value("bf16"), bytes_per_value("int4")
    (2, 0.5)
    """
    if isinstance(dtype, str) and dtype.lower() in BYTES_PER_VALUE:
        return BYTES_PER_VALUE[dtype.lower()]
    try:
        count = float(dtype)  # a byte count, also as text (the CLI's --dtype 1.5)
    except (TypeError, ValueError):
        known = ", ".join(BYTES_PER_VALUE)
        raise ConfigError(f"dtype {dtype!r} is unknown; use one of {known} or a byte count") from None
    if not 0 < count < math.inf:
        raise ConfigError(f"dtype {dtype!r}: a byte count per value must be a positive finite number")
    return count


def weight_bytes(model: ModelConfig | str, dtype: str | float = "bf16") -> float:
    """Bytes of all weights at `dtype`.

    Examples
    --------
    ``accelerate estimate-memory bert-base-cased`` reports 206.59 MB (MiB) at float16.

    >>> round(weight_bytes("bert-base-cased", "float16") / 2**20, 2)
    206.59
    """
    return get_model(model).parameters() * bytes_per_value(dtype)


def kv_cache_bytes(model: ModelConfig | str, *, context: int, batch: int = 1, dtype: str | float = "bf16") -> float:
    """Bytes of the key/value cache for `batch` sequences of `context` tokens.

    Examples
    --------
    Llama-2-7B (no GQA), 4096 tokens, fp16: exactly 2 GiB.

    >>> kv_cache_bytes("llama-2-7b", context=4096) / 2**30
    2.0
    """
    if context < 1 or batch < 1:
        raise ConfigError(f"context={context} and batch={batch} must be positive")
    return get_model(model).kv_cache_bytes_per_token(bytes_per_value(dtype)) * context * batch


def inference_memory(
    model: ModelConfig | str,
    *,
    dtype: str | float = "bf16",
    context: int | None = None,
    batch: int = 1,
    kv_dtype: str | float = "bf16",
    tensor_parallel: int = 1,
    overhead: float = 0.2,
) -> MemoryEstimate:
    """Per-GPU memory to serve `model`: weights, KV cache and a runtime overhead.

    Tensor parallelism over `tensor_parallel` GPUs splits weights and KV heads
    evenly (Shoeybi et al. 2019, Megatron-LM); it must divide the attention
    heads, and a GPU holds at least one KV head (`ModelConfig.kv_share`). `context` defaults to the
    model's maximum; the overhead (activations, CUDA context, allocator
    fragmentation) is reported in `activations` as a share of the weights.

    Examples
    --------
    >>> est = inference_memory("llama-3-8b", dtype="bf16", context=8192, batch=4, overhead=0)
    >>> round(est.weights / 1e9, 2), est.kv_cache / 2**30
    (16.06, 4.0)
    """
    m = get_model(model)
    m.check_tensor_parallel(tensor_parallel)
    if not 0 <= overhead < math.inf:
        raise ConfigError(f"overhead={overhead!r} must be a non-negative share of the weights, e.g. 0.2")
    tokens = m.max_context if context is None else context  # 0 is an error, not "the maximum"
    weights = weight_bytes(m, dtype) / tensor_parallel
    kv = kv_cache_bytes(m, context=tokens, batch=batch, dtype=kv_dtype) * m.kv_share(tensor_parallel)
    return MemoryEstimate(
        weights=weights,
        activations=weights * overhead,
        kv_cache=kv,
        notes=(f"{m.name} at {dtype}, KV cache {tokens} tokens x {batch} at {kv_dtype}",),
    )


def max_batch(
    model: ModelConfig | str,
    gpu_memory: float,
    *,
    context: int,
    dtype: str | float = "bf16",
    kv_dtype: str | float = "bf16",
    tensor_parallel: int = 1,
    overhead: float = 0.2,
) -> int:
    """How many sequences of `context` tokens fit next to the weights in `gpu_memory` bytes (0 if none).

    Examples
    --------
    >>> max_batch("llama-2-7b", 80e9, context=4096)
    29
    """
    base = inference_memory(model, dtype=dtype, context=context, batch=1, kv_dtype=kv_dtype,
                            tensor_parallel=tensor_parallel, overhead=overhead)
    free = gpu_memory - base.weights - base.activations
    return max(0, int(free // base.kv_cache))
