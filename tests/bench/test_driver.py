"""The load driver: wrk's generated Lua script and result line, and short real runs of the
Python client and of wrk (skipped without Debian's `wrk`) against the canned server."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench import driver as wrk
from bench import harness
from bench.driver import Body, ResponseParser, percentile, summary
from tests.bench import canned as double


def test_lua_script_formats_each_body_once_and_reports_json(tmp_path: Path) -> None:
    bodies = [
        wrk.Body("POST", "/v2/models/m/infer", b"{}", (("Content-Type", "application/json"),)),
        wrk.Body("GET", '/a"b', b""),
    ]
    files = [tmp_path / "0.bin", tmp_path / "1.bin"]
    script = wrk.lua_script(bodies, files)
    assert script.count(', file = "') == 2
    assert '["Content-Type"] = "application/json"' in script
    assert 'path = "/a\\"b"' in script  # quotes escaped for Lua
    assert "wrk.format(spec.method, spec.path, spec.headers, payload)" in script
    assert wrk.MARKER in script and "latency:percentile(99)" in script


def test_parse_reads_counts_and_percentiles() -> None:
    line = (
        wrk.MARKER + '{"requests": 1000, "duration_us": 2000000, "status": 10, "connect": 0, '
        '"read": 1, "write": 0, "timeout": 2, "p50_us": 1500, "p90_us": 2500, '
        '"p99_us": 9000, "max_us": 12000, "mean_us": 1700.5}'
    )
    result = wrk.parse("Running 2s test\n" + line + "\n", 8, items=2, cpu_s=0.25)
    assert result["requests"] == 1000 and result["ok"] == 990
    assert result["errors"] == 13 and result["timeouts"] == 2
    assert result["rps"] == pytest.approx(990 / 2.0)  # refused requests are not throughput
    assert result["items_per_s"] == pytest.approx(990.0)
    assert (result["p50_ms"], result["p99_ms"], result["max_ms"]) == (1.5, 9.0, 12.0)
    assert result["client_cpu_us_per_req"] == pytest.approx(250.0)


def test_parse_without_answers_gives_no_latency() -> None:
    line = wrk.MARKER + (
        '{"requests": 0, "duration_us": 1000000, "status": 0, "connect": 5, "read": 0, '
        '"write": 0, "timeout": 0, "p50_us": 0, "p90_us": 0, "p99_us": 0, "max_us": 0, '
        '"mean_us": 0}'
    )
    result = wrk.parse(line)
    assert math.isnan(result["p50_ms"]) and result["rps"] == 0.0 and result["errors"] == 5


def test_parse_without_result_line_fails() -> None:
    with pytest.raises(ValueError, match="no result line"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_unknown_client_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown client 'httpx'"):
        wrk.run("http://127.0.0.1:1", [BODY], 1, 1.0, tmp_path, client="httpx")


def test_command_bounds_threads_duration_and_timeout(tmp_path: Path) -> None:
    command = wrk.wrk_command("http://127.0.0.1:1", tmp_path / "s.lua", 64, 4.6, 10.0)
    assert command[1:9] == ["-t", "2", "-c", "64", "-d", "5s", "--timeout", "10s"]
    assert wrk.wrk_command("http://x", tmp_path / "s.lua", 1, 1, 1)[1:3] == ["-t", "1"]


@pytest.fixture(scope="module")
def canned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Server]:
    with harness.running(double.server(tmp_path_factory.mktemp("canned")), 30) as server:
        yield server


BODY = wrk.Body("POST", "/", b"{}", (("Content-Type", "application/json"),))


def test_python_client_against_canned_server(canned: harness.Server, tmp_path: Path) -> None:
    result = wrk.run(canned.url, [BODY, BODY], 2, 2.0, tmp_path, items=3, client="raw")
    # A working client answers thousands a second here; on a 2-core machine busy with other
    # jobs the bound only says that the loop runs and keeps going.
    assert result["requests"] > 20 and result["errors"] == 0
    assert result["items_per_s"] == pytest.approx(3 * result["rps"])
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["client_cpu_us_per_req"] > 0


def test_request_cap_bounds_a_python_run(canned: harness.Server, tmp_path: Path) -> None:
    result = wrk.run(canned.url, [BODY], 4, 30.0, tmp_path, max_requests=40)
    assert result["requests"] == 40 and result["elapsed_s"] < 10


def test_python_client_counts_a_refused_connection(tmp_path: Path) -> None:
    result = wrk.run(
        f"http://127.0.0.1:{harness.free_port()}", [BODY], 1, 1.0, tmp_path, max_requests=5
    )
    assert result["ok"] == 0 and result["errors"] == 5


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_wrk_against_canned_server(canned: harness.Server, tmp_path: Path) -> None:
    result = wrk.run(canned.url, [BODY, BODY], 2, 1.0, tmp_path, client="wrk")
    assert result["requests"] > 50 and result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["client_cpu_us_per_req"] > 0


def test_open_loop_sends_at_the_rate_in_bursts(canned: harness.Server) -> None:
    pairs = [("a", BODY), ("b", BODY)]
    samples = asyncio.run(wrk.open_loop(canned.port, pairs, 40.0, 1.0, burst=2))
    assert len(samples) == 40 and {s.status for s in samples} == {200}
    offsets = sorted(s.scheduled_s for s in samples)
    assert offsets[:4] == [0.0, 0.0, 0.05, 0.05]  # two of one kind at each scheduled time
    assert [s.kind for s in sorted(samples, key=lambda s: s.scheduled_s)][:4] == [
        "a",
        "a",
        "b",
        "b",
    ]
    assert all(s.latency_s > 0 for s in samples)


def test_open_loop_counts_what_it_could_not_send(tmp_path: Path) -> None:
    samples = asyncio.run(wrk.open_loop(harness.free_port(), [("a", BODY)], 20.0, 0.5))
    assert len(samples) == 10 and all(s.status == "ConnectionRefusedError" for s in samples)


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_wrk_counts_answers_by_status(canned: harness.Server, tmp_path: Path) -> None:
    result = wrk.run_wrk(canned.url, [BODY], 2, 1.0, tmp_path, statuses=True)
    assert result["statuses"]["200"] == result["ok"] > 50
    assert result["statuses"]["503"] == result["statuses"]["5xx"] == 0


def test_closed_loop_samples_every_answer_and_a_refusal(canned: harness.Server) -> None:
    samples = asyncio.run(wrk.closed_loop("127.0.0.1", canned.port, [BODY], 2, cap=30))
    assert len(samples) == 30 and {s.status for s in samples} == {200}
    assert all(s.latency_s > 0 for s in samples)
    refused = asyncio.run(wrk.closed_loop("127.0.0.1", harness.free_port(), [BODY], 1, cap=3))
    assert [s.status for s in refused] == ["ConnectionRefusedError"] * 3


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
