"""The protocols benchmark's pure parts: run-to-run noise, the table and issue 10's targets."""

from __future__ import annotations

import math
from typing import Any

from bench import protocols


def test_spread_is_range_over_median() -> None:
    assert protocols.spread([90.0, 100.0, 110.0]) == 0.2
    assert math.isnan(protocols.spread([100.0]))
    assert math.isnan(protocols.spread([math.nan, 5.0]))


def _run(rps: float, p50: float, items: int = 1) -> dict[str, Any]:
    return {
        "rps": rps,
        "items_per_s": rps * items,
        "p50_ms": p50,
        "p99_ms": p50 * 3,
        "errors": 0,
        "server_cpu_us_per_req": 800.0,
    }


def test_render_checks_binary_bulk_and_v2_latency_targets() -> None:
    bulk = 10_000
    results = {
        ("energy", "npy", 1, bulk): [_run(10.0, 100.0, bulk)],
        ("energy", "v2-binary", 1, bulk): [_run(9.0, 110.0, bulk)],
        ("energy", "task", 1, 1): [_run(500.0, 2.0), _run(520.0, 2.0)],
        ("energy", "v2", 1, 1): [_run(450.0, 2.3)],
        ("classify", "v2", 1, 1): [_run(200.0, 5.0)],
    }
    report = {
        "name": "protocols",
        "date": "2026-12-01 22:00 UTC",
        "commit": "abc",
        "dirty": False,
        "wall_s": 60.0,
        "command": "python -m bench protocols",
        "rounds": 2,
        "duration_s": 5.0,
        "bulk_requests": 2,
        "contended": "",
        "rss_after": 700.0,
        "notes": ["x: skipped"],
        "machine": {
            "cores": 2,
            "cpu": "c",
            "memory_gib": 8,
            "python": "3.11",
            "tensorflow": "2",
            "load_before": [0.0],
        },
    }
    text = protocols.render(report, results, bulk)
    assert "- met: energy V2 binary bulk 90,000 items/s = 0.90x the .npy path's" in text
    assert "- NOT met: energy V2 JSON single-item p50 2.30 ms = 1.15x the task route's" in text
    assert "- not measured: classify V2 binary bulk vs .npy" in text
    assert "| energy | task JSON | 1 | 1 | 510 | 510.0 | 2.00 | 6.0 | 0 | 800 | 4% |" in text
    assert "x: skipped" in text
