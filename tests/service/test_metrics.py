"""The inference statistics and their Prometheus view: one set of counters, two readers; with
several workers, the whole server's."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import InferenceStats, Metrics, Phases, mark_dead_workers
from tests.service.helpers import images, samples, value
from tests.service.live_server import live_server


def test_stats_count_requests_items_executions_and_batch_sizes() -> None:
    stats = InferenceStats()
    stats.record_execution("m", 1, 5, 0.001, 0.01)
    stats.record_execution("m", 1, 5, 0.002, 0.03)
    stats.record_request("m", 1, 10, 0.05, ok=True)
    stats.record_request("m", 1, 0, 0.001, ok=False)
    entry = stats.of("m", 1)
    assert (entry.inference_count, entry.execution_count) == (10, 2)
    assert (entry.success.count, entry.fail.count) == (1, 1)
    assert entry.batches[5].count == 2 and entry.batches[5].ns == 40_000_000


def test_stats_phases_are_per_successful_request_as_triton_counts_them() -> None:
    """Two requests merged into one execution: each phase is counted once per successful
    request (perf_analyzer refuses compute counts that differ), the batch's model time once
    per request in it; the execution and its batch size once."""
    stats = InferenceStats()
    stats.record_execution("m", 1, 4, 0.001, 0.02)
    for _ in range(2):
        stats.record_request("m", 1, 2, 0.03, ok=True, phases=Phases(0.004, 0.001, 0.02, 0.002))
    stats.record_request("m", 1, 0, 0.001, ok=False)
    entry = stats.of("m", 1)
    assert entry.execution_count == 1 and entry.batches[4].count == 1
    phases = (entry.queue, entry.compute_input, entry.compute_infer, entry.compute_output)
    assert [p.count for p in phases] == [entry.success.count] * 4 == [2] * 4
    assert [p.ns for p in phases] == [8_000_000, 2_000_000, 40_000_000, 4_000_000]


def test_prometheus_reads_the_same_counters_and_observes_batches() -> None:
    stats = InferenceStats()
    metrics = Metrics(stats=stats)
    stats.record_execution("m", 2, 3, 0.0, 0.5)
    stats.record_request("m", 2, 3, 0.6, ok=True, phases=Phases(0.0, 0.05, 0.5, 0.05))
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    labels = (("model", "m"), ("version", "2"))
    assert found[("mldm_inference_items_total", labels)] == 3
    assert found[("mldm_model_executions_total", labels)] == 1
    assert found[("mldm_inference_compute_seconds_total", labels)] == 0.5
    assert found[("mldm_batch_size_items_sum", (("model", "m"),))] == 3


def _per_worker(metrics_dir: Path, name: str, **labels: str) -> dict[int, float]:
    """`name{labels}` of each worker alone, read from that worker's own counter file."""
    found = {}
    for path in metrics_dir.glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            text = generate_latest(_collected(alone)).decode()
        found[int(path.stem.split("_")[1])] = value(text, name, **labels) or 0.0
    return found


def _collected(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)
    return registry


@pytest.fixture(scope="module")
def two_workers(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The real server with 2 workers, and the metrics directory `mldm-serve` made for them."""
    tmp = tmp_path_factory.mktemp("two-workers")
    # Admission by expected wait (250 ms by default) may refuse a request with 503 on a loaded
    # 2-core machine; this test counts answers, so it lets every request wait.
    env = {
        "MLDM_WORKERS": "2",
        "MLDM_LOG_LEVEL": "warning",
        "TMPDIR": str(tmp),
        "MLDM_QUEUE_MAX_WAIT_MS": "30000",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with live_server(tiny_model_dir, tmp / "server.log", env) as running:
        (metrics_dir,) = tmp.glob("mldm-metrics-*")
        yield running.url, metrics_dir
    assert not list(tmp.glob("mldm-metrics-*")), "the metrics directory outlived the server"


@pytest.mark.slow
def test_metrics_of_two_workers_report_the_whole_server(two_workers: tuple[str, Path]) -> None:
    url, metrics_dir = two_workers
    route = {"method": "POST", "route": "/api/v1/digits/classify", "model": "digit_classifier"}
    body = {"images": images(3).tolist(), "scale": "unit"}

    def classify(_: int) -> int:
        # A new connection each: the kernel hands it to whichever worker accepts first.
        return httpx.post(f"{url}/api/v1/digits/classify", json=body, timeout=30).status_code

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        # Until both workers have served some (bounded): the spread is up to the kernel.
        while sent < 400:
            assert set(pool.map(classify, range(40))) == {200}
            sent += 40
            served = _per_worker(metrics_dir, "mldm_http_requests_total", **route, status="200")
            if len(served) == 2 and all(served.values()):
                break
    assert len(served) == 2 and min(served.values()) > 0, served
    assert sum(served.values()) == sent

    answered_by: set[int] = set()
    for _ in range(100):
        response = httpx.get(f"{url}/metrics", timeout=30)  # a new connection each time
        assert response.status_code == 200
        text = response.text
        assert value(text, "mldm_http_requests_total", **route, status="200") == sent
        assert (
            value(text, "mldm_http_request_duration_seconds_count", **route, status="200") == sent
        )
        classifier = {"model": "digit_classifier", "version": "1"}
        assert value(text, "mldm_inference_requests_total", **classifier, outcome="success") == sent
        assert value(text, "mldm_inference_items_total", **classifier) == 3 * sent
        # Only the scrape itself is in flight; each worker's own count is back to 0.
        assert value(text, "mldm_http_requests_in_flight") == 1
        # Model states: one series per live worker.
        ready = {
            key: v
            for key, v in samples(text).items()
            if key[0] == "mldm_model_ready" and ("model", "digit_classifier") in key[1]
        }
        assert len(ready) == 2 and set(ready.values()) == {1.0}, ready
        stats = httpx.get(f"{url}/v2/models/digit_classifier/stats", timeout=30).json()
        assert stats["model_stats"][0]["inference_count"] == 3 * sent
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == sent
        scrapes = _per_worker(
            metrics_dir,
            "mldm_http_requests_total",
            method="GET",
            route="/metrics",
            model="",
            status="200",
        )
        answered_by = {pid for pid, count in scrapes.items() if count}
        if len(answered_by) == 2:
            break
    assert len(answered_by) == 2, "every scrape went to one worker"


@pytest.mark.slow
def test_metrics_of_two_workers_survive_a_killed_worker(two_workers: tuple[str, Path]) -> None:
    url, metrics_dir = two_workers
    route = {"method": "POST", "route": "/api/v1/digits/classify", "model": "digit_classifier"}

    def scrape() -> str:
        response = httpx.get(f"{url}/metrics", timeout=30)
        assert response.status_code == 200
        return response.text

    def ready_pids(text: str) -> set[str]:
        return {
            dict(labels)["pid"]
            for (name, labels), v in samples(text).items()
            if name == "mldm_model_ready" and ("model", "digit_classifier") in labels and v == 1
        }

    before = scrape()
    served = value(before, "mldm_http_requests_total", **route, status="200")
    assert served, "runs after test_metrics_of_two_workers_report_the_whole_server"
    victim = int(min(ready_pids(before)))
    os.kill(victim, signal.SIGKILL)
    # uvicorn starts a new worker; until its models are loaded one worker answers alone.
    deadline = time.monotonic() + 120
    while True:
        text = scrape()
        pids = ready_pids(text)
        if len(pids) == 2 and str(victim) not in pids:
            break
        assert time.monotonic() < deadline, f"no replacement worker: {pids}"
        time.sleep(0.5)
    # What the killed worker served still counts; its live gauges do not.
    assert value(text, "mldm_http_requests_total", **route, status="200") == served
    assert value(text, "mldm_http_requests_in_flight") == 1
    assert not list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
    assert list(metrics_dir.glob(f"counter_{victim}.db"))


def test_metrics_drop_live_gauges_of_dead_workers(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # reaped: its pid names no process
    key = mmap_key("mldm_http_requests_in_flight", "mldm_http_requests_in_flight", [], [], "")
    for kind in ("gauge_livesum", "counter"):
        values = MmapedDict(str(tmp_path / f"{kind}_{gone.pid}.db"))
        values.write_value(key, 1.0, 0.0)
        values.close()
    mark_dead_workers(tmp_path)
    # The gone worker's in-flight count no longer counts; what it served still does.
    assert [p.name for p in tmp_path.iterdir()] == [f"counter_{gone.pid}.db"]


async def test_v2_stats_hold_the_invariants_perf_analyzer_reads(client: httpx.AsyncClient) -> None:
    """perf_analyzer (Triton 2.60) aborts unless compute_input, compute_infer and compute_output
    counts agree; it divides each phase's ns by the success count. Concurrent requests (merged
    by the batcher) and one failure: every phase counted once per successful request, with time
    in it, the phases within the requests' own time, and executions per batch adding up."""
    tensor = {"name": "potential", "shape": [2, 64], "datatype": "FP32", "data": [0.1] * 128}
    url = "/v2/models/energy_from_potential/versions/1/infer"
    answers = await asyncio.gather(*(client.post(url, json={"inputs": [tensor]}) for _ in range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    bad = {**tensor, "data": [float("nan")] * 128}  # refused by the data plane: a failure
    assert (await client.post(url, content=json.dumps({"inputs": [bad]}))).status_code == 422
    [stats] = (await client.get("/v2/models/energy_from_potential/versions/1/stats")).json()[
        "model_stats"
    ]
    inference = stats["inference_stats"]
    success = inference["success"]
    assert success["count"] == 8 and inference["fail"]["count"] == 1
    phases = ("queue", "compute_input", "compute_infer", "compute_output")
    assert [inference[p]["count"] for p in phases] == [success["count"]] * 4
    assert all(inference[p]["ns"] > 0 for p in ("compute_input", "compute_infer", "compute_output"))
    assert sum(inference[p]["ns"] for p in phases) <= success["ns"]
    batches = stats["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batches) == stats["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == 16
    assert stats["inference_count"] == 16 and 1 <= stats["execution_count"] <= 8


def test_one_process_statistics_reach_the_counters_at_the_next_read() -> None:
    """In one process a request adds plain floats; a scrape or a statistics read adds them to
    the counters first, once: both read every request, and a second read counts none twice."""
    stats = InferenceStats()
    metrics = Metrics(None, stats)
    assert not stats.immediate
    stats.record_request("m", 1, 3, 0.5, ok=True, phases=Phases(0.1, 0.2, 0.3, 0.4))
    stats.record_request("m", 1, 0, 0.25, ok=False)
    stats.record_execution("m", 1, 3, 0.1, 0.3)
    success = stats.requests.labels("m", "1", "success")
    assert success._value.get() == 0  # not yet: nothing has read them
    scraped = {
        (s.name, s.labels.get("outcome")): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.labels.get("model") == "m"
    }
    assert scraped[("mldm_inference_requests_total", "success")] == 1
    assert scraped[("mldm_inference_requests_total", "fail")] == 1
    assert scraped[("mldm_inference_items_total", None)] == 3
    assert scraped[("mldm_model_executions_total", None)] == 1
    assert scraped[("mldm_inference_compute_seconds_total", None)] == pytest.approx(0.3)
    for _ in range(2):
        read = stats.of("m", 1)
        assert (read.success.count, read.fail.count, read.inference_count) == (1, 1, 3)
        assert read.success.ns == 500_000_000 and read.fail.ns == 250_000_000
        assert read.queue.ns == 100_000_000 and read.compute_output.ns == 400_000_000
        assert read.execution_count == 1 and read.batches[3].count == 1
        assert read.last_inference > 0
    stats.record_request("m", 1, 2, 0.5, ok=True)
    assert stats.of("m", 1).inference_count == 5


def test_statistics_reach_the_counters_at_once_with_several_workers() -> None:
    stats = InferenceStats()
    stats.immediate = True  # as with PROMETHEUS_MULTIPROC_DIR: another worker may be scraped
    stats.record_request("m", 1, 3, 0.5, ok=True)
    stats.record_execution("m", 1, 3, 0.1, 0.3)
    assert stats.requests.labels("m", "1", "success")._value.get() == 1
    assert stats.items.labels("m", "1")._value.get() == 3
    assert stats.batch_executions.labels("m", "1", "3")._value.get() == 1
