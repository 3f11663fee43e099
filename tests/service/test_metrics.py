"""The inference statistics and their Prometheus view: one set of counters, two readers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.metrics import InferenceStats, Metrics


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


def test_prometheus_reads_the_same_counters_and_observes_batches() -> None:
    stats = InferenceStats()
    metrics = Metrics(stats=stats)
    stats.record_execution("m", 2, 3, 0.0, 0.5)
    stats.record_request("m", 2, 3, 0.6, ok=True)
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
