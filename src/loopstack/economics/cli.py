"""``loopstack gpu ...``: memory estimates, right-sizing plans and break-even, printed as tables.

The commands print what the Python API returns; nothing here computes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from loopstack.core.errors import ConfigError, NotFoundError
from loopstack.economics import cost, inference, memory, models, prices, sizing

_PRICINGS = click.Choice(list(prices.PRICINGS))


def _model(name: str) -> models.ModelConfig:
    """A preset name, or a path to a Hugging Face config.json."""
    path = Path(name)
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"model config {name} does not exist; pass a config.json path or a preset name "
                              "(`loopstack gpu models` lists them)")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"model config {name} is not JSON ({exc}); pass a Hugging Face config.json") from None
        return models.from_hf_config(config, name=path.stem)
    try:
        return models.get_model(name)
    except NotFoundError:
        # The API's fix (build a ModelConfig) means nothing on the command line; a config.json does.
        raise NotFoundError(f"no model preset {name!r}; pass a preset name (`loopstack gpu models` lists them: "
                            f"{', '.join(sorted(models.PRESETS))}) or the path of a Hugging Face config.json") from None


def _console() -> Console:
    return Console(width=120)


@click.group("gpu")
def gpu() -> None:
    """GPU memory estimates, cost plans and buy-versus-rent break-even."""


@gpu.command("models")
def list_models() -> None:
    """List the model presets with their parameter counts."""
    table = Table("preset", "parameters", "active", "layers", "hidden", "heads/kv", "context", "source")
    for m in models.PRESETS.values():
        table.add_row(m.name, f"{m.parameters() / 1e9:.2f}B", f"{m.active_parameters() / 1e9:.2f}B", str(m.layers),
                      str(m.hidden), f"{m.heads}/{m.kv}", str(m.max_context), m.source)
    _console().print(table)


@gpu.command("estimate")
@click.argument("model")
@click.option("--workload", type=click.Choice(["training", "inference"]), default="training", show_default=True,
              help="Train or serve the model, as in gpu plan.")
@click.option("--method", type=click.Choice(["full", "lora", "qlora", "inference"]), default="full", show_default=True,
              help="Training method (--method inference is --workload inference).")
@click.option("--seq", type=int, default=2048, show_default=True, help="Training sequence length.")
@click.option("--batch", type=int, default=1, show_default=True, help="Micro-batch (training) or concurrent sequences.")
@click.option("--gpus", type=int, default=1, show_default=True, help="Data-parallel GPUs (training).")
@click.option("--zero", "--zero-stage", "zero_stage", type=click.IntRange(0, 3), default=0, show_default=True,
              help="ZeRO stage.")
@click.option("--fsdp", type=click.Choice(list(memory.FSDP_STRATEGIES)), help="FSDP strategy (sets --zero).")
@click.option("--optimizer", type=click.Choice(list(memory.OPTIMIZERS)), default="adam-mixed", show_default=True)
@click.option("--recompute", type=click.Choice(["none", "selective", "full"]), default="none", show_default=True)
@click.option("--flash-attention", is_flag=True, help="No s x s attention scores kept.")
@click.option("--rank", "--lora-rank", "lora_rank", type=click.IntRange(1), default=16, show_default=True,
              help="LoRA rank.")
@click.option("--targets", default="q,k,v,o,gate,up,down", show_default=True, help="LoRA target matrices.")
@click.option("--dtype", default="bf16", show_default=True, help="Inference weight dtype: fp32, bf16, int8, int4, nf4.")
@click.option("--context", type=click.IntRange(1), help="Inference context length (default: the model's maximum).")
@click.option("--tp", "--tensor-parallel", "tensor_parallel", type=int, default=1, show_default=True,
              help="Tensor-parallel GPUs.")
def estimate(model: str, workload: str, method: str, fsdp: str | None, targets: str, **opts: Any) -> None:
    """Memory per GPU to train or serve MODEL (a preset name or a config.json path)."""
    if workload == "inference" and method in ("lora", "qlora"):
        raise click.BadParameter(f"--method {method} is a training method; drop it for --workload inference",
                                 param_hint="--method")
    if workload == "inference":
        method = "inference"
    m = _model(model)
    if method == "inference":
        est = inference.inference_memory(m, dtype=opts["dtype"], context=opts["context"], batch=opts["batch"],
                                         tensor_parallel=opts["tensor_parallel"])
    else:
        if fsdp:
            opts["zero_stage"] = memory.fsdp_stage(fsdp)
        keys = ("seq", "batch", "gpus", "zero_stage", "optimizer", "recompute", "flash_attention",
                "lora_rank", "tensor_parallel")
        est = memory.training_memory(m, method=method, lora_targets=targets.split(","),  # type: ignore[arg-type]
                                     **{k: opts[k] for k in keys})
    table = Table("part", "GiB per GPU", "GB per GPU", title=f"{m.name}: {method}")
    for part, value in est.as_dict(memory.GiB).items():
        if value or part == "total":
            label = "overhead (20%)" if method == "inference" and part == "activations" else part
            table.add_row(label, f"{value:,.2f}", f"{value * memory.GiB / memory.GB:,.2f}")
    console = _console()
    console.print(table)
    for note in est.notes:
        console.print(f"  {note}")


@gpu.command("plan")
@click.argument("model")
@click.option("--workload", type=click.Choice(["training", "inference"]), default="training", show_default=True)
@click.option("--tokens", type=click.FloatRange(0, min_open=True), default=1e9, show_default=True,
              help="Training tokens.")
@click.option("--hours", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Inference: hours of serving to price.")
@click.option("--method", type=click.Choice(["full", "lora", "qlora"]), default="full", show_default=True,
              help="Training method (--workload training).")
@click.option("--seq", type=int, default=2048, show_default=True, help="Training sequence length.")
@click.option("--recompute", type=click.Choice(["none", "selective", "full"]), default="selective", show_default=True)
@click.option("--dtype", default="bf16", show_default=True, help="Inference weight dtype: fp32, bf16, int8, int4, nf4.")
@click.option("--context", type=click.IntRange(1), help="Inference context length (default: the model's maximum).")
@click.option("--mfu", type=float, default=0.4, show_default=True, help="Model-FLOPs utilization for training time.")
@click.option("--pricing", type=_PRICINGS, default="on_demand", show_default=True)
@click.option("--utilization", type=click.FloatRange(0, 1, min_open=True), default=0.7, show_default=True,
              help="Owned cards: busy share of a year.")
@click.option("--max-gpus", type=click.IntRange(1), default=64, show_default=True,
              help="Most cards of one type a plan may use.")
@click.option("--preemptions-per-hour", type=float, default=0.1, show_default=True, help="Spot: expected rate.")
@click.option("--checkpoint-seconds", type=float, default=120.0, show_default=True, help="Spot: time to save.")
@click.option("--prices", "prices_path", type=click.Path(exists=True, dir_okay=False), help="A YAML price table.")
def plan(model: str, workload: str, method: str, seq: int, recompute: str, dtype: str, context: int | None,
         prices_path: str | None, **opts: Any) -> None:
    """The cheapest GPU type and count for MODEL, with every alternative."""
    table_prices = prices.PriceTable.load(prices_path) if prices_path else prices.default_prices()
    m = _model(model)
    extra: dict[str, Any] = (
        {"method": method, "seq": seq, "recompute": recompute} if workload == "training"
        else {"dtype": dtype, "context": context}
    )
    plans = sizing.plan_options(m, workload=workload, prices=table_prices, **opts, **extra)
    what = f"{opts['tokens']:.3g} tokens, {method}" if workload == "training" else f"{opts['hours']:g} h serving"
    table = Table("gpu", "count", "GB/GPU needed", "GB/GPU", "fits", "hours", f"cost ({table_prices.currency})",
                  "rate/GPU-h", title=f"{m.name}: {what}, {opts['pricing']}")
    for p in plans:
        table.add_row(p.gpu, str(p.gpus), f"{p.memory_per_gpu_gb:,.1f}", f"{p.gpu_memory_gb:g}",
                      "yes" if p.fits else "no", f"{p.hours:,.2f}", f"{p.cost:,.2f}", f"{p.hourly_rate:.2f}")
    _console().print(table)


@gpu.command("breakeven")
@click.option("--pricing", type=click.Choice(["on_demand", "spot", "reserved"]), default="on_demand", show_default=True)
@click.option("--prices", "prices_path", type=click.Path(exists=True, dir_okay=False), help="A YAML price table.")
def breakeven(pricing: str, prices_path: str | None) -> None:
    """Utilization above which buying a GPU is cheaper than renting it."""
    table_prices = prices.PriceTable.load(prices_path) if prices_path else prices.default_prices()
    table = Table("gpu", f"rent/h ({pricing})", "own fixed/yr", "energy/h", "break-even utilization",
                  title="buy versus rent")
    for g in table_prices.gpus.values():
        if g.owned is None or not g.offers(pricing):
            continue
        u = cost.break_even_utilization(g, pricing)  # type: ignore[arg-type]
        shown = "never" if not math.isfinite(u) or u > 1 else f"{u:.1%}"
        table.add_row(g.name, f"{g.hourly(pricing):.2f}", f"{g.owned.fixed_per_year():,.0f}",  # type: ignore[arg-type]
                      f"{g.owned.energy_per_hour():.3f}", shown)
    _console().print(table)


__all__ = ["gpu"]
