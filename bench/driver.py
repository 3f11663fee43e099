"""The one HTTP load driver: `wrk` where it is installed (a generated Lua script that prints one
JSON line), a Python asyncio client otherwise or when a request count bounds the run; `run` gives
one result dict, `closed_loop` and `open_loop` one `Sample` per request (bench/README.md)."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httptools

MARKER = "MLDM-WRK "


@dataclass(frozen=True)
class Body:
    """One request: method, path (with query), payload and headers."""

    method: str
    path: str
    payload: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, host: str) -> bytes:
        """The whole request on the wire (Content-Length always set)."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.payload


@dataclass
class Sample:
    """One request of a Python loop."""

    scheduled_s: float  # since the start of the run
    latency_s: float  # from the (scheduled) send time to the complete answer
    status: int | str  # the HTTP status, or what went wrong
    kind: str


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks (numpy's default)."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    if not values:
        return math.nan
    ordered, rank = sorted(values), q / 100.0 * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def result(
    concurrency: int,
    items: int,
    counts: tuple[int, int, int],
    elapsed_s: float,
    ms: dict,
    cpu_s: float,
) -> dict[str, Any]:
    """One run's result dict; `counts` = (requests, answered 200, errors)."""
    requests, ok, errors = counts
    per_s = ok / elapsed_s if elapsed_s > 0 else math.nan
    return {
        "concurrency": concurrency,
        **{"requests": requests, "ok": ok, "errors": errors, "elapsed_s": elapsed_s},
        **{"rps": per_s, "items_per_s": per_s * items},
        **{f"{k}_ms": v for k, v in ms.items()},
        "client_cpu_us_per_req": cpu_s / requests * 1e6 if requests else math.nan,
    }


def summary(
    concurrency: int,
    items: int,
    latencies_s: Sequence[float],
    errors: int,
    elapsed_s: float,
    client_cpu_s: float,
) -> dict[str, Any]:
    """The result of one Python-client run from its good latencies and error count."""
    ms = [v * 1e3 for v in latencies_s]
    figures = {f"p{q}": percentile(ms, q) for q in (50, 90, 99)}
    figures["max"] = max(ms, default=math.nan)
    counts = (len(ms) + errors, len(ms), errors)
    return result(concurrency, items, counts, elapsed_s, figures, client_cpu_s)


def run(
    url: str,
    bodies: Sequence[Body],
    concurrency: int,
    duration_s: float,
    workdir: Path,
    items: int = 1,
    max_requests: int | None = None,
    client: str = "auto",
) -> dict[str, Any]:
    """One bounded load run; `client`: auto (wrk if installed and no count), wrk or raw."""
    if not bodies:
        raise ValueError("no request bodies")
    if client == "auto":
        client = "wrk" if shutil.which("wrk") and max_requests is None else "raw"
    if client == "wrk":
        return run_wrk(url, bodies, concurrency, duration_s, workdir, items)
    if client != "raw":
        raise ValueError(f"unknown client {client!r} (wrk or raw)")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    # The caller may hold TensorFlow: a full collection (~150 ms) would look like server latency.
    gc.collect()
    gc.freeze()
    cpu, start = time.process_time(), time.perf_counter()
    loop = closed_loop(host, int(port), bodies, concurrency, duration_s, max_requests)
    samples = asyncio.run(loop)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    latencies = [s.latency_s for s in samples if s.status == 200]
    return summary(concurrency, items, latencies, len(samples) - len(latencies), elapsed, cpu)


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Counts the answers 200, 503, 504 and other 5xx (a Lua call per answer: only when asked).
STATUS_TALLY = """local threads = {}
setup = function(thread) table.insert(threads, thread) end
response = function(status)
  local k = status == 200 and "s200" or status == 503 and "s503" or status == 504 and "s504"
    or status >= 500 and "s5xx"
  if k then _G[k] = (_G[k] or 0) + 1 end
end
local function counts()
  local out = {}
  for _, k in ipairs({"s200", "s503", "s504", "s5xx"}) do
    local n = 0
    for _, t in ipairs(threads) do n = n + (t:get(k) or 0) end
    table.insert(out, string.format('"%s": %d', k, n))
  end
  return ", " .. table.concat(out, ", ")
end
"""


def lua_script(bodies: Sequence[Body], files: Sequence[Path], statuses: bool = False) -> str:
    """Format each request once per thread, cycle through them, report as one JSON line;
    `statuses` also counts the answers by status (`STATUS_TALLY`)."""
    specs = []
    for body, path in zip(bodies, files, strict=True):
        headers = ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in body.headers)
        specs.append(
            f"  {{method = {_lua(body.method)}, path = {_lua(body.path)}, "
            f"file = {_lua(str(path))}, headers = {{{headers}}}}},"
        )
    fields = (
        '"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, '
        '"write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
        '"max_us": %d, "mean_us": %.1f'
    )
    return (
        "local specs = {\n"
        + "\n".join(specs)
        + f"""
}}
local requests = {{}}
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
{STATUS_TALLY if statuses else "local function counts() return '' end"}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{MARKER}{{{fields}%s}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, counts()))
end
"""
    )


