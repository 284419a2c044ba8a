"""Inference memory against accelerate's estimator and the vLLM paper."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopstack.core.errors import ConfigError
from loopstack.economics import (
    GB,
    GiB,
    bytes_per_value,
    get_model,
    inference_memory,
    kv_cache_bytes,
    max_batch,
    training_memory,
    weight_bytes,
)

MiB = 2**20

# Hugging Face accelerate docs, "Model memory estimator": `accelerate estimate-memory bert-base-cased`
# prints (MB = MiB, GB = GiB): dtype -> (largest layer MB, total size MB, training using Adam).
ACCELERATE_BERT_BASE_CASED = {
    "float32": (84.95, 413.18),
    "float16": (42.47, 206.59),
    "int8": (21.24, 103.29),
    "int4": (10.62, 51.65),
}


@pytest.mark.parametrize(("dtype", "printed"), ACCELERATE_BERT_BASE_CASED.items())
def test_weights_and_largest_layer_match_accelerate_estimate_memory(dtype: str, printed: tuple[float, float]) -> None:
    largest, total = printed
    bert = get_model("bert-base-cased")
    # accelerate also counts two int64 position/token-type buffers; 0.011 MiB absorbs them and rounding.
    assert weight_bytes(bert, dtype) / MiB == pytest.approx(total, abs=0.011)
    assert bert.largest_layer() * bytes_per_value(dtype) / MiB == pytest.approx(largest, abs=0.006)


def test_fp32_adam_training_is_four_times_the_weights_like_accelerate() -> None:
    # Same accelerate table: "Training using Adam" at float32 is 1.61 GB (weights, gradients, 2 moments).
    from loopstack.economics import model_states

    bert = get_model("bert-base-cased").parameters()
    assert round(sum(model_states(bert, optimizer="adam-fp32")) / GiB, 2) == 1.61


def test_kv_cache_per_token_for_opt13b_matches_vllm_paper() -> None:
    # Kwon et al. 2023 (vLLM / PagedAttention), section 3: "the KV cache of a single token demands
    # 800 KB of space, calculated as 2 (key and value vectors) x 5120 (hidden state size) x 40
    # (number of layers) x 2 (bytes per FP16)", and a 2048-token request "can be as much as 1.6 GB".
    opt = get_model("opt-13b")
    assert opt.kv_cache_bytes_per_token(2) == 2 * 5120 * 40 * 2 == 800 * 1024
    assert kv_cache_bytes(opt, context=2048, dtype="fp16") / GB == pytest.approx(1.6, abs=0.1)


def test_grouped_query_attention_divides_the_cache_by_the_group_size() -> None:
    # Ainslie et al. 2023 (GQA): 8 KV heads for 64 query heads keep 1/8 of the multi-head cache.
    gqa = get_model("llama-2-70b")
    mha = gqa.with_(kv_heads=None)
    assert kv_cache_bytes(mha, context=4096) == 8 * kv_cache_bytes(gqa, context=4096)
    assert gqa.kv_cache_bytes_per_token(2) == 327_680  # 320 KiB per token


def test_inference_estimate_adds_overhead_and_splits_over_tensor_parallel() -> None:
    one = inference_memory("llama-2-70b", context=4096, overhead=0.2)
    four = inference_memory("llama-2-70b", context=4096, overhead=0.2, tensor_parallel=4)
    assert one.activations == pytest.approx(0.2 * one.weights)
    assert four.total == pytest.approx(one.total / 4)
    assert inference_memory("llama-2-70b", dtype="int4").weights == one.weights / 4


def test_tensor_parallel_must_split_the_heads_and_keeps_a_whole_kv_head_per_gpu() -> None:
    with pytest.raises(ConfigError, match=r"tensor_parallel=3 does not divide llama-3-8b's 32 attention heads"):
        inference_memory("llama-3-8b", tensor_parallel=3)
    with pytest.raises(ConfigError, match="does not divide"):
        training_memory("llama-3-8b", seq=512, tensor_parallel=6)
    # 8 KV heads over 16 GPUs: each holds one, replicated (as vLLM does), so 1/8 of the cache, not 1/16
    one = inference_memory("llama-3-8b", context=8192, overhead=0)
    sixteen = inference_memory("llama-3-8b", context=8192, overhead=0, tensor_parallel=16)
    assert sixteen.kv_cache == one.kv_cache / 8
    assert sixteen.weights == one.weights / 16
    with pytest.raises(ConfigError, match="tensor_parallel=0 must be at least 1"):
        inference_memory("llama-3-8b", tensor_parallel=0)


def test_inference_plans_only_try_tensor_parallel_sizes_that_split_the_heads() -> None:
    """opt-13b has 40 heads: 16 GPUs cannot serve it with tensor parallelism, so plans skip 16 and 32."""
    from loopstack.economics import plan_options

    plans = plan_options("opt-13b", workload="inference", context=200_000)
    assert plans and all(40 % plan.gpus == 0 for plan in plans)


def test_max_batch_fills_the_free_memory() -> None:
    gpu = 80e9
    n = max_batch("llama-3-8b", gpu, context=8192)
    assert inference_memory("llama-3-8b", context=8192, batch=n).total <= gpu
    assert inference_memory("llama-3-8b", context=8192, batch=n + 1).total > gpu
    assert max_batch("llama-2-70b", 24e9, context=4096) == 0


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ConfigError, match="fp6"):
        weight_bytes("gpt2", "fp6")


@given(context=st.integers(1, 100_000), batch=st.integers(1, 64))
def test_kv_cache_is_linear_in_context_and_batch(context: int, batch: int) -> None:
    one = kv_cache_bytes("mistral-7b", context=1)
    assert kv_cache_bytes("mistral-7b", context=context, batch=batch) == one * context * batch


def test_context_zero_is_refused_not_read_as_the_model_maximum() -> None:
    # 0 used to fall through `context or max_context` and price a full 4096-token cache.
    with pytest.raises(ConfigError, match="context=0"):
        inference_memory("llama-2-7b", context=0)
    assert inference_memory("llama-2-7b").kv_cache == kv_cache_bytes("llama-2-7b", context=4096)


def test_byte_counts_must_be_positive_and_may_come_as_text() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "-2"):
        with pytest.raises(ConfigError, match="positive finite"):
            bytes_per_value(bad)
    assert bytes_per_value("1.5") == 1.5  # the CLI's --dtype is text; the error promised "or a byte count"
    assert weight_bytes("gpt2", "1") == weight_bytes("gpt2", "int8")
    with pytest.raises(ConfigError, match=r"overhead=-0\.5"):
        inference_memory("gpt2", overhead=-0.5)
