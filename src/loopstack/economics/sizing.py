"""Right-sizing: the cheapest GPU type and count that fits a job.

For each GPU type in the price table and each count (powers of two up to
`max_gpus`), the memory estimator says whether one card holds its share; for
training the job runs with ZeRO stage 3 / FSDP FULL_SHARD over the cards
(the sharding that lets more cards fit a bigger model), and its time comes from
``6ND`` FLOPs at the given MFU. Inference shards weights and KV cache with
tensor parallelism. Plans are ranked by the cost of the job, then by time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.economics.cost import job_cost, spot_plan, tokens_per_second
from loopstack.economics.inference import inference_memory
from loopstack.economics.memory import GB, MemoryEstimate, training_memory
from loopstack.economics.models import ModelConfig, get_model
from loopstack.economics.prices import PRICINGS, GpuType, PriceTable, Pricing, default_prices


@dataclass(frozen=True)
class Plan:
    """One way to run the job: which cards, how many, how long, for how much."""

    gpu: str
    gpus: int
    pricing: str
    memory_per_gpu_gb: float
    gpu_memory_gb: float
    fits: bool
    hours: float
    cost: float
    hourly_rate: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _counts(max_gpus: int) -> list[int]:
    counts, n = [], 1
    while n <= max_gpus:
        counts.append(n)
        n *= 2
    return counts


def _memory(model: ModelConfig, workload: str, gpus: int, options: dict[str, Any]) -> MemoryEstimate:
    if workload == "training":
        stage = options.pop("zero_stage", 3)
        return training_memory(model, gpus=gpus, zero_stage=stage if gpus > 1 else 0, **options)
    if workload == "inference":
        return inference_memory(model, tensor_parallel=gpus, **options)
    raise ConfigError(f"workload={workload!r} must be 'training' or 'inference'")


def plan_options(
    model: ModelConfig | str,
    *,
    workload: str = "training",
    tokens: float = 1e9,
    hours: float = 1.0,
    mfu: float = 0.4,
    pricing: Pricing = "on_demand",
    utilization: float = 1.0,
    prices: PriceTable | None = None,
    max_gpus: int = 64,
    headroom: float = 0.1,
    preemptions_per_hour: float = 0.1,
    checkpoint_seconds: float = 120.0,
    **memory_options: Any,
) -> list[Plan]:
    """Every (GPU type, count) the price table offers under `pricing`, cheapest fitting first.

    Training jobs cost the time to process `tokens`; inference jobs cost
    `hours` of serving. A plan fits when the estimate is at most
    ``(1 - headroom)`` of the card's memory; for each GPU type only the
    smallest count that fits is kept (more cards cost more at equal MFU),
    plus non-fitting rows when nothing fits, so the table still explains why.
    Spot training time includes checkpoints and expected preemptions
    (`spot_plan` with `preemptions_per_hour` and `checkpoint_seconds`).

    Examples
    --------
    >>> best = plan_options("llama-2-7b", tokens=1e8, method="qlora", recompute="full")[0]
    >>> best.fits, best.gpus
    (True, 1)
    """
    m = get_model(model)
    table = prices or default_prices()
    if not 0 <= headroom < 1:
        raise ConfigError(f"headroom={headroom!r} must be a share of GPU memory kept free, in [0, 1)")
    offered = [gpu for gpu in table.gpus.values() if gpu.offers(pricing)]
    if not offered:  # an empty table would print an empty plan and say nothing about why
        raise ConfigError(f"no GPU in the price table has a {pricing!r} price; use one of {', '.join(PRICINGS)} "
                          "and add that price to the table")
    plans: list[Plan] = []
    for gpu in offered:
        spot = (preemptions_per_hour, checkpoint_seconds) if pricing == "spot" and workload == "training" else None
        plans.extend(_plans_for(m, gpu, workload, tokens, hours, mfu, pricing, utilization, max_gpus, headroom,
                                spot, memory_options))
    fitting = [p for p in plans if p.fits]
    if fitting:
        best_per_gpu: dict[str, Plan] = {}
        for plan in fitting:
            best_per_gpu.setdefault(plan.gpu, plan)
        return sorted(best_per_gpu.values(), key=lambda p: (p.cost, p.gpus, p.hours))
    return sorted(plans, key=lambda p: p.memory_per_gpu_gb - p.gpu_memory_gb)


def _plans_for(
    m: ModelConfig, gpu: GpuType, workload: str, tokens: float, hours: float, mfu: float, pricing: Pricing,
    utilization: float, max_gpus: int, headroom: float, spot: tuple[float, float] | None, options: dict[str, Any],
) -> list[Plan]:
    plans = []
    for n in _counts(max_gpus):
        if workload == "inference" and m.heads % n:
            continue  # tensor parallelism must split the attention heads evenly
        need = _memory(m, workload, n, dict(options)).total / GB
        seconds = tokens / tokens_per_second(m, gpu, n, mfu) if workload == "training" else hours * 3600
        if spot is not None:
            expected = spot_plan(seconds, preemptions_per_hour=spot[0], checkpoint_seconds=spot[1])
            seconds = expected.expected_wall_hours * 3600
        cost = job_cost(gpu, n, seconds, pricing, utilization)
        fits = need <= gpu.memory_gb * (1 - headroom)
        plans.append(Plan(gpu.name, n, pricing, need, gpu.memory_gb, fits, seconds / 3600, cost.cost, cost.hourly_rate))
        if fits:
            break
    return plans


def right_size(model: ModelConfig | str, **options: Any) -> Plan:
    """The cheapest plan that fits; raises ConfigError when none does.

    Examples
    --------
    >>> plan = right_size("llama-2-70b", workload="inference", dtype="bf16", context=4096, batch=1)
    >>> plan.gpu, plan.gpus
    ('L40S', 4)
    """
    plans = plan_options(model, **options)
    if not plans or not plans[0].fits:
        largest = max((p.gpus for p in plans), default=0)
        raise ConfigError(
            f"no GPU in the price table fits {get_model(model).name} with up to {largest} cards; "
            "raise max_gpus, shard more (zero_stage=3), recompute activations, or quantize"
        )
    return plans[0]
