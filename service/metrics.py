"""The server's counters: per-model inference statistics and the Prometheus metrics of one app.

`InferenceStats` is filled by the one execution path (the data plane counts requests, the runner
counts model executions) and read by two views of the same numbers: `GET /metrics` (Prometheus,
through `Metrics`) and Triton's statistics extension (`GET /v2/models/stats`). Each app has its
own `InferenceStats` and `CollectorRegistry`, so several apps in one process (tests) never share
counters. Model states and loaded versions are read from the model registry at scrape time, so
they cannot go stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from service.catalogue import TASK_ROUTE_MODELS
from service.registry import ModelRegistry, ModelState

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(17))  # 1 ... 65536 items
QUEUE_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
#: Distinct batch sizes kept per model version for `batch_stats` (bounded memory).
_MAX_BATCH_SIZES = 4096


@dataclass
class Duration:
    """A count and the total time of its events, in nanoseconds (Triton's `{count, ns}`)."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStats:
    """The inference statistics of one model version."""

    name: str
    version: int
    #: Milliseconds since the epoch of the last request answered (0: none yet).
    last_inference: int = 0
    #: Items inferred (Triton counts a batch of 8 as 8 inferences).
    inference_count: int = 0
    #: Model calls (a merged batch of several requests is one execution).
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)


@dataclass
class InferenceStats:
    """All model versions' statistics of one app (touched on the event loop only)."""

    models: dict[tuple[str, int], ModelStats] = field(default_factory=dict)
    #: Called with (model name, items, queue wait s) after each execution: the histograms.
    listeners: list[Callable[[str, int, float], None]] = field(default_factory=list)

    def of(self, name: str, version: int) -> ModelStats:
        stats = self.models.get((name, version))
        if stats is None:
            stats = self.models[(name, version)] = ModelStats(name, version)
        return stats

    def record_request(self, name: str, version: int, items: int, seconds: float, ok: bool) -> None:
        """One request answered by the data plane (successfully or not) after `seconds`."""
        stats = self.of(name, version)
        if ok:
            stats.success.add(seconds)
            stats.inference_count += items
        else:
            stats.fail.add(seconds)
        stats.last_inference = int(time.time() * 1000)

    def record_execution(
        self, name: str, version: int, items: int, queue_s: float, compute_s: float
    ) -> None:
        """One model call on `items` items that waited `queue_s` in the queue."""
        stats = self.of(name, version)
        stats.execution_count += 1
        stats.queue.add(max(queue_s, 0.0))
        stats.compute_infer.add(compute_s)
        batch = stats.batches.get(items)
        if batch is None and len(stats.batches) < _MAX_BATCH_SIZES:
            batch = stats.batches[items] = Duration()
        if batch is not None:
            batch.add(compute_s)
        for listener in self.listeners:
            listener(name, items, queue_s)

    def snapshot(self) -> list[ModelStats]:
        return [self.models[key] for key in sorted(self.models)]


