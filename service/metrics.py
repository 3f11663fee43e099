"""The server's counters: per-model inference statistics and the Prometheus metrics of one app.

`InferenceStats` is filled by the one execution path (the data plane counts requests, the runner
counts model executions) and read by two views of the same numbers: `GET /metrics` (Prometheus,
through `Metrics`) and Triton's statistics extension (`GET /v2/models/stats`). Its numbers live in
prometheus-client counters (not in plain ints), so that with several worker processes they are
multiprocess-safe: when `PROMETHEUS_MULTIPROC_DIR` is set (`mldm-serve` sets it for
`MLDM_WORKERS` > 1), prometheus-client keeps every value in a memory-mapped file per process, and
both views sum the files of all workers, so whichever worker answers a scrape reports the whole
server. Without it, each app has its own counters and `CollectorRegistry`, so several apps in one
process (tests) never share counters. In multiprocess mode there is one app per process.

Model states and loaded versions are read from the model registry at scrape time in one process;
with several workers each worker also writes its own into per-worker gauges (`pid` label) when its
models load or reload and when it answers a scrape.

The labelled children of the hot path (one per model version, one per route and status) are
resolved once and cached: `.labels(...)` cost ~5% of an energy request. In one process, a
request's statistics (eleven counter updates, each taking a lock) are added up in plain floats
and reach the counters when they are read (`InferenceStats.flush`, called by every reader: a
scrape, the statistics extension); with several workers they go to the counters at once.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from service.registry import ModelEntry, ModelRegistry, ModelState

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(17))  # 1 ... 65536 items
QUEUE_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
#: Distinct batch sizes kept per model version for `batch_stats` (bounded memory).
_MAX_BATCH_SIZES = 4096
#: The per-batch-size counters behind `batch_stats`: read by `/v2/.../stats`, not in `/metrics`
#: (up to 4096 series per model version would swamp a scrape; the histogram covers it there).
_BATCH_METRICS = ("mldm_inference_batch_executions", "mldm_inference_batch_seconds")
_STATS_METRICS = (
    "mldm_inference_requests",
    "mldm_inference_request_seconds",
    "mldm_inference_items",
    "mldm_model_executions",
    "mldm_inference_queue_seconds",
    "mldm_inference_compute_input_seconds",
    "mldm_inference_compute_seconds",
    "mldm_inference_compute_output_seconds",
    "mldm_inference_last_timestamp_seconds",
)
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    """The directory of prometheus-client's multiprocess mode, or None (one process). The
    library reads the same variable when it is first imported."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(path) if path else None


def mark_dead_workers(path: Path) -> None:
    """Drop the live gauges (in flight, model states) of worker processes that are gone, killed
    or ended, so they do not count; their counters stay: what they served was served."""
    pids = {int(m.group(1)) for p in path.iterdir() if (m := _LIVE_GAUGE_FILE.match(p.name))}
    for pid in pids:
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Duration:
    """A count and the total time of its events, in nanoseconds (Triton's `{count, ns}`)."""

    count: int = 0
    ns: int = 0

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(frozen=True)
class Phases:
    """Where one successful request spent its time, in seconds (Triton's per-request phases).

    `compute_infer` is the model time of every execution the request took part in (a request
    merged into a batch gets the whole batch's time, as in Triton); `queue` is the rest of its
    time on the execution path (waiting for the batcher or a thread)."""

    queue: float
    compute_input: float
    compute_infer: float
    compute_output: float


@dataclass
class ModelStats:
    """The inference statistics of one model version (a reading of the counters)."""

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
    #: Per successful request (Triton's semantics: each count is the success count).
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    #: Per execution, by batch size: executions and their model time.
    batches: dict[int, Duration] = field(default_factory=dict)


