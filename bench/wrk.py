"""Drive a server with `wrk` (Debian's package), the neutral load generator of the peer runs.

`wrk` is written in C and shipped by none of the servers under test, so no server is measured
with its own client. One run: `connections` keep-alive connections over `threads` threads, for
`duration_s`, cycling through prepared request bodies (a Lua `request` hook returns requests
formatted once in `init`, so the client does no work per request beyond sending it). A Lua
`done` hook prints the counts and latency percentiles as one JSON line, which `parse` reads.

The Lua script is generated per run (`lua_script`) and reads the bodies from files, so bodies
of any size and bytes (`.npy`, V2 binary) go through unchanged.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "MLDM-WRK "


@dataclass(frozen=True)
class Body:
    """One request: method, path (with query), headers and payload."""

    method: str
    path: str
    payload: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured (latencies in ms) and what the client itself spent."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    client_cpu_s: float

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def rps(self) -> float:
        """Answered requests per second, failed ones excluded."""
        good = max(self.requests - self.non_2xx, 0)
        return good / self.seconds if self.seconds > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "client_cpu_s": self.client_cpu_s,
        }


def executable() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    """A Lua long-bracket-free quoted string (paths and header values: printable ASCII)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_script(bodies: Sequence[Body], body_files: Sequence[Path]) -> str:
    """The script: format each request once per thread, cycle through them, report in JSON."""
    entries = []
    for body, path in zip(bodies, body_files, strict=True):
        headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in body.headers)
        entries.append(
            f"  {{method = {_lua_string(body.method)}, path = {_lua_string(body.path)}, "
            f"file = {_lua_string(str(path))}, headers = {{{headers}}}}},"
        )
    return (
        "local specs = {\n" + "\n".join(entries) + "\n}\n"
        """local requests = {}
local count = 0
init = function(args)
  for i, spec in ipairs(specs) do
    local file = assert(io.open(spec.file, "rb"))
    local payload = file:read("*a")
    file:close()
    requests[i] = wrk.format(spec.method, spec.path, spec.headers, payload)
  end
end
request = function()
  count = count % #requests + 1
  return requests[count]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '"""
        + MARKER
        + """{"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""
    )


def parse(stdout: str, client_cpu_s: float = math.nan) -> WrkResult:
    """The result line the `done` hook printed; ValueError if wrk printed none."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            break
    else:
        raise ValueError(f"wrk printed no result line: {stdout[-400:]!r}")
    requests = int(data["requests"])
    return WrkResult(
        requests=requests,
        seconds=data["duration_us"] / 1e6,
        non_2xx=int(data["status"]),
        socket_errors=int(data["connect"] + data["read"] + data["write"] + data["timeout"]),
        timeouts=int(data["timeout"]),
        # wrk reports 0 percentiles when nothing completed: that is "no figure", not 0 ms.
        p50_ms=data["p50_us"] / 1e3 if requests else math.nan,
        p90_ms=data["p90_us"] / 1e3 if requests else math.nan,
        p99_ms=data["p99_us"] / 1e3 if requests else math.nan,
        max_ms=data["max_us"] / 1e3 if requests else math.nan,
        mean_ms=data["mean_us"] / 1e3 if requests else math.nan,
        client_cpu_s=client_cpu_s,
    )


def command(
    url: str, script: Path, connections: int, duration_s: float, timeout_s: float
) -> list[str]:
    threads = max(1, min(2, connections))  # two cores: more client threads only contend
    exe = executable() or "wrk"
    return [
        exe,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        "-s",
        str(script),
        url,
    ]


def run(
    base_url: str,
    bodies: Sequence[Body],
    connections: int,
    duration_s: float,
    workdir: Path,
    timeout_s: float = 10.0,
) -> WrkResult:
    """One bounded wrk run against `base_url` cycling through `bodies`."""
    if not bodies:
        raise ValueError("no request bodies")
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, body in enumerate(bodies):
        path = workdir / f"body-{i}.bin"
        path.write_bytes(body.payload)
        files.append(path)
    script = workdir / "run.lua"
    script.write_text(lua_script(bodies, files), encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command(base_url, script, connections, duration_s, timeout_s),
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 30,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr[-400:]}")
    return parse(done.stdout, cpu)
