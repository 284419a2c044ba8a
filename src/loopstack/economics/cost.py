"""What a training job costs: time from tokens or steps, price by purchase model, spot risk, buy-vs-rent.

* Training compute: ``6 * N * D`` FLOPs for N parameters and D tokens
  (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1;
  Hoffmann et al. 2022, "Chinchilla"). With recomputation the forward runs
  twice: ``8 * N * D`` (Korthikanti et al. 2022, section 5). Throughput from
  a model-FLOPs utilization (MFU, Chowdhery et al. 2022, "PaLM", appendix B).
* Spot: checkpoints every tau seconds cost c each; a preemption loses on
  average tau/2 of work plus a restart R. Young 1974 ("A first order
  approximation to the optimum checkpoint interval") gives the interval that
  minimizes the waste: ``tau = sqrt(2 * c * MTBF)``.
* Break-even: a bought card costs F a year whether used or not plus energy
  e per busy hour; renting costs p per busy hour. They are equal at
  utilization ``u = F / (8760 * (p - e))``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from loopstack.core.errors import ConfigError
from loopstack.economics.models import ModelConfig, get_model
from loopstack.economics.prices import HOURS_PER_YEAR, GpuType, Pricing, default_prices


def training_flops(model: ModelConfig | str | int, tokens: float, recompute: bool = False) -> float:
    """FLOPs to train on `tokens` tokens: 6ND, or 8ND with full activation recomputation.

    Mixture-of-experts models count their active parameters.

    Examples
    --------
    Chinchilla (70B parameters, 1.4T tokens): 5.88e23 FLOPs.

    >>> f"{training_flops(70e9, 1.4e12):.3g}"
    '5.88e+23'
    """
    if isinstance(model, numbers.Real):  # a parameter count: int, float or a NumPy scalar
        params = _amount("model", model, positive=True)
    else:
        params = get_model(model).active_parameters()
    return (8 if recompute else 6) * params * _amount("tokens", tokens)


def _amount(key: str, value: object, *, positive: bool = False) -> float:
    """`value` as a float, or a ConfigError naming it: a NaN or negative count or time would flow silently into
    every cost computed from it; True is no amount either."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
            and (value > 0 if positive else value >= 0):
        return float(value)
    raise ConfigError(f"{key}={value!r} must be a {'positive' if positive else 'non-negative'} finite number")


def _cards(value: object) -> int:
    """`gpus` as an int, or a ConfigError naming it: a negative count made a negative throughput, a NaN one
    a NaN cost (``nan < 1`` is False), and True passed as one card."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ConfigError(f"gpus={value!r} must be a whole number of cards, at least 1, e.g. gpus=8")


def tokens_per_second(model: ModelConfig | str | int, gpu: GpuType, gpus: int = 1, mfu: float = 0.4) -> float:
    """Training throughput of `gpus` cards at model-FLOPs utilization `mfu`.

    Examples
    --------
    >>> gpu = default_prices().gpu("H100-80GB")
    >>> round(tokens_per_second(7e9, gpu, gpus=8, mfu=0.4))
    75352
    """
    if not (isinstance(mfu, numbers.Real) and 0 < mfu <= 1):
        raise ConfigError(f"mfu={mfu!r} must be in (0, 1]; 0.3-0.5 is typical for large-model training")
    return _cards(gpus) * gpu.bf16_tflops * 1e12 * mfu / training_flops(model, 1)


def job_seconds(
    *,
    tokens: float | None = None,
    tokens_per_second: float | None = None,
    steps: int | None = None,
    seconds_per_step: float | None = None,
) -> float:
    """Wall-clock seconds of a job from tokens and a measured throughput, or steps and step time.

    Examples
    --------
    >>> job_seconds(tokens=1e9, tokens_per_second=50_000)
    20000.0
    >>> job_seconds(steps=1000, seconds_per_step=1.5)
    1500.0
    """
    if tokens is not None and tokens_per_second is not None:
        return _amount("tokens", tokens) / _amount("tokens_per_second", tokens_per_second, positive=True)
    if steps is not None and seconds_per_step is not None:
        return _amount("steps", steps) * _amount("seconds_per_step", seconds_per_step)
    raise ConfigError("give tokens and tokens_per_second, or steps and seconds_per_step")


@dataclass(frozen=True)
class JobCost:
    """The price of one job: its GPU-hours, rate and total."""

    gpu: str
    gpus: int
    pricing: str
    wall_hours: float
    gpu_hours: float
    hourly_rate: float
    cost: float


def job_cost(
    gpu: GpuType | str,
    gpus: int,
    seconds: float,
    pricing: Pricing = "on_demand",
    utilization: float = 1.0,
) -> JobCost:
    """Cost of running `gpus` cards for `seconds` under `pricing`.

    For spot, pass the expected wall time from `spot_plan` so preemptions are
    paid for. For owned cards `utilization` is the share of the year the card
    is busy, which spreads its fixed cost.

    Examples
    --------
    >>> job_cost("A100-80GB", 8, seconds=3600 * 10).cost
    160.0
    """
    gpu_type = default_prices().gpu(gpu) if isinstance(gpu, str) else gpu
    gpus = _cards(gpus)
    hours = _amount("seconds", seconds) / 3600
    rate = gpu_type.hourly(pricing, utilization)
    return JobCost(gpu_type.name, gpus, pricing, hours, hours * gpus, rate, hours * gpus * rate)


@dataclass(frozen=True)
class SpotPlan:
    """Expected behaviour of a job on preemptible capacity."""

    work_hours: float
    checkpoint_interval_s: float
    expected_wall_hours: float
    expected_preemptions: float
    overhead: float  # expected_wall_hours / work_hours - 1


def young_interval(checkpoint_seconds: float, preemptions_per_hour: float) -> float:
    """Young's (1974) optimal checkpoint interval in seconds: sqrt(2 * c * MTBF).

    Examples
    --------
    A 60 s checkpoint and one preemption every 5 hours: every 24.5 minutes.

    >>> round(young_interval(60, 0.2) / 60, 1)
    24.5
    """
    if checkpoint_seconds <= 0 or preemptions_per_hour <= 0:
        raise ConfigError("checkpoint_seconds and preemptions_per_hour must be positive for Young's interval")
    return math.sqrt(2 * checkpoint_seconds * 3600 / preemptions_per_hour)


def spot_plan(
    work_seconds: float,
    *,
    preemptions_per_hour: float,
    checkpoint_seconds: float,
    restart_seconds: float = 300.0,
    checkpoint_interval_s: float | None = None,
) -> SpotPlan:
    """Expected wall time of `work_seconds` of training on spot capacity.

    Each interval tau of work costs ``tau + c`` seconds; preemptions arrive at
    rate lambda per second of wall time and each loses tau/2 of work on average
    plus the restart R. The expected wall time W solves
    ``W = T(1 + c/tau) + lambda * W * (tau/2 + R)``, i.e.
    ``W = T(1 + c/tau) / (1 - lambda(tau/2 + R))`` (first-order model of Young
    1974 and Daly 2006). The interval defaults to Young's optimum.

    Examples
    --------
    >>> plan = spot_plan(10 * 3600, preemptions_per_hour=0.2, checkpoint_seconds=60)
    >>> round(plan.expected_wall_hours, 2), round(plan.expected_preemptions, 2)
    (11.04, 2.21)
    """
    rate = preemptions_per_hour / 3600
    numbers = {"work_seconds": work_seconds, "preemptions_per_hour": preemptions_per_hour,
               "checkpoint_seconds": checkpoint_seconds, "restart_seconds": restart_seconds}
    for key, value in numbers.items():
        if not 0 <= value < math.inf:  # NaN fails too: it would turn every expectation into NaN
            raise ConfigError(f"{key}={value!r} must be a non-negative finite number")
    if checkpoint_interval_s is not None and not 0 < checkpoint_interval_s < math.inf:
        raise ConfigError(f"checkpoint_interval_s={checkpoint_interval_s!r} must be a positive number of seconds, "
                          "or None for Young's interval")
    if rate == 0:
        tau = checkpoint_interval_s or math.inf
        wall = work_seconds * (1 + (checkpoint_seconds / tau if math.isfinite(tau) else 0))
        return SpotPlan(work_seconds / 3600, tau, wall / 3600, 0.0, _overhead(wall, work_seconds))
    tau = checkpoint_interval_s or young_interval(checkpoint_seconds, preemptions_per_hour)
    lost_share = rate * (tau / 2 + restart_seconds)
    if lost_share >= 1:
        raise ConfigError(
            f"at {preemptions_per_hour} preemptions/hour a {tau:.0f} s checkpoint interval never finishes; "
            "checkpoint more often or use on-demand capacity"
        )
    wall = work_seconds * (1 + checkpoint_seconds / tau) / (1 - lost_share)
    return SpotPlan(work_seconds / 3600, tau, wall / 3600, rate * wall, _overhead(wall, work_seconds))


def _overhead(wall: float, work: float) -> float:
    """Extra wall time as a share of the work (0 for no work, where the share is undefined)."""
    return wall / work - 1 if work else 0.0


def break_even_utilization(gpu: GpuType | str, pricing: Pricing = "on_demand") -> float:
    """The share of the year a bought card must be busy to be cheaper than renting it.

    ``F / (8760 * (p - e))`` with F the yearly fixed cost of owning, p the
    rental price per hour and e the energy cost of a busy hour. Returns
    ``inf`` when renting is cheaper even at 100% (or than the energy alone);
    a value above 1 means owning never pays within a year's hours.

    Examples
    --------
    >>> round(break_even_utilization("H100-80GB"), 3)
    0.278
    """
    gpu_type = default_prices().gpu(gpu) if isinstance(gpu, str) else gpu
    if gpu_type.owned is None:
        raise ConfigError(f"GPU {gpu_type.name!r} has no 'owned' costs in the price table; add them to compare")
    margin = gpu_type.hourly(pricing) - gpu_type.owned.energy_per_hour()
    if margin <= 0:
        return math.inf
    return gpu_type.owned.fixed_per_year() / (HOURS_PER_YEAR * margin)
