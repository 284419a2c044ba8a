"""Mixed precision and gradient checkpointing switches; GPU usage recording; the public surface."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.training.conftest import TINY, tokens  # noqa: E402

import loopstack as ls  # noqa: E402
import loopstack.training as training  # noqa: E402
from loopstack.core.project import Project  # noqa: E402
from loopstack.training import (  # noqa: E402
    GpuUsage,
    ResumableLoader,
    TinyTransformer,
    TrainConfig,
    enable_gradient_checkpointing,
    fit,
    lm_loss,
    seed_everything,
)
from loopstack.training.gpu import price_table_name  # noqa: E402

NODROP = TINY.with_(dropout=False)


def _saved_bytes_and_grads(checkpointing: bool) -> tuple[int, list[torch.Tensor]]:
    seed_everything(0)
    model = TinyTransformer(NODROP)
    if checkpointing:
        assert enable_gradient_checkpointing(model) == NODROP.layers
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm_loss(model, (tokens(8),)).backward()
    return saved, [p.grad.clone() for p in model.parameters()]


def test_gradient_checkpointing_keeps_gradients_and_saves_less() -> None:
    plain_bytes, plain = _saved_bytes_and_grads(False)
    ckpt_bytes, ckpt = _saved_bytes_and_grads(True)
    for a, b in zip(plain, ckpt, strict=True):
        torch.testing.assert_close(a, b)
    assert ckpt_bytes < plain_bytes / 2


def test_checkpointing_keeps_state_dict_keys() -> None:
    model = TinyTransformer(NODROP)
    before = list(model.state_dict())
    enable_gradient_checkpointing(model)
    assert list(model.state_dict()) == before
    assert enable_gradient_checkpointing(model) == 0  # idempotent


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_fp32_master_weights(precision: str) -> None:
    seed_everything(0)
    model = TinyTransformer(NODROP)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    result = fit(model, optimizer, ResumableLoader((tokens(64),), 8), lm_loss,
                 TrainConfig(steps=8, precision=precision, grad_checkpointing=True, max_grad_norm=1.0))  # type: ignore[arg-type]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.losses[-1] < result.losses[0]


class FakeProbe:
    def __init__(self) -> None:
        self.resets = 0

    def available(self) -> bool:
        return True

    def name(self) -> str:
        return "NVIDIA H100 80GB HBM3"

    def devices(self) -> int:
        return 2

    def reset_peak(self) -> None:
        self.resets += 1

    def peak_bytes(self) -> int:
        return 5 * 2**30


def test_gpu_usage_records_type_peak_seconds_and_cost(sqlite_project: Project) -> None:
    probe = FakeProbe()
    with ls.start_run(project=sqlite_project) as run, GpuUsage(probe, run=run) as usage:
        pass
    assert probe.resets == 1
    stored = ls.Client(sqlite_project).get_run(run.id)
    assert stored.tags["gpu.type"] == "NVIDIA H100 80GB HBM3"
    assert stored.metrics["gpu.memory_peak_bytes"] == 5 * 2**30
    assert stored.metrics["gpu.seconds"] == pytest.approx(2 * usage.seconds)
    assert stored.metrics["gpu.cost"] == pytest.approx(2 * usage.seconds / 3600 * 3.5)


def test_gpu_usage_prices_from_the_configured_table(sqlite_project: Project, tmp_path: Path) -> None:
    # a team's own table: its H100 at $2/h, plus a card the packaged table does not know
    table = tmp_path / "prices.yaml"
    table.write_text("gpus:\n"
                     "  H100-80GB: {memory_gb: 80, bf16_tflops: 989, cloud: {on_demand: 2.0}}\n"
                     "  MI300X: {memory_gb: 192, bf16_tflops: 1307, cloud: {on_demand: 4.0}}\n")
    config = TrainConfig(steps=1, prices=table)
    assert price_table_name("AMD Instinct MI300X", config.prices) == "MI300X"
    assert price_table_name("AMD Instinct MI300X") is None  # the packaged table has no MI300X
    with ls.start_run(project=sqlite_project) as run, GpuUsage(FakeProbe(), run=run, prices=config.prices) as usage:
        pass
    cost = ls.Client(sqlite_project).get_run(run.id).metrics["gpu.cost"]
    assert cost == pytest.approx(2 * usage.seconds / 3600 * 2.0)  # was priced at the packaged $3.5/h
    with pytest.raises(ls.ConfigError, match="cannot read price table"):
        TrainConfig(steps=1, prices=tmp_path / "missing.yaml")


def test_gpu_usage_reads_a_price_table_path_up_front(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text("gpus:\n  H100-80GB: {memory_gb: 80, bf16_tflops: 989, cloud: {on_demand: 2.0}}\n")
    with GpuUsage(FakeProbe(), prices=str(table)) as usage:
        pass
    assert usage.summary()["gpu.cost"] == pytest.approx(2 * usage.seconds / 3600 * 2.0)  # was: AttributeError
    with pytest.raises(ls.ConfigError, match="cannot read price table"):  # at the start, not after the run
        GpuUsage(FakeProbe(), prices=tmp_path / "missing.yaml")


def test_device_names_map_to_price_table_entries_and_cpu_records_nothing() -> None:
    assert price_table_name("NVIDIA H100 80GB HBM3") == "H100-80GB"
    assert price_table_name("NVIDIA A100-SXM4-40GB") == "A100-40GB"
    assert price_table_name("NVIDIA L4") == "L4"
    assert price_table_name("Some Future GPU") is None
    with GpuUsage() as usage:
        pass
    assert torch.cuda.is_available() or (not usage.present and usage.summary() == {})


@pytest.mark.parametrize(("device", "priced"), [
    ("NVIDIA H100 80GB HBM3", "H100-80GB"),
    ("NVIDIA H100 PCIe", "H100-80GB"),  # nvidia-smi omits the 80 GB; form factor is not priced apart
    ("NVIDIA H100 NVL", None),  # 94 GB: no entry, rather than the 80 GB card
    ("NVIDIA H200", "H200"),
    ("NVIDIA GH200 480GB", None),  # a Grace Hopper superchip, not an H200
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA A100 80GB PCIe", "A100-80GB"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L40", None),  # not an L4
    ("Tesla T4", "T4"),
    ("NVIDIA A10G", "A10G"),
    ("NVIDIA A10", None),
    ("NVIDIA GeForce RTX 4090", "RTX-4090"),
])
def test_nvidia_smi_names_price_as_their_own_card_or_not_at_all(device: str, priced: str | None) -> None:
    assert price_table_name(device) == priced


def test_exported_names() -> None:
    assert len(training.__all__) == len(set(training.__all__))
    assert all(hasattr(training, name) for name in training.__all__)
    assert {"fit", "launch", "CheckpointManager", "seed_everything", "GpuUsage"} <= set(training.__all__)