def parse(
    stdout: str, concurrency: int = 0, items: int = 1, cpu_s: float = math.nan
) -> dict[str, Any]:
    """The result line of the `done` hook; ValueError if wrk printed none."""
    line = next((x for x in stdout.splitlines() if x.startswith(MARKER)), None)
    if line is None:
        raise ValueError(f"wrk printed no result line: {stdout[-400:]!r}")
    d = json.loads(line[len(MARKER) :])
    requests = int(d["requests"])
    ok = max(requests - int(d["status"]), 0)  # refused requests are not throughput
    errors = int(d["status"] + d["connect"] + d["read"] + d["write"] + d["timeout"])
    # wrk reports 0 percentiles when nothing completed: "no figure", not 0 ms.
    ms = {k: d[f"{k}_us"] / 1e3 if requests else math.nan for k in ("p50", "p90", "p99", "max")}
    out = result(concurrency, items, (requests, ok, errors), d["duration_us"] / 1e6, ms, cpu_s)
    out |= {"timeouts": int(d["timeout"]), "connect_errors": int(d["connect"])}
    out["reset"] = int(d["read"] + d["write"])  # a request sent, the connection lost
    if "s200" in d:  # answers by status (`statuses`)
        out["statuses"] = {s: int(d[f"s{s}"]) for s in ("200", "503", "504", "5xx")}
    return out


def wrk_command(
    url: str, script: Path, connections: int, duration_s: float, timeout_s: float
) -> list[str]:
    threads = max(1, min(2, connections))  # two cores: more client threads only contend
    return [
        *(shutil.which("wrk") or "wrk", "-t", str(threads), "-c", str(connections)),
        *("-d", f"{max(1, round(duration_s))}s", "--timeout", f"{max(1, round(timeout_s))}s"),
        *("-s", str(script), url),
    ]


