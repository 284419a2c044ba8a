"""GPU check of the training code: recording, determinism and the memory estimator on a real GPU.

Run on a machine with CUDA (the CPU here has none):

    python bench/gpu_check.py            # prints a report; exits non-zero if a check fails

It trains loopstack's TinyTransformer with `fit` under `GpuUsage` inside a
tracked run, and checks that (1) the run records GPU type, peak memory and
GPU-seconds; (2) two seeded runs in deterministic mode end with bit-identical
weights on the GPU; (3) the measured model-state memory of mixed-precision
Adam matches `loopstack.economics.training_memory`, and how far eager
PyTorch's activation memory is from the Korthikanti et al. formula.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import torch

import loopstack as ls
from loopstack.economics import ModelConfig, training_memory
from loopstack.training import GpuUsage, ResumableLoader, TinyTransformer, TrainConfig, fit, lm_loss, seed_everything

CONFIG = ModelConfig("gpu-check", layers=4, hidden=512, heads=8, kv_heads=8, vocab=8000, intermediate=2048)
SEQ, BATCH = 256, 8


def data(device: str) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randint(0, CONFIG.vocab, (BATCH * 16, SEQ), generator=generator).to(device),)


def train(device: str, steps: int, precision: str = "bf16", checkpointing: bool = False) -> TinyTransformer:
    seed_everything(0, deterministic=True)
    model = TinyTransformer(CONFIG).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = TrainConfig(steps=steps, precision=precision, grad_checkpointing=checkpointing)  # type: ignore[arg-type]
    fit(model, optimizer, ResumableLoader(data(device), BATCH), lm_loss, config)
    return model


def model_state_bytes(device: str) -> tuple[int, int]:
    """Memory held by weights, grads and Adam states after a step, and the step's peak."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model = TinyTransformer(CONFIG).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    (tokens,) = data(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = lm_loss(model, (tokens[:BATCH],))
    loss.backward()
    optimizer.step()
    states = torch.cuda.memory_allocated() - base
    peak = torch.cuda.max_memory_allocated() - base
    del model, optimizer, loss
    return states, peak


def main() -> int:
    device = "cuda"
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU")
        return 2
    failures = []
    report: dict[str, object] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    project = ls.Project.init(tempfile.mkdtemp(), name="gpu-check")

    # 1. a tracked run records GPU type, peak memory and GPU-seconds
    with ls.start_run(run_name="gpu-fit") as run, GpuUsage() as usage:
        started = time.perf_counter()
        train(device, steps=30)
        torch.cuda.synchronize()
        report["fit_30_steps_s"] = round(time.perf_counter() - started, 3)
    stored = ls.Client(project).get_run(run.id)
    recorded = {k: v for k, v in stored.metrics.items() if k.startswith(("gpu.", "system.gpu"))}
    report["recorded"] = {"tag": stored.tags.get("gpu.type"), **recorded}
    if not stored.tags.get("gpu.type") or not recorded.get("gpu.memory_peak_bytes") or not recorded.get("gpu.seconds"):
        failures.append("run did not record gpu.type / gpu.memory_peak_bytes / gpu.seconds")
    if "system.gpu_peak_memory_mb" not in stored.metrics:
        failures.append("tracking's resource sampler did not record system.gpu_peak_memory_mb")
    report["usage_present"] = usage.present

    # 2. determinism on the GPU
    first = train(device, steps=10)
    second = train(device, steps=10)
    identical = all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(),
                                                         strict=True))
    report["deterministic_bit_identical"] = identical
    if not identical:
        failures.append("two seeded deterministic runs differ on the GPU")

    # 3. the memory estimator against the allocator
    states, peak = model_state_bytes(device)
    estimate = training_memory(CONFIG, seq=SEQ, batch=BATCH, optimizer="adam-mixed")
    predicted_states = estimate.weights + estimate.gradients + estimate.optimizer
    report["model_states_measured_mb"] = round(states / 2**20, 1)
    report["model_states_estimated_mb"] = round(predicted_states / 2**20, 1)
    report["activations_measured_mb"] = round((peak - states) / 2**20, 1)
    report["activations_estimated_mb"] = round(estimate.activations / 2**20, 1)
    if abs(states - predicted_states) > 0.1 * predicted_states:
        failures.append(f"model states {states} bytes vs estimate {predicted_states:.0f} (>10% apart)")

    # 4. the training switches' effect on peak memory (bf16, gradient checkpointing)
    for precision, checkpointing in (("fp32", False), ("bf16", False), ("bf16", True)):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        train(device, steps=10, precision=precision, checkpointing=checkpointing)
        torch.cuda.synchronize()
        key = f"{precision}{'+ckpt' if checkpointing else ''}"
        report[f"peak_mb_{key}"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        report[f"seconds_10_steps_{key}"] = round(time.perf_counter() - started, 3)

    project.close()
    print(json.dumps(report, indent=1))
    for failure in failures:
        print("FAILED:", failure)
    print("gpu check:", "all passed" if not failures else f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
