"""Live accounting: GPU-seconds and cost per run and per 1,000 predictions.

Serving and training call a `UsageMeter`: time spans (``with meter.track():``
or ``meter.add_seconds(s)``) and prediction counts go in; GPU-seconds, cost
and cost per 1,000 predictions come out as a dict, as run metrics, or as
Prometheus text exposition lines for a ``/metrics`` endpoint. The meter only
adds numbers under a lock, so it is cheap on a hot path.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loopstack.core.errors import ConfigError, ConflictError
from loopstack.economics.cost import _amount, _cards
from loopstack.economics.prices import PriceTable, Pricing, default_prices

_meters: dict[str, UsageMeter] = {}
_meters_lock = threading.Lock()


class UsageMeter:
    """Counts GPU time and predictions of one job or deployment and prices them.

    Parameters
    ----------
    name
        The run or deployment this meter accounts for (a metric label).
    gpu
        A GPU type of the price table, or None when no GPU is used.
    gpus
        Cards held while the job runs, a whole number >= 1; GPU-seconds are wall seconds times this.
        Without a `gpu` and a `price_per_gpu_hour` nothing is priced and GPU-seconds stay 0.
    price_per_gpu_hour
        An explicit rate per card, also without a `gpu` name; otherwise the price table's rate
        under `pricing`.

    Examples
    --------
    >>> meter = UsageMeter("fraud-v3", gpu="L4", gpus=2)
    >>> meter.add_seconds(1800)
    >>> meter.add_predictions(40_000)
    >>> meter.gpu_seconds, round(meter.cost, 2), round(meter.cost_per_1k_predictions, 4)
    (3600.0, 0.8, 0.02)
    >>> print(meter.prometheus().splitlines()[2])
    loopstack_gpu_seconds_total{name="fraud-v3",gpu="L4"} 3600.0
    """

    def __init__(
        self,
        name: str,
        gpu: str | None = None,
        gpus: int = 1,
        *,
        pricing: Pricing = "on_demand",
        price_per_gpu_hour: float | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.name = name
        self.gpu = gpu
        # A named GPU or an explicit rate is priced per card: `gpus` cards (1 unless said otherwise). Without
        # either nothing is priced. Was: a rate with no GPU name cost 0, and gpus=0, 1.5 or NaN were accepted.
        priced = gpu is not None or price_per_gpu_hour is not None
        cards = _cards(gpus) if priced or gpus != 0 else 0  # gpus=0 only where nothing is priced
        self.gpus = cards if priced else 0
        if price_per_gpu_hour is None:
            price_per_gpu_hour = (prices or default_prices()).gpu(gpu).hourly(pricing) if gpu is not None else 0.0
        self.price_per_gpu_hour = _amount("price_per_gpu_hour", price_per_gpu_hour)
        self._lock = threading.Lock()
        self._wall_seconds = 0.0
        self._predictions = 0

    def add_seconds(self, seconds: float) -> None:
        """Account `seconds` of wall time during which the GPUs were held."""
        if not 0 <= seconds < math.inf:  # one NaN would make every later total NaN
            raise ConfigError(f"seconds={seconds} must be a non-negative finite number")
        with self._lock:
            self._wall_seconds += seconds

    def add_predictions(self, count: int) -> None:
        """Count `count` predictions served."""
        if not (isinstance(count, numbers.Integral) and not isinstance(count, bool)) or count < 0:
            # was: 2.7 counted as 2, NaN raised a bare ValueError, True counted as 1
            raise ConfigError(f"count={count!r} must be a non-negative whole number of predictions "
                              "(a counter only goes up)")
        with self._lock:
            self._predictions += int(count)

    @contextmanager
    def track(self) -> Iterator[UsageMeter]:
        """Account the wall time of the block."""
        start = time.perf_counter()
        try:
            yield self
        finally:
            self.add_seconds(time.perf_counter() - start)

    @property
    def wall_seconds(self) -> float:
        return self._wall_seconds

    @property
    def predictions(self) -> int:
        return self._predictions

    @property
    def gpu_seconds(self) -> float:
        return self._wall_seconds * self.gpus

    @property
    def cost(self) -> float:
        return self.gpu_seconds / 3600 * self.price_per_gpu_hour

    @property
    def cost_per_1k_predictions(self) -> float:
        """Cost divided by thousands of predictions (NaN before the first one)."""
        return self.cost / self._predictions * 1000 if self._predictions else float("nan")

    def metrics(self) -> dict[str, float]:
        """The numbers as a flat dict, ready for `log_metrics`."""
        return {
            "gpu.seconds": self.gpu_seconds,
            "gpu.cost": self.cost,
            "gpu.predictions": float(self._predictions),
            "gpu.cost_per_1k_predictions": self.cost_per_1k_predictions,
        }

    def log_to_run(self, run: Any = None) -> dict[str, float]:
        """Log `metrics()` to `run`, or to the active tracking run; returns them."""
        if run is None:
            from loopstack.tracking.fluent import active_run

            run = active_run()
        values = {k: v for k, v in self.metrics().items() if v == v}  # drop NaN
        if run is not None:
            run.log_metrics(values)
        return values

    def prometheus(self) -> str:
        """Prometheus text exposition lines (counters and a gauge) for this meter."""
        labels = f'name="{_escape(self.name)}",gpu="{_escape(self.gpu or "none")}"'
        rows = [
            ("loopstack_gpu_seconds_total", "counter", "GPU-seconds held", self.gpu_seconds),
            ("loopstack_gpu_cost_total", "counter", "Cost of GPU time in the price table currency", self.cost),
            ("loopstack_predictions_total", "counter", "Predictions served", float(self._predictions)),
            ("loopstack_cost_per_1k_predictions", "gauge", "GPU cost per 1,000 predictions",
             self.cost_per_1k_predictions),
        ]
        lines = []
        for metric, kind, text, value in rows:
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", f"{metric}{{{labels}}} {_number(value)}"]
        return "\n".join(lines) + "\n"


def meter(name: str, gpu: str | None = None, gpus: int | None = None, **options: Any) -> UsageMeter:
    """The process-wide meter called `name`, created on first use (serving and training share this registry).

    Asked again with the name alone, it returns that meter. Asked with a GPU, count or rate other than the one it
    was created with, it raises ConflictError rather than return the old meter: its time would be priced as the
    first caller's card. A new job on other cards needs its own name.
    """
    with _meters_lock:
        existing = _meters.get(name)
        if existing is None:
            _meters[name] = UsageMeter(name, gpu, 1 if gpus is None else gpus, **options)
            return _meters[name]
    if gpu is not None or gpus is not None or options:
        _check_same_meter(existing, gpu, gpus, options)
    return existing


def _check_same_meter(existing: UsageMeter, gpu: str | None, gpus: int | None, options: dict[str, Any]) -> None:
    asked = UsageMeter(existing.name, existing.gpu if gpu is None else gpu,
                       (existing.gpus or 1) if gpus is None else gpus, **options)
    if _priced_as(existing) != _priced_as(asked):  # "l4" is the price table's "L4": the same card
        held, wanted = _terms(existing), _terms(asked)
        raise ConflictError(
            f"meter {existing.name!r} already counts {held}, not {wanted}; pass only the name to use it, "
            "or give the other job its own name"
        )


def _priced_as(m: UsageMeter) -> tuple[str | None, int, float | None]:
    """What a meter's time is priced by; GPU names match the price table's whatever their case."""
    return (None if m.gpu is None else m.gpu.lower(), m.gpus, m.price_per_gpu_hour)


def _terms(m: UsageMeter) -> str:
    return f"gpu={m.gpu!r}, gpus={m.gpus}, price_per_gpu_hour={m.price_per_gpu_hour}"


def prometheus_text() -> str:
    """Exposition text of every registered meter, one HELP/TYPE header per metric family."""
    with _meters_lock:
        meters = list(_meters.values())
    families: dict[str, list[str]] = {}
    for m in meters:
        lines = m.prometheus().splitlines()
        for i in range(0, len(lines), 3):
            family = families.setdefault(lines[i], [lines[i + 1]])
            family.append(lines[i + 2])
    return "".join(f"{head}\n" + "\n".join(body) + "\n" for head, body in families.items())


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