def run_wrk(
    url: str,
    bodies: Sequence[Body],
    concurrency: int,
    duration_s: float,
    workdir: Path,
    items: int = 1,
    timeout_s: float = 10.0,
    statuses: bool = False,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    files = [workdir / f"body-{i}.bin" for i in range(len(bodies))]
    for body, path in zip(bodies, files, strict=True):
        path.write_bytes(body.payload)
    script = workdir / "run.lua"
    script.write_text(lua_script(bodies, files, statuses), encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = wrk_command(url, script, concurrency, duration_s, timeout_s)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 40)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr[-400:]}")
    return parse(done.stdout, concurrency, items, cpu)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class ResponseParser:
    """Incremental HTTP/1.1 response parser (httptools, uvicorn's): `feed` bytes, get the
    responses they complete (Content-Length or chunked, pipelined or split anywhere)."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._done: list[Response] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        self._done.append(Response(status, self._headers, b"".join(self._body)))
        self._headers, self._body = {}, []

    def feed(self, data: bytes) -> list[Response]:
        self._parser.feed_data(data)
        done, self._done = self._done, []
        return done


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for response in self.parser.feed(data):
            if response.headers.get("connection", "").lower() == "close" and self.transport:
                self.transport.close()  # no next request on it: the server is closing it
                self.transport = None
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("server closed the connection"))

    async def send(self, wire: bytes) -> Response:
        if self.transport is None:
            raise ConnectionResetError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(wire)
        return await self.waiter


async def exchange(
    connection: Connection | None, host: str, port: int, wire: bytes, timeout_s: float | None
) -> tuple[int | str, Connection | None]:
    """One request on `connection` (a new one if it is closed): the status, or the name of what
    went wrong (a `TimeoutError` after `timeout_s`), and the connection while it stays open."""
    try:
        if connection is None or connection.transport is None:
            _, connection = await asyncio.get_running_loop().create_connection(
                Connection, host, port
            )
        return (await asyncio.wait_for(connection.send(wire), timeout_s)).status, connection
    except OSError as exc:
        if connection is not None and connection.transport is not None:
            connection.transport.close()
        return type(exc).__name__, None


async def closed_loop(
    host: str,
    port: int,
    bodies: Sequence[Body],
    concurrency: int,
    duration_s: float = math.inf,
    cap: int | None = None,
    timeout_s: float | None = None,
) -> list[Sample]:
    """`concurrency` keep-alive connections, each sending the next of `bodies` when its last is
    answered, for `duration_s` or `cap` requests in all: one `Sample` per request; a failed
    request waits 10 ms before the next try; `timeout_s` bounds an answer."""
    wires = [body.encode(f"{host}:{port}") for body in bodies]
    samples: list[Sample] = []
    left = math.inf if cap is None else cap
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker() -> None:
        nonlocal left
        connection: Connection | None = None
        i = 0
        while left > 0 and (sent := time.perf_counter()) < deadline:
            left, i = left - 1, i + 1
            wire = wires[(i - 1) % len(wires)]
            status, connection = await exchange(connection, host, port, wire, timeout_s)
            samples.append(Sample(sent - start, time.perf_counter() - sent, status, "-"))
            if connection is None:
                await asyncio.sleep(0.01)  # refused or reset: do not spin
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


async def open_loop(
    port: int,
    pairs: Sequence[tuple[str, Body]],
    rate: float,
    duration_s: float,
    max_connections: int = 256,
    drain_s: float = 30.0,
    burst: int = 1,
    queue: bool = False,
) -> list[Sample]:
    """The (kind, request) `pairs` round-robin to 127.0.0.1:`port` at `rate` per second for
    `duration_s`, answered or not, `burst` of one kind at a time, on at most `max_connections`
    connections (all busy: not sent, or with `queue` waited for); then `drain_s` for answers."""
    wires = [(kind, body.encode(f"127.0.0.1:{port}")) for kind, body in pairs]
    idle: list[Connection] = []
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    busy, slots = 0, asyncio.Semaphore(max_connections if queue else 2**30)

    async def one(kind: str, wire_bytes: bytes, scheduled: float, offset: float) -> None:
        nonlocal busy
        async with slots:
            connection = idle.pop() if idle else None
            status, connection = await exchange(connection, "127.0.0.1", port, wire_bytes, None)
            samples.append(Sample(offset, time.perf_counter() - scheduled, status, kind))
            if connection is not None and connection.transport is not None:
                idle.append(connection)
            else:
                busy -= 1

    start = time.perf_counter()
    for i in range(int(rate * duration_s)):
        offset = (i - i % burst) / rate  # the burst's requests share its send time
        if (delay := start + offset - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        if not queue and not idle and busy >= max_connections:  # all busy: not keeping up
            samples.append(Sample(offset, 0.0, "client: no free connection", "-"))
            continue
        busy += 0 if idle else 1
        kind, wire_bytes = wires[(i // burst) % len(wires)]
        task = asyncio.create_task(one(kind, wire_bytes, start + offset, offset))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in pending:
            task.cancel()
            samples.append(Sample(duration_s, drain_s, "client: no answer within drain time", "-"))
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    return samples