class _VersionCounters:
    """The counter children of one model version, resolved once (the hot path only adds)."""

    def __init__(self, stats: InferenceStats, name: str, version: int) -> None:
        key = (name, str(version))
        self.key = key
        self.success = stats.requests.labels(*key, "success")
        self.success_s = stats.request_seconds.labels(*key, "success")
        self.fail = stats.requests.labels(*key, "fail")
        self.fail_s = stats.request_seconds.labels(*key, "fail")
        self.items = stats.items.labels(*key)
        self.executions = stats.executions.labels(*key)
        self.queue_s = stats.queue_seconds.labels(*key)
        self.input_s = stats.compute_input_seconds.labels(*key)
        self.compute_s = stats.compute_seconds.labels(*key)
        self.output_s = stats.compute_output_seconds.labels(*key)
        self.last = stats.last_inference.labels(*key)
        self.stats = stats
        self.batches: dict[int, tuple[Any, Any]] = {}
        #: The counters `due` adds up to, in its order.
        self.children = (
            self.success,
            self.success_s,
            self.items,
            self.queue_s,
            self.input_s,
            self.compute_s,
            self.output_s,
            self.fail,
            self.fail_s,
            self.executions,
        )
        #: What the requests and executions recorded since the last `flush` add to each of
        #: `children` (plain floats: each prometheus update takes a lock, ~1 us, and a request
        #: made eleven of them); when the last of them was answered; per batch size, the
        #: executions and their seconds.
        self.due = [0.0] * len(self.children)
        self.due_last = 0.0
        self.due_batches: dict[int, list[float]] = {}

    def flush(self) -> None:
        """Add what is due to the prometheus counters (before they are read)."""
        due = self.due
        for k, child in enumerate(self.children):
            if due[k]:
                child.inc(due[k])
                due[k] = 0.0
        if self.due_last:
            self.last.set(self.due_last)
            self.due_last = 0.0
        for items, (count, seconds) in self.due_batches.items():
            children = self.batch(items)
            if children is not None:
                children[0].inc(count)
                children[1].inc(seconds)
        self.due_batches.clear()

    def batch(self, items: int) -> tuple[Any, Any] | None:
        children = self.batches.get(items)
        if children is None and len(self.batches) < _MAX_BATCH_SIZES:
            size = str(items)
            children = self.batches[items] = (
                self.stats.batch_executions.labels(*self.key, size),
                self.stats.batch_seconds.labels(*self.key, size),
            )
        return children


