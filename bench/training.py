"""Training switches on a small transformer: their effect on activation memory and step time.

Runs `loopstack.training.fit` on a TinyTransformer with each switch (fp32,
bf16 autocast, gradient accumulation, gradient checkpointing) and reports
seconds per optimizer step and the bytes autograd keeps for backward
(measured with saved-tensor hooks; on a GPU also the CUDA peak), next to the
economics estimator's prediction for the same shape. It also runs a
hand-written PyTorch loop (the anchor) on the same data and checks that
`fit` ends with bit-identical weights, and prints the loop's overhead.

    .venv/bin/python bench/training.py [--steps 6] [--seq 128] [--batch 8] [--hidden 128] [--threads 1]

On a CPU without native bfloat16 the bf16 rows are emulated and slow; their
memory column is still meaningful.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

import torch

from loopstack.economics import ModelConfig, activation_bytes
from loopstack.training import ResumableLoader, TinyTransformer, TrainConfig, fit, lm_loss, seed_everything

SWITCHES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16 autocast": {"precision": "bf16"},
    "grad accumulation x4": {"grad_accumulation": 4},
    "grad checkpointing": {"grad_checkpointing": True},
    "bf16 + checkpointing": {"precision": "bf16", "grad_checkpointing": True},
}


class SavedBytes:
    """Sum the bytes of tensors autograd saves for backward, per micro-batch peak."""

    def __init__(self) -> None:
        self.current = self.peak = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.current += t.numel() * t.element_size()
        self.peak = max(self.peak, self.current)
        return t

    def reset(self, *_: Any) -> None:
        self.current = 0


def run(config: ModelConfig, data: torch.Tensor, batch: int, steps: int, switches: dict[str, Any]) -> dict[str, float]:
    seed_everything(0)
    model = TinyTransformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    micro = batch // switches.get("grad_accumulation", 1)
    loader = ResumableLoader((data,), micro, shuffle=False)
    saved = SavedBytes()
    cuda = torch.cuda.is_available()
    if cuda:
        model.cuda()
        torch.cuda.reset_peak_memory_stats()

    def loss_fn(m: torch.nn.Module, b: Any) -> torch.Tensor:
        saved.reset()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            return lm_loss(m, b)

    fit(model, optimizer, loader, loss_fn, TrainConfig(steps=1, **switches))  # warm-up step
    start = time.perf_counter()
    fit(model, optimizer, loader, loss_fn, TrainConfig(steps=steps, **switches))
    out = {"s_per_step": (time.perf_counter() - start) / steps, "saved_mb": saved.peak / 1e6}
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 1e6
    return out


def anchor_agrees(config: ModelConfig, data: torch.Tensor, batch: int, steps: int) -> tuple[bool, float]:
    """A plain PyTorch loop on the same batches; True when `fit` gives bit-identical weights."""
    timings, finals = [], []
    for use_fit in (False, True):
        seed_everything(0)
        model = TinyTransformer(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        start = time.perf_counter()
        if use_fit:
            fit(model, optimizer, ResumableLoader((data,), batch, shuffle=False), lm_loss, TrainConfig(steps=steps))
        else:
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                lm_loss(model, (data[step * batch : (step + 1) * batch],)).backward()
                optimizer.step()
        timings.append(time.perf_counter() - start)
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return torch.equal(finals[0], finals[1]), timings[1] / timings[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1 on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ModelConfig("bench", layers=args.layers, hidden=args.hidden, heads=args.hidden // 64, vocab=4096,
                         intermediate=4 * args.hidden, gated_mlp=False)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, config.vocab, (args.batch * (args.steps + 2), args.seq + 1), generator=g)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads; {config.parameters():,} "
          f"parameters, batch {args.batch} x {args.seq} tokens, {args.steps} steps")
    estimate = {r: activation_bytes(config, seq=args.seq, batch=args.batch, recompute=r) / 1e6
                for r in ("none", "full")}
    print(f"estimator (Korthikanti et al., 16-bit): {estimate['none']:.1f} MB without recomputation, "
          f"{estimate['full']:.1f} MB with full recomputation (per full batch)")
    base = None
    for name, switches in SWITCHES.items():
        result = run(config, data, args.batch, args.steps, switches)
        base = base or result
        extra = f", CUDA peak {result['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in result else ""
        print(f"{name:>22}: {result['s_per_step']:.3f} s/step ({result['s_per_step'] / base['s_per_step']:.2f}x), "
              f"saved for backward {result['saved_mb']:.1f} MB per micro-batch "
              f"({result['saved_mb'] / base['saved_mb']:.2f}x){extra}")
    same, ratio = anchor_agrees(config, data, args.batch, args.steps)
    print(f"anchor (plain PyTorch loop): identical weights={same}, fit/plain time ratio {ratio:.2f}")
    if not same:
        raise SystemExit("fit and the plain loop disagree")


if __name__ == "__main__":
    main()
