"""Prometheus metrics of the online server, in one registry per app.

Request counts and latencies are updated on every request, on the event
loop, so they are kept in plain integers and lists (`_RequestTally`) and turned
into Prometheus families only when scraped: prometheus_client's Counter and
Histogram take a lock per update, which cost about 4% of the loop's time per
single-row request. Batch sizes (once per batch) use a cached labelled child.
Queue depth and in-flight requests are read from the batchers when scraped,
so they cost nothing between scrapes.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from loopstack.serving.batcher import Batch, Batcher

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServingMetrics:
    """The server's metrics: requests by model, version and status; latency; batch sizes; queue; in-flight.

    Examples
    --------
    >>> metrics = ServingMetrics(lambda: [])
    >>> metrics.request("m", "1", 200, 0.003)
    >>> b"loopstack_requests_total" in metrics.render()
    True
    """

    def __init__(self, batchers: Callable[[], Iterable[Batcher]], gpu: str | None = None, gpus: int = 1) -> None:
        from loopstack.economics import UsageMeter

        # GPU cost accrues while the server holds the card, so uptime is what is priced
        self.usage = UsageMeter("serving", gpu, gpus)
        self._usage_since = time.perf_counter()
        self.registry = CollectorRegistry(auto_describe=True)
        self.tally = _RequestTally()
        self.registry.register(self.tally)
        self.batch_size = Histogram(
            "loopstack_batch_size", "Rows per vectorized predict.",
            ["model", "version"], buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.registry.register(_LiveCollector(batchers))
        self._children: dict[tuple[Any, ...], Any] = {}

    def request(self, model: str, version: str, code: int, seconds: float) -> None:
        """Count one answered request and its latency (call it on the event loop)."""
        self.tally.add(model, version, code, seconds)

    def observe_batch(self, batch: Batch) -> None:
        """Record one batch's size (a batcher observer)."""
        key = ("batch", *batch.labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.batch_size.labels(*batch.labels)
        child.observe(batch.outputs.shape[0])
        # A shadow's copy costs compute but answers no one: cost per 1,000 predictions counts answers.
        self.usage.add_predictions(batch.outputs.shape[0] - sum(item.n for item in batch.items if item.shadow))

    def render(self) -> bytes:
        """The Prometheus text exposition, with GPU-seconds and cost per 1,000 predictions."""
        now = time.perf_counter()
        self.usage.add_seconds(now - self._usage_since)
        self._usage_since = now
        return generate_latest(self.registry) + self.usage.prometheus().encode()


class _RequestTally(Collector):
    """Requests by (model, version, code) and a latency histogram per model, in plain numbers.

    Updated and scraped on the event loop only, so it needs no lock.

    Examples
    --------
    >>> tally = _RequestTally()
    >>> tally.add("m", "1", 200, 0.003); tally.add("m", "1", 200, 0.2)
    >>> [(s.name, s.value) for f in tally.collect() for s in f.samples if s.name.endswith(("_total", "_count"))]
    [('loopstack_requests_total', 2), ('loopstack_request_duration_seconds_count', 2)]
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.buckets: dict[str, list[int]] = {}  # per model: a count per bucket of LATENCY_BUCKETS, then +Inf
        self.sums: dict[str, float] = {}
        self.created: dict[object, float] = {}

    def add(self, model: str, version: str, code: int, seconds: float) -> None:
        key = (model, version, code)
        count = self.counts.get(key)
        if count is None:
            self.created[key] = time.time()
            count = 0
        self.counts[key] = count + 1
        buckets = self.buckets.get(model)
        if buckets is None:
            self.created[model] = time.time()
            buckets = self.buckets[model] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.sums[model] = 0.0
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # a bucket counts values <= its bound
        self.sums[model] += seconds

    def collect(self) -> Iterable[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "loopstack_requests", "Prediction requests by model, version and HTTP status code.",
            labels=["model", "version", "code"],
        )
        for (model, version, code), count in self.counts.items():
            requests.add_metric([model, version, str(code)], count, created=self.created[(model, version, code)])
        latency = HistogramMetricFamily(
            "loopstack_request_duration_seconds", "Time from request received to response ready.", labels=["model"],
        )
        bounds = [*(_bound(b) for b in LATENCY_BUCKETS), "+Inf"]
        for model, buckets in self.buckets.items():
            cumulative, total = [], 0
            for bound, count in zip(bounds, buckets, strict=True):
                total += count
                cumulative.append((bound, total))
            latency.add_metric([model], cumulative, self.sums[model])
        yield requests
        yield latency

    def describe(self) -> Iterable[CounterMetricFamily]:
        return []


def _bound(value: float) -> str:
    """A bucket bound as prometheus_client writes it (0.5, 1.0, 10.0)."""
    return repr(float(value))


class _LiveCollector(Collector):
    """Queue depth and in-flight requests, read from the batchers at scrape time."""

    def __init__(self, batchers: Callable[[], Iterable[Batcher]]) -> None:
        self.batchers = batchers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily("loopstack_queue_depth", "Rows waiting for a batch.", labels=["model", "version"])
        inflight = GaugeMetricFamily(
            "loopstack_in_flight_requests", "Requests received and not yet answered.", labels=["model", "version"]
        )
        for batcher in self.batchers():
            labels = list(batcher.labels)
            depth.add_metric(labels, batcher.queued_rows)
            inflight.add_metric(labels, batcher.in_flight)
        yield depth
        yield inflight

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []
