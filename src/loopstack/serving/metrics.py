"""Prometheus metrics of the online server, in one registry per app.

Counters and histograms are updated on the request path, so their labelled
children are cached (a label lookup takes a lock; a cached child does not).
Queue depth and in-flight requests are read from the batchers when scraped,
so they cost nothing between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
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
        self.requests = Counter(
            "loopstack_requests", "Prediction requests by model, version and HTTP status code.",
            ["model", "version", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "loopstack_request_duration_seconds", "Time from request received to response ready.",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "loopstack_batch_size", "Rows per vectorized predict.",
            ["model", "version"], buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.registry.register(_LiveCollector(batchers))
        self._children: dict[tuple[Any, ...], Any] = {}

    def request(self, model: str, version: str, code: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (model, version, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(model, version, str(code))
        child.inc()
        hist = self._children.get(model)
        if hist is None:
            hist = self._children[model] = self.latency.labels(model)
        hist.observe(seconds)

    def observe_batch(self, batch: Batch) -> None:
        """Record one batch's size (a batcher observer)."""
        key = ("batch", batch.adapter.name, batch.adapter.version)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.batch_size.labels(batch.adapter.name, batch.adapter.version)
        child.observe(batch.outputs.shape[0])
        self.usage.add_predictions(batch.outputs.shape[0])

    def render(self) -> bytes:
        """The Prometheus text exposition, with GPU-seconds and cost per 1,000 predictions."""
        now = time.perf_counter()
        self.usage.add_seconds(now - self._usage_since)
        self._usage_since = now
        return generate_latest(self.registry) + self.usage.prometheus().encode()


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
            labels = [batcher.spec.name, batcher.adapter.version]
            depth.add_metric(labels, batcher.queued_rows)
            inflight.add_metric(labels, batcher.in_flight)
        yield depth
        yield inflight

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []
