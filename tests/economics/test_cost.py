"""Cost arithmetic, spot expectations, break-even and right-sizing."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopstack.core.errors import ConfigError, NotFoundError
from loopstack.economics import (
    OwnedCost,
    PriceTable,
    break_even_utilization,
    default_prices,
    get_model,
    job_cost,
    job_seconds,
    plan_options,
    right_size,
    spot_plan,
    tokens_per_second,
    training_flops,
    training_memory,
    young_interval,
)

TABLE = {
    "currency": "EUR",
    "gpus": {
        "X": {"memory_gb": 80, "bf16_tflops": 100, "cloud": {"on_demand": 2.0, "spot": 1.0},
              "owned": {"purchase": 10000, "power_w": 500, "pue": 1.5, "electricity": 0.2, "staff_per_year": 500,
                        "depreciation_years": 5, "residual_value": 1000}},
        "Small": {"memory_gb": 16, "bf16_tflops": 50, "cloud": {"on_demand": 2.0}},
    },
}


def test_default_table_parses_and_every_gpu_has_a_price() -> None:
    table = default_prices()
    assert {"H100-80GB", "A100-80GB", "L4"} <= set(table.gpus)
    for gpu in table.gpus.values():
        assert gpu.cloud is not None or gpu.owned is not None


def test_edited_yaml_table_loads_and_errors_name_the_field(tmp_path: Path) -> None:
    import yaml

    good = tmp_path / "prices.yaml"
    good.write_text(yaml.safe_dump(TABLE))
    table = PriceTable.load(good)
    assert table.currency == "EUR" and table.gpu("x").hourly("spot") == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"gpus": {"X": {"memory_gb": -1, "bf16_tflops": 1}}}))
    with pytest.raises(ConfigError, match=r"gpus\.X\.memory_gb"):
        PriceTable.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.load(tmp_path / "missing.yaml")
    with pytest.raises(NotFoundError, match="'Y'"):
        table.gpu("Y")
    with pytest.raises(ConfigError, match="no cloud reserved price"):
        table.gpu("X").hourly("reserved")


def test_owned_hourly_cost_is_depreciation_staff_and_energy() -> None:
    owned = PriceTable.parse(TABLE).gpu("X").owned
    assert owned is not None
    # (10000 - 1000) / 5 years + 500 staff = 2300 a year; energy 0.5 kW * 1.5 * 0.2 = 0.15 per busy hour.
    assert owned.fixed_per_year() == 2300
    assert owned.energy_per_hour() == pytest.approx(0.15)
    assert owned.hourly(1.0) == pytest.approx(2300 / 8760 + 0.15)
    assert owned.hourly(0.25) == pytest.approx(4 * 2300 / 8760 + 0.15)


def test_break_even_utilization_closed_form() -> None:
    gpu = PriceTable.parse(TABLE).gpu("X")
    u = break_even_utilization(gpu)
    assert u == pytest.approx(2300 / (8760 * (2.0 - 0.15)))
    assert gpu.owned is not None and gpu.owned.hourly(u) == pytest.approx(2.0)
    assert break_even_utilization(gpu, "spot") > u  # cheaper renting takes longer to beat
    with pytest.raises(ConfigError, match="no 'owned' costs"):
        break_even_utilization(PriceTable.parse(TABLE).gpu("Small"))


def test_break_even_is_infinite_when_energy_alone_costs_more_than_renting() -> None:
    table = PriceTable.parse({"gpus": {"Z": {"memory_gb": 8, "bf16_tflops": 1, "cloud": {"on_demand": 0.01},
                                             "owned": {"purchase": 100, "power_w": 1000, "electricity": 1.0}}}})
    assert break_even_utilization(table.gpu("Z")) == math.inf


@given(
    purchase=st.floats(1000, 50000), rent=st.floats(0.5, 10), power=st.floats(50, 1000),
    staff=st.floats(0, 5000), years=st.floats(1, 8),
)
def test_owning_and_renting_cost_the_same_at_break_even(
    purchase: float, rent: float, power: float, staff: float, years: float
) -> None:
    owned = OwnedCost(purchase=purchase, power_w=power, staff_per_year=staff, depreciation_years=years)
    gpu = PriceTable.parse({"gpus": {"G": {"memory_gb": 1, "bf16_tflops": 1, "cloud": {"on_demand": rent},
                                           "owned": owned.model_dump()}}}).gpu("G")
    u = break_even_utilization(gpu)
    if u <= 1:
        assert owned.hourly(u) == pytest.approx(rent, rel=1e-9)
        assert owned.hourly(min(1.0, u * 1.5)) <= rent + 1e-9  # busier than break-even: owning is cheaper


def test_job_cost_is_hours_times_gpus_times_rate() -> None:
    cost = job_cost("H100-80GB", 8, seconds=90 * 60)
    assert cost.gpu_hours == 12 and cost.cost == 12 * 3.5
    owned = job_cost(PriceTable.parse(TABLE).gpu("X"), 2, 3600, pricing="owned", utilization=0.5)
    assert owned.cost == pytest.approx(2 * (2300 / (8760 * 0.5) + 0.15))


def test_job_time_from_tokens_steps_and_flops() -> None:
    assert job_seconds(tokens=3e9, tokens_per_second=1e5) == 30000
    assert job_seconds(steps=500, seconds_per_step=0.2) == 100
    with pytest.raises(ConfigError, match="tokens_per_second"):
        job_seconds(tokens=10)
    # Kaplan et al. 2020 / Hoffmann et al. 2022: C = 6ND; Chinchilla 70B x 1.4T tokens = 5.88e23 FLOPs.
    assert training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    # Mixtral trains its active parameters only.
    assert training_flops("mixtral-8x7b", 1) == 6 * get_model("mixtral-8x7b").active_parameters()
    gpu = default_prices().gpu("A100-80GB")
    assert tokens_per_second(1e9, gpu, gpus=2, mfu=0.5) == pytest.approx(2 * 312e12 * 0.5 / 6e9)


def test_numpy_counts_are_numbers() -> None:
    # A parameter count read from an array is a NumPy integer: it used to be looked up as a model name (AttributeError).
    assert training_flops(np.int64(7_000_000_000), np.float64(1e9)) == 6 * 7e9 * 1e9
    assert job_seconds(tokens=np.int64(3_000_000_000), tokens_per_second=np.float32(1e5)) == pytest.approx(30000)
    assert job_cost("H100-80GB", np.int64(8), seconds=np.float64(5400)).cost == 12 * 3.5


@pytest.mark.parametrize(("call", "named"), [
    (lambda: job_seconds(tokens=1e9, tokens_per_second=-5e4), r"tokens_per_second=-50000.0"),  # was -20000 s
    (lambda: job_seconds(tokens=1e9, tokens_per_second=0), r"tokens_per_second=0 "),
    (lambda: job_seconds(tokens=-1e9, tokens_per_second=5e4), r"tokens=-1000000000.0"),
    (lambda: job_seconds(steps=100, seconds_per_step=math.nan), r"seconds_per_step=nan"),
    (lambda: job_cost("H100-80GB", 8, seconds=math.nan), r"seconds=nan"),  # was a NaN cost
    (lambda: job_cost("H100-80GB", 8, seconds=math.inf), r"seconds=inf"),
    (lambda: training_flops(-7e9, 1e9), r"model=-7000000000.0"),
    (lambda: training_flops(np.int64(7), math.nan), r"tokens=nan"),
    (lambda: job_cost("A100-80GB", math.nan, 3600), r"gpus=nan must be a whole number of cards"),  # was a NaN cost
    (lambda: job_cost("A100-80GB", 2.5, 3600), r"gpus=2\.5 "),
    (lambda: job_cost("A100-80GB", True, 3600), r"gpus=True "),
    (lambda: tokens_per_second(7e9, default_prices().gpu("H100-80GB"), gpus=-8), r"gpus=-8 .*e\.g\. gpus=8"),
    (lambda: tokens_per_second(7e9, default_prices().gpu("H100-80GB"), gpus=0), r"gpus=0 "),  # was a 0 rate
    (lambda: tokens_per_second(7e9, default_prices().gpu("H100-80GB"), mfu="0.4"), r"mfu='0\.4'"),
])
def test_negative_or_nan_times_and_counts_are_refused_by_name(call: Callable[[], object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        call()


def test_young_interval_and_spot_expectation() -> None:
    # Young 1974: tau = sqrt(2 * c * MTBF); c = 60 s, MTBF = 5 h -> sqrt(2 * 60 * 18000) s.
    assert young_interval(60, 0.2) == pytest.approx(math.sqrt(2 * 60 * 18000))
    plan = spot_plan(36000, preemptions_per_hour=0.2, checkpoint_seconds=60, restart_seconds=300)
    tau = plan.checkpoint_interval_s
    wall = 36000 * (1 + 60 / tau) / (1 - 0.2 / 3600 * (tau / 2 + 300))
    assert plan.expected_wall_hours * 3600 == pytest.approx(wall)
    assert plan.expected_preemptions == pytest.approx(0.2 * plan.expected_wall_hours)
    calm = spot_plan(36000, preemptions_per_hour=0.0, checkpoint_seconds=60, checkpoint_interval_s=600)
    assert calm.expected_wall_hours == pytest.approx(10 * 1.1)
    with pytest.raises(ConfigError, match="never finishes"):
        spot_plan(3600, preemptions_per_hour=20, checkpoint_seconds=600)


@given(interval=st.floats(60, 20000))
def test_youngs_interval_is_near_the_cheapest(interval: float) -> None:
    best = spot_plan(36000, preemptions_per_hour=0.2, checkpoint_seconds=60, restart_seconds=0)
    other = spot_plan(36000, preemptions_per_hour=0.2, checkpoint_seconds=60, restart_seconds=0,
                      checkpoint_interval_s=interval)
    # Young's interval is first-order optimal: within 1% of any other interval's expected time.
    assert best.expected_wall_hours <= other.expected_wall_hours * 1.01


def test_right_size_picks_the_cheapest_fitting_gpu_and_count() -> None:
    table = PriceTable.parse(TABLE)
    plans = plan_options("llama-2-7b", tokens=1e9, recompute="full", prices=table, headroom=0.0)
    best = plans[0]
    need = training_memory("llama-2-7b", recompute="full", gpus=best.gpus, zero_stage=3 if best.gpus > 1 else 0)
    assert best.fits and need.total / 1e9 <= best.gpu_memory_gb
    # 7B full fine-tuning (108 GB of model states) does not fit one 80 GB card: two with ZeRO-3.
    assert (best.gpu, best.gpus) == ("X", 2)
    # On 16 GB cards it takes 8 (108 / 8 = 13.5 GB of states + activations); at twice the price
    # per TFLOP the same FLOPs cost twice as much.
    small = next(p for p in plans if p.gpu == "Small")
    assert small.gpus == 8 and small.cost == pytest.approx(small.hours * 8 * 2.0)
    assert small.cost == pytest.approx(2 * best.cost)


def test_right_size_refuses_when_nothing_fits() -> None:
    table = PriceTable.parse({"gpus": {"Tiny": {"memory_gb": 1, "bf16_tflops": 1, "cloud": {"on_demand": 1}}}})
    with pytest.raises(ConfigError, match="no GPU in the price table fits llama-2-70b"):
        right_size("llama-2-70b", prices=table, max_gpus=4)
    rows = plan_options("llama-2-70b", prices=table, max_gpus=4)
    assert [r.gpus for r in rows] == [4, 2, 1] and not any(r.fits for r in rows)


def test_spot_plans_pay_for_preemptions() -> None:
    table = PriceTable.parse(TABLE)
    on_demand = plan_options("gpt2", tokens=1e10, prices=table)[0]
    spot = plan_options("gpt2", tokens=1e10, prices=table, pricing="spot", preemptions_per_hour=0.5)[0]
    assert on_demand.gpu == spot.gpu == "X"
    assert spot.hours > on_demand.hours
    assert spot.cost == pytest.approx(spot.hours * spot.gpus * 1.0)


def test_a_gpu_entry_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gpus:\n  H100: 3.5\n")  # a price where the GPU's fields belong: was a raw TypeError
    with pytest.raises(ConfigError, match=r"gpus\.H100 must be a mapping .*got 3\.5"):
        PriceTable.load(path)


@pytest.mark.parametrize(
    ("option", "value"),
    [("preemptions_per_hour", math.nan), ("checkpoint_seconds", math.inf), ("restart_seconds", -1.0),
     ("checkpoint_interval_s", -600.0), ("checkpoint_interval_s", math.nan)],
)
def test_spot_plan_refuses_values_that_would_give_nan_or_a_shorter_job(option: str, value: float) -> None:
    options = {"preemptions_per_hour": 0.2, "checkpoint_seconds": 60.0, option: value}
    with pytest.raises(ConfigError, match=option):
        spot_plan(3600, **options)  # type: ignore[arg-type]


def test_spot_plan_of_no_work_is_no_time() -> None:
    plan = spot_plan(0, preemptions_per_hour=0.2, checkpoint_seconds=60)
    assert (plan.expected_wall_hours, plan.overhead) == (0.0, 0.0)


def test_plans_refuse_a_pricing_no_gpu_offers_and_bad_headroom() -> None:
    table = PriceTable.parse(TABLE)
    rented = PriceTable.parse({"gpus": {"Small": TABLE["gpus"]["Small"]}})  # type: ignore[index]  # no owned card
    with pytest.raises(ConfigError, match="no GPU in the price table has a 'owned' price"):
        plan_options("gpt2", prices=rented, pricing="owned")
    with pytest.raises(ConfigError, match="'ondemand'"):
        plan_options("gpt2", prices=table, pricing="ondemand")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"headroom=1\.5"):
        plan_options("gpt2", prices=table, headroom=1.5)


def test_a_gpu_given_twice_in_the_yaml_is_refused_not_silently_replaced(tmp_path: Path) -> None:
    block = "    memory_gb: 80\n    bf16_tflops: 989\n    cloud: {{on_demand: {}}}\n"
    path = tmp_path / "prices.yaml"
    path.write_text("gpus:\n  H100:\n" + block.format(3.5) + "  H100:\n" + block.format(1.0))  # a copy not renamed
    with pytest.raises(ConfigError, match=r"line 6 .*duplicate key 'H100'"):
        PriceTable.load(path)
    path.write_text("gpus:\n  H100:\n" + block.format(3.5) + "  [a, b]: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # an unhashable key is still YAML's own error
        PriceTable.load(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory_gb", ".inf"), ("bf16_tflops", ".nan"), ("cloud.on_demand", ".inf"), ("cloud.spot", ".inf"),
     ("owned.purchase", ".inf"), ("owned.power_w", ".nan"), ("memory_gb", "true"), ("cloud.on_demand", "true"),
     ("owned.depreciation_years", "false"), ("cloud.on_demand", "'3.5'")],
)
def test_a_price_table_refuses_non_finite_and_boolean_numbers(tmp_path: Path, field: str, value: str) -> None:
    spec = {"memory_gb": "80", "bf16_tflops": "100", "cloud.on_demand": "2.0", "cloud.spot": "1.0",
            "owned.purchase": "1000", "owned.power_w": "100", "owned.depreciation_years": "4"} | {field: value}
    path = tmp_path / "prices.yaml"
    path.write_text(
        "gpus:\n  X1:\n"
        f"    memory_gb: {spec['memory_gb']}\n    bf16_tflops: {spec['bf16_tflops']}\n"
        f"    cloud: {{on_demand: {spec['cloud.on_demand']}, spot: {spec['cloud.spot']}}}\n"
        f"    owned: {{purchase: {spec['owned.purchase']}, power_w: {spec['owned.power_w']}, "
        f"depreciation_years: {spec['owned.depreciation_years']}}}\n"
    )
    # was: .inf priced a job at inf and fit any model on a card of infinite memory; true was read as 1.0
    with pytest.raises(ConfigError, match=rf"gpus\.X1\.{re.escape(field)}: "):
        PriceTable.load(path)
