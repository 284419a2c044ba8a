"""Training-memory formulas against the numbers printed in their source papers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopstack.core.errors import ConfigError
from loopstack.economics import (
    GB,
    ModelConfig,
    activation_bytes,
    activation_bytes_per_layer,
    fsdp_stage,
    get_model,
    lora_parameters,
    model_states,
    nf4_bits_per_param,
    qlora_base_bytes,
    training_memory,
)

# Rajbhandari et al. 2020 (ZeRO), Table 1: per-device memory (GB) of model states for a
# 7.5B, 128B and 1T model under P_os (stage 1), P_os+g (stage 2) and P_os+g+p (stage 3),
# written as the paper prints them: it rounds some cells and truncates others (4187.5 -> 4187,
# 2218.75 -> 2218), so the tolerance is one unit of the last printed digit.
ZERO_TABLE_1 = {
    (7.5e9, 1): ("120", "120", "120"),
    (7.5e9, 4): ("52.5", "41.3", "30"),
    (7.5e9, 16): ("35.6", "21.6", "7.5"),
    (7.5e9, 64): ("31.4", "16.6", "1.88"),
    (7.5e9, 256): ("30.4", "15.4", "0.47"),
    (7.5e9, 1024): ("30.1", "15.1", "0.12"),
    (128e9, 4): ("896", "704", "512"),
    (128e9, 64): ("536", "284", "32"),
    (1e12, 4): ("7000", "5500", "4000"),
    (1e12, 64): ("4187", "2218", "250"),
}


def _last_digit(printed: str) -> float:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 10**-decimals + 1e-9


@pytest.mark.parametrize(("key", "printed"), ZERO_TABLE_1.items())
def test_zero_model_states_match_paper_table_1(key: tuple[float, int], printed: tuple[str, str, str]) -> None:
    params, gpus = key
    for stage, value in zip((1, 2, 3), printed, strict=True):
        got = sum(model_states(int(params), zero_stage=stage, gpus=gpus)) / GB
        assert abs(got - float(value)) < _last_digit(value), (stage, got, value)


def test_zero_baseline_is_16_bytes_per_parameter() -> None:
    # ZeRO section 3.1: "2Ψ + 2Ψ + 12Ψ = 16Ψ bytes", 120 GB for the 7.5B model at any DP degree.
    assert sum(model_states(7_500_000_000, gpus=1024)) / GB == 120


def test_fsdp_strategies_map_to_zero_stages() -> None:
    # Zhao et al. 2023 (PyTorch FSDP), section 3: FULL_SHARD ~ ZeRO-3, SHARD_GRAD_OP ~ ZeRO-2.
    assert [fsdp_stage(s) for s in ("NO_SHARD", "SHARD_GRAD_OP", "FULL_SHARD")] == [0, 2, 3]
    with pytest.raises(ConfigError, match="HALF_SHARD"):
        fsdp_stage("HALF_SHARD")


def test_korthikanti_attention_term_for_gpt3_is_80() -> None:
    # Korthikanti et al. 2022, section 4.1: for GPT-3, a=96, s=2048, h=12288, so 5as/h = 80
    # and one layer stores sbh(34 + 80) bytes.
    gpt3 = get_model("gpt3-175b")
    sbh = 2048 * 1 * 12288
    assert activation_bytes_per_layer(gpt3, seq=2048) == sbh * (34 + 80)
    assert activation_bytes_per_layer(gpt3, seq=2048, recompute="selective") == sbh * 34
    assert activation_bytes_per_layer(gpt3, seq=2048, recompute="full") == sbh * 2


@pytest.mark.parametrize(
    ("heads", "hidden", "saving"),
    [(96, 12288, 0.70), (128, 20480, 0.65)],  # GPT-3 175B and MT-NLG 530B
)
def test_selective_recomputation_saving_matches_paper(heads: int, hidden: int, saving: float) -> None:
    # Korthikanti et al. 2022, section 4.2: selective recomputation "reduces the required
    # activation memory by 70% for GPT-3 and 65% for MT-NLG" (s = 2048).
    m = ModelConfig("m", layers=1, hidden=hidden, heads=heads, vocab=8, intermediate=4 * hidden,
                    gated_mlp=False, dropout=True)
    none = activation_bytes_per_layer(m, seq=2048)
    selective = activation_bytes_per_layer(m, seq=2048, recompute="selective")
    assert 1 - selective / none == pytest.approx(saving, abs=0.005)


@pytest.mark.parametrize("t", [1, 2, 8])
def test_tensor_and_sequence_parallel_formulas_of_table_2(t: int) -> None:
    # Korthikanti et al. 2022, Table 2 (per layer, bytes / sbh):
    #   tensor parallel:                 10 + 24/t + 5as/(ht)
    #   tensor + sequence parallel:      (34 + 5as/h) / t
    #   tensor parallel + selective:     10 + 24/t
    #   tensor + sequence + selective:   34/t
    gpt3 = get_model("gpt3-175b")
    s, h, a = 2048, 12288, 96
    sbh = s * h
    per = lambda **kw: activation_bytes_per_layer(gpt3, seq=s, tensor_parallel=t, **kw) / sbh  # noqa: E731
    assert per() == pytest.approx(10 + 24 / t + 5 * a * s / (h * t))
    assert per(sequence_parallel=True) == pytest.approx((34 + 5 * a * s / h) / t)
    assert per(recompute="selective") == pytest.approx(10 + 24 / t)
    assert per(recompute="selective", sequence_parallel=True) == pytest.approx(34 / t)


def test_whole_model_activations_add_output_layer_logits() -> None:
    llama = get_model("llama-3-8b")
    layers_only = activation_bytes(llama, seq=1024, include_output=False)
    with_head = activation_bytes(llama, seq=1024)
    assert layers_only == 32 * activation_bytes_per_layer(llama, seq=1024)
    assert with_head - layers_only == 4 * 1024 * 4096 + 4 * 1024 * 128256


def test_lora_parameters_match_peft_print_trainable_parameters() -> None:
    # PEFT docs / README: Llama-2-7B with LoraConfig(r=8, target_modules=["q_proj", "v_proj"]) prints
    # "trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622".
    trainable = lora_parameters("llama-2-7b", 8, ["q_proj", "v_proj"])
    total = get_model("llama-2-7b").parameters() + trainable
    assert (trainable, total) == (4_194_304, 6_742_609_920)
    assert 100 * trainable / total == pytest.approx(0.0622, abs=5e-5)


@pytest.mark.parametrize(("hidden", "layers", "published_millions"), [(768, 12, 0.3), (1024, 24, 0.8)])
def test_lora_parameters_match_lora_paper_roberta(hidden: int, layers: int, published_millions: float) -> None:
    # Hu et al. 2021 (LoRA), Table 2: RoBERTa base / large with LoRA (r=8 on W_q, W_v): 0.3M / 0.8M.
    roberta = ModelConfig("roberta", layers=layers, hidden=hidden, heads=hidden // 64, vocab=50265,
                          intermediate=4 * hidden, gated_mlp=False)
    assert round(lora_parameters(roberta, 8, ["q", "v"]) / 1e6, 1) == published_millions


def test_lora_gpt3_checkpoint_is_about_35_mb_and_base_350_gb() -> None:
    # Hu et al. 2021, section 4.2: with r=4 on q and v, the GPT-3 175B checkpoint shrinks
    # "from 350GB to 35MB" (16-bit weights).
    adapter_bytes = lora_parameters("gpt3-175b", 4, ["q", "v"]) * 2
    assert adapter_bytes / 1e6 == pytest.approx(35, rel=0.1)
    assert get_model("gpt3-175b").parameters() * 2 / GB == pytest.approx(350, rel=0.01)


def test_nf4_double_quantization_saves_0373_bits_and_3gb_on_65b() -> None:
    # Dettmers et al. 2023 (QLoRA), section 3: double quantization reduces the constants from
    # 32/64 = 0.5 bits to 8/64 + 32/(64*256) = 0.127 bits per parameter, "a reduction of 0.373
    # bits per parameter", "approximately 3 GB for a 65B model".
    assert nf4_bits_per_param(False) - 4 == 0.5
    assert nf4_bits_per_param(True) - 4 == pytest.approx(0.127, abs=5e-4)
    saved = qlora_base_bytes("llama-65b", double_quant=False) - qlora_base_bytes("llama-65b")
    assert saved / get_model("llama-65b").block_linear_parameters() * 8 == pytest.approx(0.373, abs=5e-4)
    assert saved / GB == pytest.approx(3.0, abs=0.1)


def test_qlora_fits_65b_in_48gb_where_16bit_finetuning_needs_780gb() -> None:
    # Dettmers et al. 2023, abstract and section 1: QLoRA "reduces the average memory requirements of
    # finetuning a 65B parameter model from >780GB of GPU memory to <48GB". The 16-bit baseline keeps
    # 16-bit weights and gradients and 32-bit Adam states (12 bytes/param); QLoRA uses r=64 on all
    # linear layers (section 5) with 16-bit adapters and paged 32-bit AdamW, measured at batch 1 x 512.
    full = training_memory("llama-65b", optimizer="adam-16bit", seq=512, recompute="full")
    qlora = training_memory("llama-65b", method="qlora", lora_rank=64, optimizer="adam-16bit", seq=512,
                            recompute="full")
    assert (full.weights + full.gradients + full.optimizer) / GB > 780
    assert qlora.total / GB < 48


def test_lora_freezes_the_base_and_qlora_shrinks_it() -> None:
    full = training_memory("llama-2-7b", recompute="full")
    lora = training_memory("llama-2-7b", method="lora", recompute="full")
    qlora = training_memory("llama-2-7b", method="qlora", recompute="full")
    assert full.trainable_parameters == get_model("llama-2-7b").parameters()
    assert lora.trainable_parameters == qlora.trainable_parameters < full.trainable_parameters / 50
    assert qlora.weights < lora.weights / 3 < full.weights
    assert lora.activations == full.activations


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ConfigError, match="zero_stage=4"):
        model_states(10, zero_stage=4)
    with pytest.raises(ConfigError, match="lion"):
        model_states(10, optimizer="lion")
    with pytest.raises(ConfigError, match="'attn'"):
        lora_parameters("llama-2-7b", 8, ["attn"])
    with pytest.raises(ConfigError, match="method='prefix'"):
        training_memory("gpt2", method="prefix")  # type: ignore[arg-type]


@given(params=st.integers(1, 10**12), gpus=st.integers(1, 4096))
def test_each_zero_stage_needs_no_more_memory_than_the_previous(params: int, gpus: int) -> None:
    totals = [sum(model_states(params, zero_stage=s, gpus=gpus)) for s in range(4)]
    assert all(a >= b for a, b in itertools.pairwise(totals))
    assert totals[3] == pytest.approx(totals[0] / gpus)


@given(seq=st.integers(1, 8192), batch=st.integers(1, 16), name=st.sampled_from(["gpt2", "llama-3-8b", "mixtral-8x7b"]))
def test_recomputation_never_increases_activation_memory(seq: int, batch: int, name: str) -> None:
    kw = {"seq": seq, "batch": batch}
    none, selective, full = (activation_bytes(name, recompute=r, **kw) for r in ("none", "selective", "full"))
    assert none >= selective >= full
    assert activation_bytes(name, flash_attention=True, **kw) == selective


def test_lora_targets_count_each_matrix_once_and_take_a_single_name() -> None:
    q_and_v = lora_parameters("llama-2-7b", 8, ["q", "v"])
    # "q" and "q_proj" are the same matrix: PEFT adapts it once (4,194,304 trainable, not 6,291,456).
    assert lora_parameters("llama-2-7b", 8, ["q", "q_proj", "v_proj", " v"]) == q_and_v
    # A bare string is one target, not a list of its letters.
    assert lora_parameters("llama-2-7b", 8, "gate") == lora_parameters("llama-2-7b", 8, ["gate"])
    assert lora_parameters("llama-2-7b", 8, "q_proj") == q_and_v // 2