class InferenceStats:
    """All model versions' statistics of one app, in prometheus-client counters (multiprocess-safe
    when `PROMETHEUS_MULTIPROC_DIR` is set). The counters belong to no registry: `Metrics`
    exposes them, `of` reads them back (from every worker's files in multiprocess
    mode)."""

    def __init__(self) -> None:
        labels = ("model", "version")
        outcome = (*labels, "outcome")
        self.requests = Counter(
            "mldm_inference_requests",
            "Inference requests through the data plane, by outcome (success or fail).",
            outcome,
            registry=None,
        )
        self.request_seconds = Counter(
            "mldm_inference_request_seconds",
            "Total time of the inference requests in the data plane, by outcome.",
            outcome,
            registry=None,
        )
        self.items = Counter(
            "mldm_inference_items",
            "Items inferred (Triton's inference_count).",
            labels,
            registry=None,
        )
        self.executions = Counter(
            "mldm_model_executions",
            "Model calls (Triton's execution_count).",
            labels,
            registry=None,
        )
        # Per successful request, as Triton counts them (a batch's model time counts once for
        # each request in it); `mldm_model_executions` and the batch-size counters are per call.
        self.queue_seconds = Counter(
            "mldm_inference_queue_seconds",
            "Total time successful requests waited for a batch or a thread.",
            labels,
            registry=None,
        )
        self.compute_input_seconds = Counter(
            "mldm_inference_compute_input_seconds",
            "Total time successful requests spent validating and converting their inputs.",
            labels,
            registry=None,
        )
        self.compute_seconds = Counter(
            "mldm_inference_compute_seconds",
            "Total model time of successful requests (a batch's time once per request in it).",
            labels,
            registry=None,
        )
        self.compute_output_seconds = Counter(
            "mldm_inference_compute_output_seconds",
            "Total time successful requests spent collecting their outputs.",
            labels,
            registry=None,
        )
        self.last_inference = Gauge(
            "mldm_inference_last_timestamp_seconds",
            "When the model version last answered a request (seconds since the epoch).",
            labels,
            registry=None,
            multiprocess_mode="max",
        )
        batch = (*labels, "batch_size")
        self.batch_executions = Counter(
            _BATCH_METRICS[0], "Model calls by batch size.", batch, registry=None
        )
        self.batch_seconds = Counter(
            _BATCH_METRICS[1],
            "Total time of the model calls by batch size.",
            batch,
            registry=None,
        )
        self.rejected = Counter(
            "mldm_requests_rejected",
            "Requests refused at once by admission control (503 + Retry-After), by model "
            "(or lane) and reason: queue (too many queued), wait (expected wait too long).",
            ("model", "reason"),
            registry=None,
        )
        self._versions: dict[tuple[str, int], _VersionCounters] = {}
        #: Called with (model name, items, queue wait s) after each execution: the histograms.
        self.listeners: list[Callable[[str, int, float], None]] = []
        #: Several workers: every record goes to the counters at once, since another worker
        #: may answer the next scrape from the files. One process: at the next read (`flush`),
        #: so a request adds plain floats only; every reader (`/metrics`, the statistics
        #: extension, a collect of the registry) flushes first, so it reads the same numbers.
        self.immediate = multiprocess_dir() is not None

    def flush(self) -> None:
        """Add every model version's recorded but not yet counted statistics to the counters
        (the event loop's thread, as every `record_*`)."""
        for counters in self._versions.values():
            counters.flush()

    def collectors(self) -> list[Collector]:
        """What `/metrics` shows of the statistics (the per-batch-size counters excepted)."""
        return [
            self.requests,
            self.request_seconds,
            self.items,
            self.executions,
            self.queue_seconds,
            self.compute_input_seconds,
            self.compute_seconds,
            self.compute_output_seconds,
            self.last_inference,
        ]

    def _of(self, name: str, version: int) -> _VersionCounters:
        counters = self._versions.get((name, version))
        if counters is None:
            counters = self._versions[(name, version)] = _VersionCounters(self, name, version)
        return counters

    def record_request(
        self,
        name: str,
        version: int,
        items: int,
        seconds: float,
        ok: bool,
        phases: Phases | None = None,
    ) -> None:
        """One request answered by the data plane (successfully or not) after `seconds`; a
        successful one with where it spent them (`phases`)."""
        counters = self._of(name, version)
        due = counters.due  # in the order of `_VersionCounters.children`
        if ok:
            due[0] += 1
            due[1] += seconds
            due[2] += items
            if phases is not None:
                due[3] += max(phases.queue, 0.0)
                due[4] += phases.compute_input
                due[5] += phases.compute_infer
                due[6] += phases.compute_output
        else:
            due[7] += 1
            due[8] += seconds
        counters.due_last = time.time()
        if self.immediate:
            counters.flush()

    def record_execution(
        self, name: str, version: int, items: int, queue_s: float, compute_s: float
    ) -> None:
        """One model call on `items` items (its oldest request waited `queue_s`): the execution
        count and the batch-size statistics; the per-request times come with `record_request`."""
        counters = self._of(name, version)
        counters.due[9] += 1
        batch = counters.due_batches.get(items)
        if batch is None:
            batch = counters.due_batches[items] = [0.0, 0.0]
        batch[0] += 1
        batch[1] += compute_s
        if self.immediate:
            counters.flush()
        for listener in self.listeners:
            listener(name, items, queue_s)

    def _families(self) -> Iterable[Metric]:
        self.flush()
        path = multiprocess_dir()
        if path is None:
            for collector in (*self.collectors(), self.batch_executions, self.batch_seconds):
                yield from collector.collect()
            return
        names = {*_STATS_METRICS, *_BATCH_METRICS}
        for family in multiprocess.MultiProcessCollector(None, str(path)).collect():
            if family.name in names:
                yield family

    def read(self) -> dict[tuple[str, int], ModelStats]:
        """Every model version's statistics, from the counters of every worker."""
        found: dict[tuple[str, int], ModelStats] = {}
        for family in self._families():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = sample.labels
                key = (labels["model"], int(labels["version"]))
                stats = found.get(key)
                if stats is None:
                    stats = found[key] = ModelStats(*key)
                _add(stats, family.name, labels, sample.value)
        return found

    def of(self, name: str, version: int) -> ModelStats:
        return self.read().get((name, version)) or ModelStats(name, version)


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _add(stats: ModelStats, family: str, labels: dict[str, str], value: float) -> None:
    """Put one counter sample into `stats`."""
    if family == "mldm_inference_requests":
        target = stats.success if labels["outcome"] == "success" else stats.fail
        target.count = int(value)
        if target is stats.success:  # Triton: every phase is counted once per success
            phases = (stats.queue, stats.compute_input, stats.compute_infer, stats.compute_output)
            for phase in phases:
                phase.count = int(value)
    elif family == "mldm_inference_request_seconds":
        target = stats.success if labels["outcome"] == "success" else stats.fail
        target.ns = _ns(value)
    elif family == "mldm_inference_items":
        stats.inference_count = int(value)
    elif family == "mldm_model_executions":
        stats.execution_count = int(value)
    elif family == "mldm_inference_queue_seconds":
        stats.queue.ns = _ns(value)
    elif family == "mldm_inference_compute_input_seconds":
        stats.compute_input.ns = _ns(value)
    elif family == "mldm_inference_compute_seconds":
        stats.compute_infer.ns = _ns(value)
    elif family == "mldm_inference_compute_output_seconds":
        stats.compute_output.ns = _ns(value)
    elif family == "mldm_inference_last_timestamp_seconds":
        stats.last_inference = int(value * 1000)
    elif family in _BATCH_METRICS:
        batch = stats.batches.setdefault(int(labels["batch_size"]), Duration())
        if family == _BATCH_METRICS[0]:
            batch.count = int(value)
        else:
            batch.ns = _ns(value)


