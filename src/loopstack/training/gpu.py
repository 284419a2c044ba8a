"""Record what a run used on the GPU: card type, peak memory, GPU-seconds and their cost.

A `GpuUsage` block asks a probe (CUDA through torch by default) for the card
name and peak allocated memory, and times itself; on exit it tags the active
run and logs ``gpu.*`` metrics, priced through the economics price table when
the card is in it. Without a GPU it records nothing.
"""

from __future__ import annotations

import os
import re
import time
from types import TracebackType
from typing import Any, Protocol

import torch

from loopstack.economics import PriceTable, UsageMeter, default_prices


class GpuProbe(Protocol):
    """What `GpuUsage` needs to know about the devices of this process."""

    def available(self) -> bool: ...
    def name(self) -> str: ...
    def devices(self) -> int: ...
    def reset_peak(self) -> None: ...
    def peak_bytes(self) -> int: ...


class CudaProbe:
    """The probe over ``torch.cuda``; one process uses one device under data parallelism, so a job's
    devices are its processes (only rank 0 records, and it pays for all of them)."""

    def available(self) -> bool:
        return torch.cuda.is_available()

    def name(self) -> str:
        return torch.cuda.get_device_name()

    def devices(self) -> int:
        from loopstack.training.distributed import world_size

        return world_size()

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self) -> int:
        return int(torch.cuda.max_memory_allocated())


# nvidia-smi leaves the memory out of some names; the size each of these cards has, so it can be priced.
_IMPLIED_MEMORY = {("h100", "pcie"): "80gb", ("h100", "nvl"): "94gb"}


def _tokens(name: str) -> set[str]:
    """Lower-case alphanumeric words of a name: 'NVIDIA A100-SXM4-80GB' -> {'nvidia', 'a100', 'sxm4', '80gb'}."""
    return set(re.findall(r"[a-z0-9]+", name.lower()))


def price_table_name(device_name: str, prices: PriceTable | None = None) -> str | None:
    """The price-table GPU matching a CUDA device name, e.g. 'NVIDIA H100 80GB HBM3' -> 'H100-80GB'; None if unknown.

    An entry matches when each of its words ('H100-80GB' -> h100, 80gb) is a whole word of the device name, so
    'GH200' is not an 'H200' and 'L40S' is not an 'L4'. Form factors (PCIe, SXM, NVL) are not told apart by the
    table, but memory is: a name without its memory gets the card's known size first, so 'NVIDIA H100 PCIe' is
    priced as H100-80GB while 'NVIDIA H100 NVL' (94 GB) has no entry. Several matches: the most specific wins.
    `prices` is the table to look in (default: the packaged one).
    """
    words = _tokens(device_name)
    for card, memory in _IMPLIED_MEMORY.items():
        if set(card) <= words and not any(w.endswith("gb") for w in words):
            words.add(memory)
    candidates = [(len(_tokens(name)), name) for name in (prices or default_prices()).gpus if _tokens(name) <= words]
    return max(candidates)[1] if candidates else None


class GpuUsage:
    """Measure a block's GPU use and record it on the active run.

    Examples
    --------
    >>> with GpuUsage() as usage:
    ...     pass
    >>> usage.present or usage.summary() == {}
    True
    """

    def __init__(
        self, probe: GpuProbe | None = None, run: Any = None,
        prices: str | os.PathLike[str] | PriceTable | None = None,
    ) -> None:
        self.probe = probe or CudaProbe()
        self.run = run
        # a path is read now, as TrainConfig does: kept as a string it broke pricing only in __exit__, on a GPU
        loaded = prices if prices is None or isinstance(prices, PriceTable) else PriceTable.load(prices)
        self.prices: PriceTable | None = loaded  # the packaged price table when None
        self.present = self.probe.available()
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> GpuUsage:
        if self.present:
            self.probe.reset_peak()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.perf_counter() - self._start
        if self.present:
            self.record()

    def summary(self) -> dict[str, Any]:
        """GPU type, devices, peak memory, GPU-seconds and (if priced) cost of the block; {} without a GPU."""
        if not self.present:
            return {}
        name = self.probe.name()
        devices = self.probe.devices()
        out: dict[str, Any] = {
            "gpu.type": name,
            "gpu.count": devices,
            "gpu.memory_peak_bytes": self.probe.peak_bytes(),
            "gpu.seconds": self.seconds * devices,
        }
        priced = price_table_name(name, self.prices)
        if priced is not None:
            meter = UsageMeter("run", gpu=priced, gpus=devices, prices=self.prices)
            meter.add_seconds(self.seconds)
            out["gpu.cost"] = meter.cost
        return out

    def record(self) -> dict[str, Any]:
        """Tag the run with the GPU type and log the numbers as metrics."""
        from loopstack.tracking.fluent import active_run

        values = self.summary()
        run = self.run or active_run()
        if run is not None:
            run.set_tag("gpu.type", values["gpu.type"])
            run.log_metrics({k: float(v) for k, v in values.items() if k != "gpu.type"})
        return values
