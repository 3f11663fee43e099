"""`python -m bench overload`: the server under overload, slow clients and shutdown (issue 23).

Self-contained: starts `python -m service` on loopback ports with the committed models, drives
it with small asyncio HTTP/1.1 clients (raw sockets: a client light enough to offer more load
than the server takes, on the same cores), and writes one Markdown table of targets, figures
and verdicts to `bench/results/overload-<date>-<commit>.md`. Bounded: a few minutes in all.

Scenarios: unloaded latency; a closed loop at 1,024 connections and an open loop at 4x the
sustainable rate (admitted p99 vs unloaded p99, 503 latency, other 5xx, resets, health p99);
200 slowloris connections and one 64 MiB header (others' p99); a solver flood (classify p99);
clients that leave their solver requests (the next request's wait); 32 x 32 MB bodies (memory);
SIGTERM under load with 1 and 2 workers (requests lost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def request_bytes(method: str, path: str, body: bytes = b"", close: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: bench\r\n"
    if body:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


def classify_request() -> bytes:
    pixels = np.random.default_rng(0).random(784).round(3).tolist()
    body = {"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "FP32"}]}
    body["inputs"][0]["data"] = pixels
    return request_bytes("POST", "/v2/models/digit_classifier/infer", json.dumps(body).encode())


def solver_request(count: int) -> bytes:
    x = np.linspace(-15, 15, 64)
    rng = np.random.default_rng(1)
    wells = [(-(0.5 + rng.random()) * np.exp(-((x - rng.normal()) ** 2) / 4)) for _ in range(count)]
    body = json.dumps({"potentials": [w.round(5).tolist() for w in wells]}).encode()
    return request_bytes("POST", "/api/v1/energy/exact", body)


HEALTH = request_bytes("GET", "/v2/health/ready", close=True)


@dataclass
class Tally:
    """What a load run saw: latencies (s) by status, and the failures without an answer."""

    latencies: dict[int, list[float]] = field(default_factory=dict)
    reset: int = 0  # a request sent, the connection closed or reset before its answer
    refused: int = 0  # a connection refused (nothing sent: a clean refusal)
    timeouts: int = 0

    def add(self, status: int, seconds: float) -> None:
        self.latencies.setdefault(status, []).append(seconds)

    def count(self, *statuses: int) -> int:
        return sum(len(v) for k, v in self.latencies.items() if not statuses or k in statuses)

    def p(self, q: float, *statuses: int) -> float:
        values = [x for k, v in self.latencies.items() if k in statuses for x in v]
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    def other_5xx(self) -> int:
        others = [k for k in self.latencies if k >= 500 and k not in (503, 504)]
        return self.count(*others) if others else 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, the server closes the connection after it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    length = 0
    start = lower.find(b"content-length:")
    if start >= 0:
        length = int(lower[start + 15 : lower.index(b"\r\n", start)])
    if length:
        await reader.readexactly(length)
    return status, b"connection: close" in lower


class Connection:
    """One keep-alive client connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes, tally: Tally, started: float | None = None) -> None:
        start = time.perf_counter() if started is None else started
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, self.port), 10
                )
            except (OSError, TimeoutError):
                tally.refused += 1
                await asyncio.sleep(0.01)
                return
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(raw)
            status, closing = await asyncio.wait_for(read_response(self.reader), 60)
        except TimeoutError:
            tally.timeouts += 1
            self.close()
            return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.reset += 1
            self.close()
            return
        tally.add(status, time.perf_counter() - start)
        if closing:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(port: int, raw: bytes, connections: int, seconds: float) -> Tally:
    tally = Tally()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        connection = Connection(port)
        while time.perf_counter() < deadline:
            await connection.send(raw, tally)
        connection.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return tally


