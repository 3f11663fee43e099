"""The protocols benchmark's verdicts and results file, from hand-made figures."""

from __future__ import annotations

from typing import Any

from bench import matrix, protocols


def _point(kind: str, rps: float, p50: float, items: int = 1, model: str = "e") -> dict[str, Any]:
    return {
        "server": "ours",
        "kind": kind,
        "model": {"e": "energy_from_potential", "c": "digit_classifier"}[model],
        "concurrency": 1,
        "items": items,
        "round": 0,
        "rps": rps,
        "items_per_s": rps * items,
        "p50_ms": p50,
        "p99_ms": p50 * 3,
        "errors": 0,
        "requests": 10,
        "server_cpu_us_per_req": 800.0,
        "client_cpu_us_per_req": 50.0,
        "rss_mib": 700.0,
    }


def test_render_checks_binary_bulk_and_v2_latency_targets() -> None:
    bulk = 10_000
    points = [
        _point("npy", 10.0, 100.0, bulk),
        _point("v2-binary", 9.0, 110.0, bulk),
        _point("task", 500.0, 2.0),
        {**_point("task", 520.0, 2.0), "round": 1},
        _point("v2", 450.0, 2.3),
        _point("v2", 200.0, 5.0, model="c"),
    ]
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
        "bulk_items": bulk,
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
        "stats": matrix.aggregate(points),
    }
    text = protocols.render(report)
    assert "- met: energy V2 binary bulk 90,000 items/s = 0.90x the .npy path's" in text
    assert "- NOT met: energy V2 JSON single-item p50 2.30 ms = 1.15x the task route's" in text
    assert "- not measured: classify V2 binary bulk vs .npy" in text
    row = (
        "| energy_from_potential | 1 | 1 | ours | task JSON | 510.0 | 510.0 | 2.00 | 6.0 | 0 | 20 |"
    )
    assert row in text
    assert "| 4% |" in text  # (520 - 500) / 510 between the rounds
    assert "x: skipped" in text
