"""GPU economics: how much memory a model needs, which GPUs fit it, and what a job costs.

No torch needed: everything is arithmetic over a model's shape and an editable
price table. Each formula cites its source paper in its docstring and in
docs/economics.md.

Examples
--------
>>> from loopstack import economics as ec
>>> round(ec.training_memory("llama-3-8b", method="qlora", recompute="full").total / 2**30, 1)
7.4
>>> ec.right_size("llama-3-8b", workload="inference", context=8192).gpu
'L4'
"""

from loopstack.economics.accounting import UsageMeter, meter, prometheus_text
from loopstack.economics.cost import (
    JobCost,
    SpotPlan,
    break_even_utilization,
    job_cost,
    job_seconds,
    spot_plan,
    tokens_per_second,
    training_flops,
    young_interval,
)
from loopstack.economics.inference import (
    bytes_per_value,
    inference_memory,
    kv_cache_bytes,
    max_batch,
    weight_bytes,
)
from loopstack.economics.memory import (
    GB,
    OPTIMIZERS,
    GiB,
    MemoryEstimate,
    activation_bytes,
    activation_bytes_per_layer,
    fsdp_stage,
    lora_parameters,
    model_states,
    nf4_bits_per_param,
    qlora_base_bytes,
    training_memory,
)
from loopstack.economics.models import PRESETS, ModelConfig, get_model
from loopstack.economics.prices import CloudPrice, GpuType, OwnedCost, PriceTable, default_prices
from loopstack.economics.sizing import Plan, plan_options, right_size

__all__ = [
    # model shapes
    "ModelConfig",
    "PRESETS",
    "get_model",
    # training memory
    "MemoryEstimate",
    "OPTIMIZERS",
    "GB",
    "GiB",
    "model_states",
    "fsdp_stage",
    "activation_bytes",
    "activation_bytes_per_layer",
    "lora_parameters",
    "nf4_bits_per_param",
    "qlora_base_bytes",
    "training_memory",
    # inference memory
    "bytes_per_value",
    "weight_bytes",
    "kv_cache_bytes",
    "inference_memory",
    "max_batch",
    # prices and costs
    "PriceTable",
    "GpuType",
    "CloudPrice",
    "OwnedCost",
    "default_prices",
    "training_flops",
    "tokens_per_second",
    "job_seconds",
    "job_cost",
    "JobCost",
    "spot_plan",
    "SpotPlan",
    "young_interval",
    "break_even_utilization",
    # right-sizing
    "Plan",
    "plan_options",
    "right_size",
    # live accounting
    "UsageMeter",
    "meter",
    "prometheus_text",
]
