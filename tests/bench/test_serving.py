"""The serving benchmark's pure parts: statistics, HTTP framing, results table and targets.

No server is started and nothing is timed here; `python -m bench serving` is the benchmark.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import __main__ as dispatcher
from bench import harness, matrix
from bench.bodies import npy_bytes, potentials
from bench.driver import Body, ResponseParser, percentile, summary
from bench.serving import RAW_BATCH, evaluate_targets, render_markdown


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = list(np.random.default_rng(0).exponential(size=101))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # unsorted input
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_counts_errors_apart() -> None:
    result = summary(8, 10, [0.001, 0.002, 0.003, 0.004], 2, elapsed_s=2.0, client_cpu_s=0.5)
    assert result["requests"] == 6
    assert result["ok"] == 4 and result["errors"] == 2
    assert result["rps"] == 2.0 and result["items_per_s"] == 20.0
    assert result["p50_ms"] == pytest.approx(2.5)  # errors are not in the latencies
    assert result["max_ms"] == pytest.approx(4.0)
    assert result["client_cpu_us_per_req"] == pytest.approx(0.5 / 6 * 1e6)
    empty = summary(1, 1, [], 3, elapsed_s=1.0, client_cpu_s=0.0)
    assert math.isnan(empty["p50_ms"]) and empty["rps"] == 0.0


def test_request_encodes_head_and_body() -> None:
    wire = Body("POST", "/x?scale=unit", b"abc", (("Content-Type", "a/b"),)).encode("h:1")
    assert wire == (
        b"POST /x?scale=unit HTTP/1.1\r\nHost: h:1\r\nContent-Type: a/b\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )


def test_response_parser_split_and_pipelined() -> None:
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
    two = b"HTTP/1.1 422 Unprocessable\r\ncontent-length: 2\r\n\r\n{}"
    parser = ResponseParser()
    wire = one + two
    got = []
    for i in range(0, len(wire), 7):  # arbitrary TCP segment boundaries
        got += parser.feed(wire[i : i + 7])
    assert [(r.status, r.body) for r in got] == [(200, b"hello"), (422, b"{}")]
    assert got[0].headers["x"] == "y"


def test_response_parser_chunked() -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    parser = ResponseParser()
    got = parser.feed(wire[:30]) + parser.feed(wire[30:])
    assert [(r.status, r.body) for r in got] == [(200, b"wikipedia"), (204, b"")]


def test_npy_bytes_round_trip() -> None:
    array = potentials(3, seed=0)
    assert array.shape == (3, 64) and array.dtype == np.float32
    loaded = np.load(io.BytesIO(npy_bytes(array)))
    np.testing.assert_array_equal(loaded, array)


def _point(
    server: str, kind: str, c: int, rps: float, p50: float, p99: float, items: int = 1
) -> dict:
    return {
        "server": server,
        "kind": kind,
        "model": "digit_classifier",
        "concurrency": c,
        "items": items,
        "round": 0,
        "requests": 100,
        "ok": 100,
        "errors": 0,
        "elapsed_s": 1.0,
        "rps": rps,
        "items_per_s": rps * items,
        "p50_ms": p50,
        "p99_ms": p99,
        "client_cpu_us_per_req": 20.0,
        "server_cpu_us_per_req": 500.0,
        "rss_mib": 600.0,
    }


def _report() -> dict[str, Any]:
    stats = matrix.aggregate(
        [
            _point("service", "task", 1, 900.0, 1.1, 3.0),
            _point("service", "task", 64, 2000.0, 30.0, 60.0),
            _point("naive", "task", 64, 50.0, 900.0, 1500.0),
            _point("service", "npy", 1, 4.0, 200.0, 260.0, items=10_000),
        ]
    )
    raw = {"digit_classifier": {RAW_BATCH: {"items_per_s": 60_000.0, "ms_per_call": 4.3}}}
    return {
        "name": "serving",
        "date": "2026-11-24 09:30 UTC",
        "commit": "abc1234",
        "dirty": False,
        "command": "python -m bench serving",
        "machine": {
            "cores": 2,
            "cpu": "Test CPU",
            "memory_gib": 8.0,
            "python": "3.12",
            "tensorflow": "2.21.0",
            "uvicorn": "0",
            "load_before": [0.1, 0.2, 0.3],
        },
        "contended": "",
        "models": {"digit_classifier": 1},
        "workers": 1,
        "client": "raw",
        "duration_s": 10.0,
        "bulk_max_requests": 10,
        "warmup_s": 1.0,
        "stats": stats,
        "raw": raw,
        "ceiling": [("raw", _point("canned", "-", 64, 30_000.0, 2.0, 5.0))],
        "targets": evaluate_targets(stats, raw),
        "memory": [
            {
                "workers": 1,
                "processes": [
                    {"pid": 1, "role": "uvicorn (serves)", "rss": 512_000, "pss": 400_000}
                ],
                "rss": 512_000,
                "pss": 400_000,
            }
        ],
        "profiles": [],
        "notes": ["a note"],
    }


def test_targets_are_computed_from_the_figures() -> None:
    assert _report()["targets"] == [
        "met: classify, 1 item, concurrency 1: p50 1.10 ms (target <= 2 ms)",
        # 40x naive, but p99 60 ms
        "NOT met: classify, 1 item, concurrency 64: 40.0x naive req/s, p99 60.0 ms "
        "(target >= 20x, <= 50 ms)",
        "met: digit_classifier, 10000 items, npy, concurrency 1: 67% of the raw batch-256 "
        "throughput (40,000 of 60,000 items/s; target >= 50%)",
    ]  # no energy figures, no energy verdicts


def test_results_file_has_date_commit_and_tables(tmp_path: Path) -> None:
    report = _report()
    path = harness.write(report, render_markdown(report), tmp_path)
    assert path.name == "serving-2026-11-24-abc1234.md"
    assert json.loads(path.with_suffix(".json").read_text())["commit"] == "abc1234"
    text = path.read_text()
    assert text.startswith("# Serving benchmark, 2026-11-24 09:30 UTC, commit abc1234")
    assert "2 cores (Test CPU)" in text and "TensorFlow 2.21.0" in text
    row = "| digit_classifier | 64 | 1 | service | task JSON | 2,000 | 2,000 | 30.00 | 60.0 | 0 |"
    assert row in text
    assert "| digit_classifier | task JSON | 1 | 64 | 40.0x | - |" in text  # ours / naive
    assert "| digit_classifier | .npy | 10,000 | 1 | - | 67% |" in text  # of raw
    assert "| 1 | **total** | 500 | 391 |" in text
    assert "- met: classify, 1 item" in text and "- NOT met: classify, 1 item" in text
    assert "| raw | 64 | 100 | 30,000 | 2.000 | 5.000 | 20 |" in text  # the client's ceiling
    assert "- a note" in text


def test_dispatcher_finds_the_scenario_files(capsys: pytest.CaptureFixture[str]) -> None:
    names = dispatcher.scenarios()
    for name in ("serving", "peers", "soak", "overhead", "memshapes"):
        assert name in names
    assert not dispatcher.LIBRARY & set(names)  # the harness's own modules are no scenarios
    assert dispatcher.main(["serving", "soak", "--duration", "1"]) == 2
    assert dispatcher.main(["nope"]) == 2


def test_readme_scenario_example_builds_on_the_harness(capsys: pytest.CaptureFixture[str]) -> None:
    text = (harness.REPO / "bench" / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "bench/README.md", "exec"), namespace)
    with pytest.raises(SystemExit) as done:
        namespace["main"](["--help"])
    assert done.value.code == 0
    assert "--quick" in capsys.readouterr().out
