"""Live GPU accounting: arithmetic, threads, Prometheus text, run metrics."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

import loopstack as ls
from loopstack.core.errors import ConfigError, ConflictError
from loopstack.core.project import Project
from loopstack.economics import UsageMeter, accounting, meter, prometheus_text


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    accounting._meters.clear()
    yield
    accounting._meters.clear()


def test_cost_per_run_and_per_thousand_predictions() -> None:
    m = UsageMeter("serve", gpu="A100-80GB", gpus=4)
    m.add_seconds(900)
    assert m.gpu_seconds == 3600 and m.cost == pytest.approx(2.0)
    assert math.isnan(m.cost_per_1k_predictions)
    m.add_predictions(500)
    assert m.cost_per_1k_predictions == pytest.approx(4.0)


def test_explicit_rate_and_cpu_only_meters() -> None:
    assert UsageMeter("x", gpu="anything", price_per_gpu_hour=7.2).price_per_gpu_hour == 7.2
    cpu = UsageMeter("cpu-job")
    cpu.add_seconds(100)
    assert cpu.gpu_seconds == 0 and cpu.cost == 0


def test_track_measures_the_block_and_concurrent_adds_are_not_lost() -> None:
    m = UsageMeter("t", gpu="L4", gpus=1)
    with m.track():
        time.sleep(0.02)
    assert 0.02 <= m.wall_seconds < 1
    before = m.wall_seconds

    def work() -> None:
        for _ in range(1000):
            m.add_seconds(0.001)
            m.add_predictions(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.predictions == 4000
    assert m.wall_seconds == pytest.approx(before + 4.0)


def test_prometheus_exposition_groups_families_across_meters() -> None:
    meter("a", gpu="L4").add_seconds(10)
    meter("b\"x", gpu="T4", gpus=2).add_seconds(5)
    assert meter("a") is meter("a", gpu="L4", gpus=1)
    text = prometheus_text()
    assert text.count("# TYPE loopstack_gpu_seconds_total counter") == 1
    assert 'loopstack_gpu_seconds_total{name="a",gpu="L4"} 10.0' in text
    assert 'loopstack_gpu_seconds_total{name="b\\"x",gpu="T4"} 10.0' in text
    assert 'loopstack_cost_per_1k_predictions{name="a",gpu="L4"} NaN' in text


def test_log_to_run_writes_metrics_to_the_active_run(sqlite_project: Project) -> None:
    m = UsageMeter("train", gpu="H100-80GB", gpus=2)
    m.add_seconds(1800)
    with ls.start_run(project=sqlite_project) as run:
        logged = m.log_to_run()
    assert "gpu.cost_per_1k_predictions" not in logged  # NaN is not logged
    stored = ls.Client(sqlite_project).get_run(run.id).metrics
    assert stored["gpu.seconds"] == 3600 and stored["gpu.cost"] == pytest.approx(3.5)


def test_meter_refuses_values_that_would_poison_its_totals() -> None:
    m = UsageMeter("poison", gpu="L4")
    m.add_seconds(10)
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ConfigError, match="seconds="):
            m.add_seconds(bad)
    with pytest.raises(ConfigError, match="count=-5"):
        m.add_predictions(-5)
    with pytest.raises(ConfigError, match="price_per_gpu_hour=nan"):
        UsageMeter("poison", price_per_gpu_hour=math.nan)
    assert (m.wall_seconds, m.predictions) == (10.0, 0)  # the refused values left the totals as they were


def test_a_meter_asked_for_with_another_gpu_is_refused_not_returned_priced_as_the_first() -> None:
    first = meter("job", gpu="L4", gpus=2)
    first.add_seconds(3600)
    with pytest.raises(ConflictError, match=r"meter 'job' already counts gpu='L4', gpus=2.*not gpu='H100-80GB'"):
        meter("job", gpu="H100-80GB", gpus=2)  # used to return the L4 meter: H100 hours priced at L4 rates
    with pytest.raises(ConflictError, match="gpus=8"):
        meter("job", gpus=8)
    with pytest.raises(ConflictError, match=r"price_per_gpu_hour=0\.35"):
        meter("job", pricing="spot")
    assert meter("job") is first and meter("job", gpu="L4") is first
    assert meter("job", gpu="l4") is first  # the price table's lookup ignores case: the same card and rate
    assert first.cost == pytest.approx(2 * 0.8)  # the refused requests left it as it was


def test_an_explicit_rate_without_a_gpu_name_is_priced() -> None:
    m = UsageMeter("b", price_per_gpu_hour=2.0)  # was: gpus forced to 0, so the hour cost 0
    m.add_seconds(3600)
    assert (m.gpus, m.gpu_seconds, m.cost) == (1, 3600.0, pytest.approx(2.0))
    two = UsageMeter("b2", gpus=2, price_per_gpu_hour=2.0)
    two.add_seconds(3600)
    assert two.cost == pytest.approx(4.0)
    unpriced = UsageMeter("cpu")
    unpriced.add_seconds(10)
    assert (unpriced.gpus, unpriced.cost) == (0, 0.0)


@pytest.mark.parametrize("gpus", [math.nan, 1.5, 0, -1, True, "2"])
def test_meter_refuses_a_card_count_that_is_not_a_whole_number_of_cards(gpus: object) -> None:
    with pytest.raises(ConfigError, match=f"gpus={gpus!r}"):
        UsageMeter("x", gpu="L4", gpus=gpus)  # type: ignore[arg-type]  # was: nan/1.5 accepted, 0 priced a job at 0
    with pytest.raises(ConfigError, match=f"gpus={gpus!r}"):
        UsageMeter("x", gpus=gpus, price_per_gpu_hour=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [2.7, math.nan, math.inf, True, "3", -1])
def test_add_predictions_refuses_what_is_not_a_whole_count(count: object) -> None:
    m = UsageMeter("p", gpu="L4")
    m.add_predictions(3)
    with pytest.raises(ConfigError, match=f"count={count!r}"):
        m.add_predictions(count)  # type: ignore[arg-type]  # was: 2.7 counted 2, nan a bare ValueError
    assert m.predictions == 3


def test_a_registered_gpu_less_meter_asked_with_a_gpu_conflicts() -> None:
    meter("cpu-only-job")
    with pytest.raises(ConflictError, match="gpus=1"):
        meter("cpu-only-job", gpu="L4")
