"""Parameter counts of the presets against the counts their publishers state.

Each expected value is the exact total of the model's published weights (the
safetensors metadata / model card on the Hugging Face Hub, i.e. what
``sum(p.numel() for p in model.parameters())`` prints), so a wrong shape
formula (a missing bias, a tied head, GQA widths) fails here.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopstack.core.errors import ConfigError, NotFoundError
from loopstack.economics import PRESETS, ModelConfig, get_model
from loopstack.economics.models import from_hf_config

PUBLISHED_PARAMETERS = {
    "gpt2": 124_439_808,  # openai-community/gpt2 model card: "124M"; exact count of its weights
    "bert-base-cased": 108_310_272,  # accelerate estimate-memory: 413.18 MB at fp32 (see test_inference)
    "llama-2-7b": 6_738_415_616,  # meta-llama/Llama-2-7b-hf safetensors total
    "llama-2-13b": 13_015_864_320,  # meta-llama/Llama-2-13b-hf safetensors total
    "llama-2-70b": 68_976_648_192,  # meta-llama/Llama-2-70b-hf safetensors total
    "llama-3-8b": 8_030_261_248,  # meta-llama/Meta-Llama-3-8B safetensors total ("8.03B params")
    "llama-3-70b": 70_553_706_496,  # meta-llama/Meta-Llama-3-70B safetensors total ("70.6B params")
    "mistral-7b": 7_241_732_096,  # mistralai/Mistral-7B-v0.1 safetensors total ("7.24B params")
    "mixtral-8x7b": 46_702_792_704,  # mistralai/Mixtral-8x7B-v0.1 safetensors total ("46.7B params")
    "qwen2-7b": 7_615_616_512,  # Qwen/Qwen2-7B safetensors total ("7.62B params")
    "phi-3-mini": 3_821_079_552,  # microsoft/Phi-3-mini-4k-instruct safetensors total ("3.82B params")
    "llama-65b": 65_285_660_672,  # LLaMA 65B (Touvron et al. 2023): 65.2B
}


@pytest.mark.parametrize(("name", "expected"), PUBLISHED_PARAMETERS.items())
def test_preset_parameter_count_equals_published_count(name: str, expected: int) -> None:
    assert get_model(name).parameters() == expected


def test_mixtral_active_parameters_match_mistral_announcement() -> None:
    # Mistral AI, "Mixtral of experts" (Dec 2023): 46.7B total, 12.9B used per token.
    mixtral = get_model("mixtral-8x7b")
    assert round(mixtral.parameters() / 1e9, 1) == 46.7
    assert round(mixtral.active_parameters() / 1e9, 1) == 12.9


def test_gpt3_175b_is_175_billion() -> None:
    # Brown et al. 2020, Table 2.1: GPT-3 175B (96 layers, d_model 12288, 96 heads).
    assert get_model("gpt3-175b").parameters() == pytest.approx(175e9, rel=0.01)


def test_dense_model_active_equals_total_and_quantizable_part_excludes_embeddings() -> None:
    llama = get_model("llama-3-8b")
    assert llama.active_parameters() == llama.parameters()
    assert llama.parameters() - llama.block_linear_parameters() == 2 * 128256 * 4096 + 65 * 4096


def test_lookup_is_case_insensitive_and_unknown_names_list_choices() -> None:
    assert get_model("Llama-2-7B") is PRESETS["llama-2-7b"]
    with pytest.raises(NotFoundError, match="llama-2-7b"):
        get_model("llama-9")


def test_invalid_shapes_are_refused_with_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="kv_heads=5"):
        ModelConfig("x", layers=2, hidden=64, heads=8, kv_heads=5, vocab=10, intermediate=128)
    with pytest.raises(ConfigError, match="layers=0"):
        ModelConfig("x", layers=0, hidden=64, heads=8, vocab=10, intermediate=128)


def test_hf_config_json_reproduces_presets() -> None:
    # Keys as in the published config.json files.
    qwen = {"model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
            "num_key_value_heads": 4, "vocab_size": 152064, "intermediate_size": 18944, "tie_word_embeddings": False}
    gpt2 = {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
    mixtral = {"model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
               "num_key_value_heads": 8, "vocab_size": 32000, "intermediate_size": 14336, "num_local_experts": 8,
               "num_experts_per_tok": 2}
    assert from_hf_config(qwen).parameters() == PUBLISHED_PARAMETERS["qwen2-7b"]
    assert from_hf_config(gpt2).parameters() == PUBLISHED_PARAMETERS["gpt2"]
    assert from_hf_config(mixtral).active_parameters() == get_model("mixtral-8x7b").active_parameters()
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        from_hf_config({"hidden_size": 8})


@given(
    layers=st.integers(1, 8), heads=st.sampled_from([4, 8]), group=st.sampled_from([1, 2, 4]),
    width=st.sampled_from([16, 32]), vocab=st.integers(10, 1000), gated=st.booleans(),
)
def test_parameter_count_matches_a_layer_by_layer_sum(
    layers: int, heads: int, group: int, width: int, vocab: int, gated: bool
) -> None:
    hidden, kv = heads * width, heads // group
    m = ModelConfig("t", layers=layers, hidden=hidden, heads=heads, kv_heads=kv, vocab=vocab,
                    intermediate=3 * hidden, gated_mlp=gated)
    attention = 2 * hidden * hidden + 2 * hidden * kv * width
    mlp = (3 if gated else 2) * hidden * 3 * hidden
    expected = 2 * vocab * hidden + layers * (attention + mlp + 2 * hidden) + hidden
    assert m.parameters() == expected
    assert m.kv_cache_bytes_per_token(2) == 2 * layers * kv * width * 2


def test_odd_config_json_values_are_named_not_raised_raw_or_truncated() -> None:
    base = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
            "vocab_size": 100, "intermediate_size": 128}
    with pytest.raises(ConfigError, match=r"JSON object .* not list"):  # was AttributeError: 'list' ... 'get'
        from_hf_config([base])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hidden_size='big' must be a whole number"):  # was a raw ValueError
        from_hf_config({**base, "hidden_size": "big"})
    with pytest.raises(ConfigError, match=r"num_hidden_layers=2\.5"):  # int() used to make it 2 layers
        from_hf_config({**base, "num_hidden_layers": 2.5})
    # Counts written as text are still counts (was a TypeError deep in the head check).
    assert from_hf_config({**base, "num_key_value_heads": "2"}).kv == 2


def test_negative_kv_heads_or_head_dim_are_refused_not_priced_negative() -> None:
    for key in ("kv_heads", "head_dim"):
        with pytest.raises(ConfigError, match=f"{key}=-2"):
            ModelConfig("x", layers=2, hidden=64, heads=4, vocab=10, intermediate=8, **{key: -2})


def test_hf_config_json_estimates_the_same_training_memory_as_the_preset() -> None:
    from loopstack.economics.memory import training_memory

    # keys and values as in the published config.json files (dropout 0.1 in both)
    gpt2 = {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
            "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1}
    bert = {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
            "vocab_size": 28996, "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    for config, preset in ((gpt2, "gpt2"), (bert, "bert-base-cased")):
        from_json, published = from_hf_config(config), get_model(preset)
        assert from_json.parameters() == published.parameters()
        assert training_memory(from_json, seq=512, batch=4) == training_memory(published, seq=512, batch=4)
    without_dropout = from_hf_config({**gpt2, "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0})
    assert not without_dropout.dropout
    with pytest.raises(ConfigError, match="attn_pdrop='high'"):
        from_hf_config({**gpt2, "attn_pdrop": "high"})