class Metrics:
    """The Prometheus metrics of one app, in their own registry."""

    def __init__(
        self, registry: ModelRegistry | None = None, stats: InferenceStats | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("method", "route", "model", "status")
        self.requests = Counter(
            "mldm_http_requests",
            "HTTP requests answered, by route template, method, model and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "mldm_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response body.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mldm_http_requests_in_flight", "Requests being handled now.", registry=self.registry
        )
        self.batch_size = Histogram(
            "mldm_batch_size_items",
            "Items per model call made by the execution path (merged batches included).",
            ("model",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mldm_batch_queue_wait_seconds",
            "Wait of the oldest request of a batch, from queueing to the model call.",
            ("model",),
            buckets=QUEUE_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.model_registry = registry
        if registry is not None:
            self.registry.register(_ModelCollector(registry))
        if stats is not None:
            self.registry.register(_InferenceCollector(stats))
            stats.listeners.append(self.observe_execution)

    def observe_execution(self, model: str, items: int, queue_s: float) -> None:
        self.batch_size.labels(model).observe(items)
        self.queue_wait.labels(model).observe(max(queue_s, 0.0))

    def observe_request(
        self, method: str, route: str, model: str, status: int, seconds: float
    ) -> None:
        labels = (method, route, model, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def model_label(self, route: str, path_params: dict[str, Any]) -> str:
        """The model a request addressed, or "" (unknown names are not labels: bounded set)."""
        name = path_params.get("name")
        if isinstance(name, str):
            if self.model_registry is not None and name in self.model_registry.model_names():
                return name
            return ""
        return TASK_ROUTE_MODELS.get(route, "")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapedCollector(Collector):
    """Metric families computed at each scrape (`describe` gives them empty, for the names)."""

    def describe(self) -> Iterable[Metric]:
        return self._families(scrape=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(scrape=True)

    def _families(self, scrape: bool) -> Iterator[Metric]:
        raise NotImplementedError


class _InferenceCollector(_ScrapedCollector):
    """The inference statistics (the numbers of `/v2/models/stats`) as Prometheus counters."""

    def __init__(self, stats: InferenceStats) -> None:
        self.stats = stats

    def _families(self, scrape: bool) -> Iterator[Metric]:
        labels = ["model", "version"]
        requests = CounterMetricFamily(
            "mldm_inference_requests",
            "Inference requests through the data plane, by outcome (success or fail).",
            labels=[*labels, "outcome"],
        )
        seconds = CounterMetricFamily(
            "mldm_inference_request_seconds",
            "Total time of the inference requests in the data plane, by outcome.",
            labels=[*labels, "outcome"],
        )
        items = CounterMetricFamily(
            "mldm_inference_items", "Items inferred (Triton's inference_count).", labels=labels
        )
        executions = CounterMetricFamily(
            "mldm_model_executions", "Model calls (Triton's execution_count).", labels=labels
        )
        queue = CounterMetricFamily(
            "mldm_inference_queue_seconds", "Total time requests waited in a queue.", labels=labels
        )
        compute = CounterMetricFamily(
            "mldm_inference_compute_seconds", "Total time of the model calls.", labels=labels
        )
        if scrape:
            for stats in self.stats.snapshot():
                key = [stats.name, str(stats.version)]
                for outcome, duration in (("success", stats.success), ("fail", stats.fail)):
                    requests.add_metric([*key, outcome], duration.count)
                    seconds.add_metric([*key, outcome], duration.ns / 1e9)
                items.add_metric(key, stats.inference_count)
                executions.add_metric(key, stats.execution_count)
                queue.add_metric(key, stats.queue.ns / 1e9)
                compute.add_metric(key, stats.compute_infer.ns / 1e9)
        yield from (requests, seconds, items, executions, queue, compute)


class _ModelCollector(_ScrapedCollector):
    """Model load state and versions, read from the model registry at each scrape."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.model_registry = registry

    def _families(self, scrape: bool) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "mldm_model_ready", "1 if the model has a servable version, else 0.", labels=["model"]
        )
        state = GaugeMetricFamily(
            "mldm_model_state",
            "1 for the model's current state (LOADING, AVAILABLE, END = failed), 0 for the others.",
            labels=["model", "state"],
        )
        loaded = GaugeMetricFamily(
            "mldm_model_version_loaded", "1 for each loaded version.", labels=["model", "version"]
        )
        failed = GaugeMetricFamily(
            "mldm_model_version_failed",
            "1 for each version that failed to load.",
            labels=["model", "version"],
        )
        latest = GaugeMetricFamily(
            "mldm_model_latest_version",
            "The version served when a request names none (0: none loaded).",
            labels=["model"],
        )
        if scrape:
            for entry in self.model_registry.entries():
                ready.add_metric([entry.name], 1.0 if entry.ready else 0.0)
                for each in ModelState:
                    state.add_metric([entry.name, each.value], float(entry.state is each))
                for version in sorted(entry.versions):
                    loaded.add_metric([entry.name, str(version)], 1.0)
                for version in sorted(entry.failed):
                    failed.add_metric([entry.name, str(version)], 1.0)
                latest.add_metric([entry.name], float(max(entry.versions, default=0)))
        yield from (ready, state, loaded, failed, latest)
