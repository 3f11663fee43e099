"""bench.soak's statistics and report, on hand-made samples (no server, no load)."""

from __future__ import annotations

import math

from bench.soak import Sample, SoakRun, render_markdown, summarise, workload


def _run() -> SoakRun:
    run = SoakRun(rate=10.0, duration_s=10.0)
    for i in range(100):
        status: int | str = 200 if i != 57 else 503
        run.samples.append(Sample(i / 10, 0.010 + (0.5 if i == 80 else 0.0), status, "energy"))
    run.rss_kib = [(0.0, 100 * 1024), (5.0, 104 * 1024), (10.0, 105 * 1024)]
    return run


def test_summarise_counts_errors_and_memory_growth() -> None:
    summary = summarise(_run(), window_s=5.0)
    assert (summary["requests"], summary["ok"], summary["errors"]) == (100, 99, 1)
    assert summary["error_kinds"] == {"energy: 503": 1}
    assert math.isclose(summary["rss_growth"], 0.05)
    assert (summary["rss_start_mib"], summary["rss_end_mib"]) == (100.0, 105.0)


def test_summarise_measures_growth_from_the_end_of_the_warm_up() -> None:
    summary = summarise(_run(), window_s=5.0, warmup_s=4.0)
    assert summary["rss_after_warmup_mib"] == 104.0  # the first sample at or after 4 s
    assert math.isclose(summary["rss_growth_after_warmup"], 1 / 104)
    assert math.isclose(summary["rss_growth"], 0.05)  # from the start, still reported


def test_render_markdown_reports_the_batch_sizes_run() -> None:
    report = _report()
    report["batch_sizes"] = {"energy_from_potential": {1: 40, 3: 2}}
    report["config"] = {"energy_from_potential": "on, max 256"}
    report["soak"] = summarise(_run(), window_s=5.0, warmup_s=5.0)
    text = render_markdown(report)
    assert "| energy_from_potential | on, max 256 | 1: 40, 3: 2 |" in text
    assert "- met: memory growth after the warm-up (5 s, 104.0 MiB): +1.0% (target < 5%)" in text


def test_windows_split_by_send_time_with_p99_per_window() -> None:
    first, second = summarise(_run(), window_s=5.0)["windows"]
    assert (first["requests"], first["errors"], second["requests"], second["errors"]) == (
        50,
        0,
        50,
        1,
    )
    assert math.isclose(first["max_ms"], 10.0)
    assert math.isclose(second["max_ms"], 510.0)
    assert (first["rss_mib"], second["rss_mib"]) == (104.0, 105.0)


def _report() -> dict:
    return {
        "name": "soak",
        "date": "2026-11-24 09:00 UTC",
        "commit": "abc1234",
        "dirty": False,
        "command": "python -m bench soak --tiny",
        "contended": "",
        "machine": {
            "cores": 2,
            "cpu": "cpu",
            "memory_gib": 8.0,
            "python": "3.11",
            "tensorflow": "2.21",
            "uvicorn": "0.54",
            "load_before": [0.1, 0.1, 0.1],
        },
        "training": False,
        "models_source": "tiny test models",
        "models": ["energy_from_potential"],
        "workload": ["energy"],
        "utilisation": 0.8,
        "calibration": {
            "concurrency": 8,
            "elapsed_s": 10.0,
            "rps": 12.5,
            "p99_ms": 3.0,
            "errors": 0,
        },
        "rss_after_start_mib": 90.0,
        "ready_after": 200,
        "soak": summarise(_run(), window_s=5.0),
    }


def test_render_markdown_flags_missed_targets() -> None:
    text = render_markdown(_report())
    assert text.startswith("# Soak, 2026-11-24 09:00 UTC, commit abc1234")
    assert "Command: `python -m bench soak --tiny`" in text
    assert "- NOT met: errors 1 (target 0)" in text
    assert "(peak 105.0): +5.0% from the start" in text
    assert (
        "- NOT met: memory growth after the warm-up (0 s, 100.0 MiB): +5.0% (target < 5%)" in text
    )
    assert "| 5-10 s | 50 | 1 |" in text


def test_workload_covers_only_served_models() -> None:
    names = [name for name, _ in workload(["energy_from_potential"], code=None)]
    assert names == ["energy", "v2 energy"]
    names = [name for name, _ in workload(list(_ALL), code="AQAB")]
    assert names == [
        "classify",
        "tfserving classify",
        "compress",
        "decompress",
        "energy",
        "v2 energy",
        "density",
    ]


_ALL = (
    "digit_classifier",
    "digit_encoder",
    "digit_decoder",
    "energy_from_potential",
    "energy_from_density",
)