async def open_loop(port: int, raw: bytes, rate: float, seconds: float, pool: int) -> Tally:
    """Requests sent at `rate` per second whatever the answers (latency from the planned send
    time), each on an idle connection of at most `pool`; a request with none idle waits."""
    tally = Tally()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(Connection(port))
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()

    async def one(planned: float) -> None:
        connection = await idle.get()
        await connection.send(raw, tally, started=planned)
        idle.put_nowait(connection)

    sent = 0
    while (now := time.perf_counter()) < start + seconds:
        due = int((now - start) * rate)
        while sent < due:
            task = asyncio.create_task(one(start + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return tally


async def probe_health(port: int, stop: asyncio.Event, every_s: float = 0.05) -> Tally:
    """`GET /v2/health/ready` on a new connection each time, as a Kubernetes probe does."""
    tally = Tally()
    while not stop.is_set():
        await Connection(port).send(HEALTH, tally)
        await asyncio.sleep(every_s)
    return tally


def listen_overflows() -> int:
    """The kernel's count of connections dropped or reset because an accept queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0)) + int(table.get("ListenDrops", 0))
    return 0


class Server:
    """`python -m service` on a free port; stopped with SIGTERM."""

    def __init__(self, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (the server's whole life)
            prefix="overload-", suffix=".log", delete=False
        )
        environment = {
            **os.environ,
            "MLDM_PORT": str(self.port),
            "MLDM_WORKERS": str(workers),
            "MLDM_LOG_LEVEL": "warning",
            "MLDM_LOG_FORMAT": "text",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_fd_limit,
        )

    async def ready(self, within_s: float = 180) -> None:
        deadline = time.perf_counter() + within_s
        while time.perf_counter() < deadline:
            tally = Tally()
            await Connection(self.port).send(HEALTH, tally)
            if tally.count(200):
                return
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.5)
        raise RuntimeError(f"server not ready: {Path(self.log.name).read_text()[-2000:]}")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.log.name)


Row = tuple[str, str, str, bool | None]  # scenario, target, figure, met


async def unloaded(port: int, raw: bytes, count: int) -> Tally:
    tally = Tally()
    connection = Connection(port)
    for _ in range(count):
        await connection.send(raw, tally)
    connection.close()
    return tally


CLASSIFY_PATH = "/v2/models/digit_classifier/infer"


def probe(port: int, seconds: float, body_file: str) -> dict[str, list[tuple[int, float]]]:
    """Run in its own process (`--probe`), so that the load generator's event loop does not
    add to what it measures: every 50 ms, one classify on a keep-alive connection (the latency
    of admitted and of refused requests) and one `GET /v2/health/ready` on a new connection
    each, as a Kubernetes probe does. (status, seconds) per request; status 0: no answer."""
    import http.client

    body = Path(body_file).read_bytes().split(b"\r\n\r\n", 1)[1]
    headers = {"Content-Type": "application/json"}
    found: dict[str, list[tuple[int, float]]] = {"classify": [], "health": []}
    connection: http.client.HTTPConnection | None = None
    deadline = time.perf_counter() + seconds
    while (begin := time.perf_counter()) < deadline:
        try:
            if connection is None:
                connection = http.client.HTTPConnection(HOST, port, timeout=30)
            connection.request("POST", CLASSIFY_PATH, body, headers)
            answer = connection.getresponse()
            answer.read()
            found["classify"].append((answer.status, time.perf_counter() - begin))
            if (answer.getheader("connection") or "").lower() == "close":
                connection.close()
                connection = None
        except OSError:
            found["classify"].append((0, time.perf_counter() - begin))
            connection = None
        start = time.perf_counter()
        try:
            health = http.client.HTTPConnection(HOST, port, timeout=30)
            health.request("GET", "/v2/health/ready")
            answer = health.getresponse()
            answer.read()
            health.close()
            found["health"].append((answer.status, time.perf_counter() - start))
        except OSError:
            found["health"].append((0, time.perf_counter() - start))
        time.sleep(max(0.0, 0.05 - (time.perf_counter() - begin)))
    return found


async def probing(port: int, seconds: float, body_file: Path) -> dict[str, Tally]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.overload",
        "--probe",
        str(port),
        str(seconds),
        str(body_file),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    await process.stdout.readline()  # "ready": imported, about to probe
    out, _ = await process.communicate(b"go\n")
    tallies = {}
    for name, samples in json.loads(out.decode().strip().splitlines()[-1]).items():
        tally = tallies[name] = Tally()
        for status, latency in samples:
            if status:
                tally.add(status, latency)
            else:
                tally.reset += 1
    return tallies


WRK_SCRIPT = """
local f = assert(io.open(BODY_FILE, "rb"))
local raw = f:read("*a")
f:close()
wrk.method = "POST"
wrk.path = CLASSIFY_PATH
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.sub(raw, string.find(raw, "\\r\\n\\r\\n", 1, true) + 4)
ok, shed, other, late = 0, 0, 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 then shed = shed + 1
  elseif status == 504 then late = late + 1
  elseif status >= 500 then other = other + 1 end
end
function done(summary, latency, requests)
  local o, s, x, l = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); s = s + t:get("shed"); x = x + t:get("other"); l = l + t:get("late")
  end
  local e = summary.errors
  io.write(string.format("MLDM %d %d %d %d %d %d %d %d %d\\n", summary.requests, o, s, x, l,
    e.connect, e.read, e.write, e.timeout))
end
"""


async def wrk_closed_loop(port: int, body_file: Path, connections: int, seconds: float) -> Tally:
    """wrk (C, epoll): `connections` keep-alive connections sending as fast as answered."""
    script = body_file.with_suffix(".lua")
    lua = WRK_SCRIPT.replace("BODY_FILE", json.dumps(str(body_file)))
    script.write_text(lua.replace("CLASSIFY_PATH", json.dumps(CLASSIFY_PATH)))
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://{HOST}:{port}/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    line = next(x for x in out.decode().splitlines() if x.startswith("MLDM "))
    _, ok, shed, other, late, connect, read, write, timeout = map(int, line.split()[1:])
    tally = Tally()
    tally.latencies = {200: [0.0] * ok, 503: [0.0] * shed, 500: [0.0] * other, 504: [0.0] * late}
    tally.reset = read + write
    tally.refused = connect
    tally.timeouts = timeout
    return tally


async def overload_rows(
    server: Server, seconds: float, work: Path
) -> tuple[list[Row], dict[str, Any]]:
    classify = classify_request()
    body_file = work / "classify.http"
    body_file.write_bytes(classify)
    rows: list[Row] = []
    base = await unloaded(server.port, classify, 300)
    base_p99 = base.p(99, 200)
    health_base = await unloaded(server.port, HEALTH, 100)
    sustained = await closed_loop(server.port, classify, 32, seconds / 2)
    rate = sustained.count(200) / (seconds / 2)
    info = {
        "unloaded classify p50 / p99": f"{base.p(50, 200):.1f} / {base_p99:.1f} ms",
        "unloaded /v2/health/ready p99": f"{health_base.p(99, 200):.1f} ms",
        "sustainable rate (32 connections, closed loop)": f"{rate:.0f} req/s",
        "load generators": "wrk 4.1 (closed loop); a Python asyncio client (open loop); "
        "latencies from a separate probe process (a classify and a new-connection health "
        "request every 50 ms)",
    }
    loads = (
        (
            "closed loop (wrk), 1,024 connections",
            lambda: wrk_closed_loop(server.port, body_file, 1024, seconds),
        ),
        (
            f"open loop, 4x = {4 * rate:.0f} req/s",
            lambda: open_loop(server.port, classify, 4 * rate, seconds, pool=2048),
        ),
    )
    for name, load in loads:
        before = listen_overflows()
        probe_task = asyncio.create_task(probing(server.port, seconds, body_file))
        tally = await load()
        sampled = await probe_task
        overflows = listen_overflows() - before
        seen, health = sampled["classify"], sampled["health"]
        admitted = seen.p(99, 200)
        shed = seen.p(99, 503)
        offered = (tally.count() + tally.reset + tally.timeouts) / seconds
        health_ok = health.count(200) == health.count() and not health.reset
        rows += [
            (
                name,
                "offered; answered 200 / 503 / 504",
                f"{offered:.0f} req/s; {tally.count(200)} / {tally.count(503)} / "
                f"{tally.count(504)}",
                None,
            ),
            (
                name,
                f"admitted p99 <= 4x unloaded ({4 * base_p99:.1f} ms)",
                f"{admitted:.1f} ms ({seen.count(200)} sampled)",
                admitted <= 4 * base_p99,
            ),
            (
                name,
                "503 answered within 50 ms (p99)",
                f"{shed:.1f} ms ({seen.count(503)} sampled)" if seen.count(503) else "none sampled",
                seen.count(503) == 0 or shed <= 50,
            ),
            (
                name,
                "0 5xx other than 503/504",
                str(tally.other_5xx() + seen.other_5xx()),
                tally.other_5xx() + seen.other_5xx() == 0,
            ),
            (
                name,
                "0 kernel resets",
                f"{tally.reset} reset after sending + {overflows} listen-queue overflows "
                f"(timeouts {tally.timeouts}, refused {tally.refused})",
                tally.reset + overflows == 0,
            ),
            (
                name,
                "/v2/health/ready p99 < 100 ms",
                f"{health.p(99, 200):.1f} ms "
                f"({health.count(200)} ok of {health.count() + health.reset})",
                health.p(99, 200) < 100 and health_ok,
            ),
        ]
        await asyncio.sleep(2)  # let the server settle
    return rows, info


async def slowloris(port: int, connections: int, stop: asyncio.Event) -> int:
    """Connections that send a request head a byte every 0.5 s, reconnecting when closed."""
    head = b"GET /v2/health/live HTTP/1.1\r\nhost: bench\r\nx-filler: " + b"a" * 4096
    closed = 0

    async def one() -> None:
        nonlocal closed
        while not stop.is_set():
            try:
                _, writer = await asyncio.open_connection(HOST, port)
                for byte in head:
                    if stop.is_set():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.5)
                writer.close()
            except OSError:
                closed += 1
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one() for _ in range(connections)))
    return closed


async def big_header(port: int, size: int) -> str:
    head = b"GET /v2/health/live HTTP/1.1\r\nhost: bench\r\nx-big: "
    reader, writer = await asyncio.open_connection(HOST, port)
    answer = asyncio.create_task(reader.read(200))
    sent = 0
    chunk = b"a" * 65536
    try:
        writer.write(head)
        while sent < size and not answer.done():
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        got = await asyncio.wait_for(answer, 30)
    except OSError as exc:
        return f"{type(exc).__name__} after {sent} bytes"
    finally:
        writer.close()
    return f"{got[:12].decode(errors='replace')} after {sent / 2**20:.1f} MiB sent"


async def hostile_rows(server: Server, seconds: float) -> list[Row]:
    classify = classify_request()
    rows: list[Row] = []
    base = await closed_loop(server.port, classify, 8, seconds / 2)
    base_p99 = base.p(99, 200)
    stop = asyncio.Event()
    loris = asyncio.create_task(slowloris(server.port, 200, stop))
    await asyncio.sleep(1)
    during = await closed_loop(server.port, classify, 8, seconds)
    stop.set()
    await loris
    p99 = during.p(99, 200)
    rows.append(
        (
            "200 slowloris connections",
            f"others' p99 < 2x ({2 * base_p99:.1f} ms)",
            f"{p99:.1f} ms (errors {during.reset + during.timeouts})",
            p99 < 2 * base_p99,
        )
    )
    header = asyncio.create_task(big_header(server.port, 64 * 2**20))
    during = await closed_loop(server.port, classify, 8, seconds / 2)
    outcome = await header
    p99 = during.p(99, 200)
    rows.append(
        (
            "one 64 MiB header",
            f"others' p99 < 2x ({2 * base_p99:.1f} ms)",
            f"{p99:.1f} ms; the header got: {outcome}",
            p99 < 2 * base_p99,
        )
    )
    return rows


async def solver_rows(server: Server, seconds: float) -> list[Row]:
    classify = classify_request()
    rows: list[Row] = []
    base = await closed_loop(server.port, classify, 4, seconds / 2)
    flood_body = solver_request(4096)
    tally = Tally()
    flood = [
        asyncio.create_task(Connection(server.port).send(flood_body, tally)) for _ in range(40)
    ]
    await asyncio.sleep(0.5)
    during = await closed_loop(server.port, classify, 4, seconds / 2)
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)
    p99, base_p99 = during.p(99, 200), base.p(99, 200)
    rows.append(
        (
            "40 exact-solver requests of 4,096 potentials",
            f"classify p99 < 2x unloaded ({2 * base_p99:.1f} ms)",
            f"{p99:.1f} ms (solver: {tally.count(503)} refused 503 at once, "
            f"p99 {tally.p(99, 503):.1f} ms)",
            p99 < 2 * base_p99,
        )
    )
    await asyncio.sleep(15)  # the one solver call still running ends
    one = solver_request(1)
    alone = await unloaded(server.port, one, 5)
    leave_body = solver_request(1024)

    async def leave() -> None:
        _, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(leave_body)
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    await asyncio.gather(*(leave() for _ in range(8)))
    await asyncio.sleep(0.5)  # the server sees them leave
    start = time.perf_counter()
    after = await unloaded(server.port, one, 1)
    wait = time.perf_counter() - start
    rows.append(
        (
            "8 solver clients that leave after 0.5 s",
            "their queued work not run: the next request waits ~ one call, not 8 "
            f"(alone {alone.p(50, 200):.0f} ms)",
            f"{wait * 1000:.0f} ms (status {list(after.latencies)})",
            None,
        )
    )
    return rows


async def memory_rows(server: Server) -> list[Row]:
    one = len(json.dumps(np.random.default_rng(2).random((28, 28, 1)).round(4).tolist()))
    images = np.random.default_rng(2).random((32 * 10**6 // (one + 2), 28, 28, 1)).round(4)
    body = json.dumps({"images": images.tolist(), "scale": "unit"}).encode()  # ~32 MB
    raw = request_bytes("POST", "/api/v1/digits/classify", body)
    await unloaded(server.port, raw, 2)  # the shapes of this path once, before measuring
    await asyncio.sleep(2)
    before = server.rss_mib()
    tally = Tally()
    await asyncio.gather(*(Connection(server.port).send(raw, tally) for _ in range(32)))
    await asyncio.sleep(5)
    after = server.rss_mib()
    growth = (after - before) / before
    statuses = {k: len(v) for k, v in tally.latencies.items()}
    refused = tally.count(503)
    return [
        (
            "32 x 32 MB bodies at once",
            "memory back within 10% of before, or the burst refused by the memory limit",
            f"{before:.0f} -> {after:.0f} MiB ({growth:+.1%}); answers {statuses} "
            f"({refused} of 32 refused)",
            growth <= 0.10 or refused >= 31,
        )
    ]


async def sigterm_row(workers: int, seconds: float) -> Row:
    server = Server(workers, {"MLDM_SHUTDOWN_GRACE_S": "20"})
    await server.ready()
    classify = classify_request()
    load = asyncio.create_task(closed_loop(server.port, classify, 64, seconds + 15))
    await asyncio.sleep(seconds)
    server.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, 120)
    tally = await load
    server.stop()
    statuses = {k: len(v) for k, v in tally.latencies.items()}
    return (
        f"SIGTERM under load, {workers} worker(s)",
        "0 requests lost without an answer",
        f"{tally.reset + tally.timeouts} lost; answers {statuses}; "
        f"refused connects {tally.refused}; exit {code}",
        tally.reset + tally.timeouts == 0,
    )


async def run(seconds: float) -> tuple[list[Row], dict[str, Any]]:
    server = Server()
    work = Path(tempfile.mkdtemp(prefix="overload-"))
    try:
        await server.ready()
        rows, info = await overload_rows(server, seconds, work)
        rows += await hostile_rows(server, seconds)
        rows += await solver_rows(server, seconds)
        rows += await memory_rows(server)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    for workers in (1, 2):
        rows.append(await sigterm_row(workers, 3))
    return rows, info


def commit() -> str:
    return (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        or "unknown"
    )


def report(rows: list[Row], info: dict[str, Any], seconds: float) -> str:
    verdict = {True: "met", False: "**missed**", None: "-"}
    lines = [
        f"# Overload bench ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()})",
        "",
        f"`python -m bench overload --seconds {seconds:g}`: one worker unless said, loopback, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end. The clients "
        "(Python asyncio, raw HTTP/1.1) run on the same cores as the server, and the machine was "
        "shared with other jobs: read orders of magnitude.",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        "",
        "| scenario | target | figure | verdict |",
        "| --- | --- | --- | --- |",
        *(f"| {s} | {t} | {f} | {verdict[m]} |" for s, t, f, m in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench overload", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/...)")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)  # the probe process
    args = parser.parse_args(argv)
    if args.probe:
        port, seconds, body_file = args.probe
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(probe(int(port), float(seconds), body_file)))
        return 0
    _raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    random.seed(0)
    rows, info = asyncio.run(run(args.seconds))
    text = report(rows, info, args.seconds)
    out = args.out or RESULTS / f"overload-{datetime.now(UTC):%Y-%m-%d}-{commit()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0 if all(m is not False for *_, m in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