class Metrics:
    """The Prometheus metrics of one app, in their own registry (one process), or the metrics of
    every worker read from the multiprocess directory (several)."""

    def __init__(
        self,
        registry: ModelRegistry | None = None,
        stats: InferenceStats | None = None,
        route_models: Mapping[str, str] | None = None,
    ) -> None:
        #: The model behind each task route (`service.tasks.route_models()`): its model label.
        self.route_models: Mapping[str, str] = route_models or {}
        self.multiprocess_dir = multiprocess_dir()
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
            "mldm_http_requests_in_flight",
            "Requests being handled now.",
            registry=self.registry,
            # Several workers: the sum over the live ones (a killed worker's count is dropped).
            multiprocess_mode="livesum",
        )

        def per_model(name: str, text: str, buckets: Sequence[float]) -> Histogram:
            """A histogram of the execution path, labelled by model."""
            return Histogram(name, text, ("model",), buckets=buckets, registry=self.registry)

        self.batch_size = per_model(
            "mldm_batch_size_items",
            "Items per model call made by the execution path (merged batches included).",
            BATCH_SIZE_BUCKETS,
        )
        self.queue_wait = per_model(
            "mldm_batch_queue_wait_seconds",
            "Wait of the oldest request of a batch, from queueing to the model call.",
            QUEUE_WAIT_BUCKETS,
        )
        self._request_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self._execution_children: dict[str, tuple[Any, Any]] = {}
        self.model_registry = registry
        self.model_gauges: _ModelGauges | None = None
        if registry is not None:
            if self.multiprocess_dir is None:
                self.registry.register(_ModelCollector(registry))
            else:
                self.model_gauges = _ModelGauges(registry, self.registry)
        if stats is not None:
            for collector in stats.collectors():
                self.registry.register(_Flushed(collector, stats))
            self.registry.register(stats.rejected)  # not a per-version statistic: not in `read`
            stats.listeners.append(self.observe_execution)

    def observe_execution(self, model: str, items: int, queue_s: float) -> None:
        children = self._execution_children.get(model)
        if children is None:
            children = self._execution_children[model] = (
                self.batch_size.labels(model),
                self.queue_wait.labels(model),
            )
        children[0].observe(items)
        children[1].observe(max(queue_s, 0.0))

    def observe_request(
        self, method: str, route: str, model: str, status: int, seconds: float
    ) -> None:
        # Bounded like the label values: route templates, known models, statuses, HTTP methods.
        key = (method, route, model, status)
        children = self._request_children.get(key)
        if children is None:
            labels = (method, route, model, str(status))
            children = self._request_children[key] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        children[0].inc()
        children[1].observe(seconds)

    def model_label(self, route: str, path_params: dict[str, Any]) -> str:
        """The model a request addressed, or "" (unknown names are not labels: bounded set)."""
        name = path_params.get("name")
        if isinstance(name, str):
            if self.model_registry is not None and name in self.model_registry.model_names():
                return name
            return ""
        return self.route_models.get(route, "")

    def refresh_models(self) -> None:
        """Several workers: write this worker's model states into its gauges (call after a load
        or reload); one process reads them at each scrape instead."""
        if self.model_gauges is not None:
            self.model_gauges.refresh()

    def close(self) -> None:
        """Several workers: this worker ends; its live gauges (in flight, models) stop counting."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.refresh_models()
        mark_dead_workers(self.multiprocess_dir)
        # The documented pattern: a fresh registry whose one collector reads every worker's files.
        merged = CollectorRegistry()
        merged.register(
            _Without(multiprocess.MultiProcessCollector(None, str(self.multiprocess_dir)))
        )
        return generate_latest(merged)


class _Flushed(Collector):
    """A counter of `InferenceStats`, read after the statistics recorded so far are added."""

    def __init__(self, collector: Collector, stats: InferenceStats) -> None:
        self.collector = collector
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        self.stats.flush()
        return self.collector.collect()


class _Without(Collector):
    """The multiprocess collector without the per-batch-size counters (see `_BATCH_METRICS`)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        return (f for f in self.collector.collect() if f.name not in _BATCH_METRICS)


