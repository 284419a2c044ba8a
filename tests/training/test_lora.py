"""LoRA through PEFT on a tiny transformer built from a config: share, save, load, merge, register."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import loopstack as ls  # noqa: E402
from loopstack.core.errors import ConfigError, NotFoundError  # noqa: E402
from loopstack.economics import ModelConfig, lora_parameters  # noqa: E402
from loopstack.training import (  # noqa: E402
    ResumableLoader,
    TinyTransformer,
    TrainConfig,
    fit,
    lm_loss,
    seed_everything,
)
from loopstack.training.lora import (  # noqa: E402
    ADAPTER_FILES,
    apply_lora,
    load_adapter,
    merge_adapter,
    register_merged,
    save_adapter,
    trainable_share,
)

CONFIG = ModelConfig("tiny", layers=2, hidden=64, heads=4, kv_heads=2, vocab=128, intermediate=128)


def _base() -> torch.nn.Module:
    seed_everything(0)
    return TinyTransformer(CONFIG)


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.randint(0, CONFIG.vocab, (64, 1), generator=g) + torch.arange(13)) % CONFIG.vocab


@pytest.mark.parametrize(
    ("rank", "targets"),
    [(4, ["q", "v"]), (2, ["q", "k", "v", "o", "gate", "up", "down"]), (2, "all-linear"), (2, ["all-linear"]),
     (4, "q")],
)  # fmt: skip
def test_trainable_share_equals_the_economics_prediction(rank: int, targets: list[str] | str) -> None:
    model = apply_lora(_base(), rank=rank, targets=targets)
    share = trainable_share(model)
    predicted = lora_parameters(CONFIG, rank, targets)
    assert share.trainable == predicted == share.predicted
    assert share.total == CONFIG.parameters() + predicted  # adapters come on top of the frozen base
    assert share.trainable == model.get_nb_trainable_parameters()[0]  # PEFT's own count agrees
    assert f"{share.trainable:,}" in str(share)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # transformers 5 vs peft
def test_llama_built_from_its_config_matches_the_prediction_too() -> None:
    transformers = pytest.importorskip("transformers")
    llama = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                     vocab_size=128, intermediate_size=128)
    model = apply_lora(transformers.LlamaForCausalLM(llama), rank=8, targets=["q_proj", "v_proj"])
    assert trainable_share(model).trainable == lora_parameters(CONFIG, 8, ["q_proj", "v_proj"]) == 2 * 8 * (
        (64 + 64) + (64 + 2 * 16)
    )


def test_unknown_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'query'"):
        apply_lora(_base(), targets=["query"])


def test_fine_tune_save_load_merge_register(tmp_path) -> None:
    project = ls.Project.init(tmp_path / "proj", name="lora")
    tokens = _data()
    with ls.start_run(project=project, run_name="lora") as run:
        model = apply_lora(_base(), rank=4, targets=["q", "v"])
        frozen = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        result = fit(model, optimizer, ResumableLoader((tokens,), 16, seed=0), lm_loss, TrainConfig(steps=12))
        assert result.losses[-1] < result.losses[0]
        assert all(torch.equal(frozen[k], v) for k, v in model.named_parameters() if k in frozen)  # base untouched
        adapter = save_adapter(model, tmp_path / "adapter")
        model.eval()
        with torch.no_grad():
            expected = model(tokens[:4, :-1])

        # Only the adapter is on disk, and it is tracked on the run.
        saved = json.loads((adapter / "adapter_config.json").read_text())
        assert saved["r"] == 4 and set(saved["target_modules"]) == {"q", "v"}
        size = (adapter / "adapter_model.safetensors").stat().st_size
        assert size < 4 * lora_parameters(CONFIG, 4, ["q", "v"]) + 4096  # float32 adapter weights, no base

        # A fresh base plus the adapter gives the fine-tuned model back exactly.
        loaded = load_adapter(_base(), adapter).eval()
        with torch.no_grad():
            assert torch.equal(loaded(tokens[:4, :-1]), expected)
        merged = merge_adapter(loaded)
        assert type(merged) is TinyTransformer and not any("lora" in k for k in merged.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(merged(tokens[:4, :-1]), expected, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(_base()(tokens[:4, :-1]), expected, atol=1e-3)  # the fine-tune mattered
        version = register_merged(merged, "tiny-lora", example=tokens[:4, :-1].numpy(), alias="champion")

    artifacts = {a["path"] for a in project.tracking.list_artifacts(run.id)}
    assert {f"adapter/{name}" for name in ADAPTER_FILES} <= artifacts
    stored = ls.Client(project).get_run(run.id)
    assert stored.metrics["lora.trainable_params"] == lora_parameters(CONFIG, 4, ["q", "v"])
    assert stored.params["lora.rank"] == "4"
    assert version.version == 1 and version.run_id == run.id
    served = ls.load_model("tiny-lora@champion", project=project)
    torch.testing.assert_close(torch.as_tensor(served.predict(tokens[:4, :-1].numpy())), expected[:, -1, :],
                               rtol=1e-5, atol=1e-5)


def test_load_adapter_from_an_empty_folder_says_what_is_missing(tmp_path) -> None:
    with pytest.raises(NotFoundError, match=r"adapter_config\.json"):
        load_adapter(_base(), tmp_path)
