"""The wrk driver: its generated Lua script, the parsing of its result line, one real short run.

The real run needs Debian's `wrk` and is skipped without it; nothing else starts a process.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import wrk
from bench.serving import REPO


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
    result = wrk.parse("Running 2s test\n" + line + "\n", client_cpu_s=0.25)
    assert result.requests == 1000 and result.non_2xx == 10 and result.socket_errors == 3
    assert result.errors == 13 and result.timeouts == 2
    assert result.rps == pytest.approx(990 / 2.0)  # refused requests are not throughput
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (1.5, 9.0, 12.0)
    assert result.as_dict()["client_cpu_s"] == 0.25


def test_parse_without_answers_gives_no_latency() -> None:
    line = wrk.MARKER + (
        '{"requests": 0, "duration_us": 1000000, "status": 0, "connect": 5, "read": 0, '
        '"write": 0, "timeout": 0, "p50_us": 0, "p90_us": 0, "p99_us": 0, "max_us": 0, '
        '"mean_us": 0}'
    )
    result = wrk.parse(line)
    assert math.isnan(result.p50_ms) and result.rps == 0.0 and result.errors == 5


def test_parse_without_result_line_fails() -> None:
    with pytest.raises(ValueError, match="no result line"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_command_bounds_threads_duration_and_timeout(tmp_path: Path) -> None:
    command = wrk.command("http://127.0.0.1:1", tmp_path / "s.lua", 64, 4.6, 10.0)
    assert command[1:9] == ["-t", "2", "-c", "64", "-d", "5s", "--timeout", "10s"]
    assert wrk.command("http://x", tmp_path / "s.lua", 1, 1, 1)[1:3] == ["-t", "1"]


@pytest.mark.skipif(wrk.executable() is None, reason="wrk is not installed (apt-get install wrk)")
def test_run_against_canned_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "--canned-server", str(port)], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        body = wrk.Body("POST", "/", b"{}", (("Content-Type", "application/json"),))
        result = wrk.run(f"http://127.0.0.1:{port}", [body, body], 2, 1.0, tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.requests > 50 and result.errors == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.client_cpu_s > 0