class _ModelGauges:
    """Several workers: each worker's model states as gauges with a `pid` label (`liveall`: one
    series per live worker, as workers load and reload on their own)."""

    def __init__(self, model_registry: ModelRegistry, registry: CollectorRegistry) -> None:
        self.model_registry = model_registry

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode="liveall")

        self.ready = gauge("mldm_model_ready", _MODEL_HELP["ready"], ("model",))
        self.state = gauge("mldm_model_state", _MODEL_HELP["state"], ("model", "state"))
        self.loaded = gauge(
            "mldm_model_version_loaded", _MODEL_HELP["loaded"], ("model", "version")
        )
        self.failed = gauge(
            "mldm_model_version_failed", _MODEL_HELP["failed"], ("model", "version")
        )
        self.latest = gauge("mldm_model_latest_version", _MODEL_HELP["latest"], ("model",))
        labels = ("model", "version", "backend")
        self.backend = gauge("mldm_model_version_backend", _MODEL_HELP["backend"], labels)
        self.refused = gauge("mldm_model_version_backend_refused", _MODEL_HELP["refused"], labels)
        self._loaded: set[tuple[str, str]] = set()
        self._failed: set[tuple[str, str]] = set()

    def refresh(self) -> None:
        loaded: set[tuple[str, str]] = set()
        failed: set[tuple[str, str]] = set()
        for entry in self.model_registry.entries():
            self.ready.labels(entry.name).set(1.0 if entry.ready else 0.0)
            for each in ModelState:
                self.state.labels(entry.name, each.value).set(float(entry.state is each))
            loaded.update((entry.name, str(version)) for version in entry.versions)
            failed.update((entry.name, str(version)) for version in entry.failed)
            self.latest.labels(entry.name).set(float(max(entry.versions, default=0)))
            for kind, names in _backend_labels(entry):
                (self.backend if kind == "backend" else self.refused).labels(*names).set(1.0)
        # A value once written stays in the worker's file (`clear()` would not remove it), so a
        # version unloaded since the last refresh reads 0 instead of 1.
        for gauge, now, before in (
            (self.loaded, loaded, self._loaded),
            (self.failed, failed, self._failed),
        ):
            for key in before - now:
                gauge.labels(*key).set(0.0)
            for key in now:
                gauge.labels(*key).set(1.0)
        self._loaded, self._failed = loaded, failed


_MODEL_HELP = {
    "ready": "1 if the model has a servable version, else 0.",
    "state": "1 for the model's current state (LOADING, AVAILABLE, END = failed), 0 for the "
    "others.",
    "loaded": "1 for each loaded version.",
    "failed": "1 for each version that failed to load.",
    "latest": "The version served when a request names none (0: none loaded).",
    "backend": "1 for each backend (tensorflow, onnxruntime, openvino) serving some batch sizes "
    "of a loaded version (docs/runtimes.md).",
    "refused": "1 for each compiled backend refused for a loaded version (its outputs differ "
    "from TensorFlow's, or it could not load); TensorFlow serves that version.",
}


class _ModelCollector(Collector):
    """Model load state and versions, read from the model registry at each scrape (one process).
    `describe` gives the families empty, for the names."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.model_registry = registry

    def describe(self) -> Iterable[Metric]:
        return self._families(scrape=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(scrape=True)

    def _families(self, scrape: bool) -> Iterator[Metric]:
        ready = GaugeMetricFamily("mldm_model_ready", _MODEL_HELP["ready"], labels=["model"])
        state = GaugeMetricFamily(
            "mldm_model_state", _MODEL_HELP["state"], labels=["model", "state"]
        )
        loaded = GaugeMetricFamily(
            "mldm_model_version_loaded", _MODEL_HELP["loaded"], labels=["model", "version"]
        )
        failed = GaugeMetricFamily(
            "mldm_model_version_failed", _MODEL_HELP["failed"], labels=["model", "version"]
        )
        latest = GaugeMetricFamily(
            "mldm_model_latest_version", _MODEL_HELP["latest"], labels=["model"]
        )
        backend = GaugeMetricFamily(
            "mldm_model_version_backend",
            _MODEL_HELP["backend"],
            labels=["model", "version", "backend"],
        )
        refused = GaugeMetricFamily(
            "mldm_model_version_backend_refused",
            _MODEL_HELP["refused"],
            labels=["model", "version", "backend"],
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
                for kind, labels in _backend_labels(entry):
                    (backend if kind == "backend" else refused).add_metric(labels, 1.0)
        yield from (ready, state, loaded, failed, latest, backend, refused)


def _backend_labels(entry: ModelEntry) -> Iterator[tuple[str, list[str]]]:
    """("backend" | "refused", [model, version, backend]) of each loaded version."""
    for version, model in sorted(entry.versions.items()):
        for name in model.plan.backends:
            yield "backend", [entry.name, str(version), name]
        for name in sorted(model.refused):
            yield "refused", [entry.name, str(version), name]
