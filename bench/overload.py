"""`python -m bench overload` (docs/reliability.md): the service under overload, slow clients and
shutdown, one worker unless said, driven by wrk (counting answers by status) at 1,024 connections,
`driver.open_loop` at 4x the sustainable rate and `driver.closed_loop` for the rest; latencies
under load come from a separate probe process. Exits 1 if a target is missed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import signal
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import driver, harness
from bench.driver import Body

HOST = "127.0.0.1"
CLASSIFY_PATH = "/v2/models/digit_classifier/infer"
JSON = (("Content-Type", "application/json"),)
HEALTH = Body("GET", "/v2/health/ready", headers=(("Connection", "close"),))
Row = tuple[str, str, str, bool | None]  # scenario, target, figure, met


def classify_body() -> Body:
    data = np.random.default_rng(0).random(784).round(3).tolist()
    tensor = {"name": "images", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": data}
    return Body("POST", CLASSIFY_PATH, json.dumps({"inputs": [tensor]}).encode(), JSON)


def solver_body(count: int) -> Body:
    x = np.linspace(-15, 15, 64)
    rng = np.random.default_rng(1)
    wells = [(-(0.5 + rng.random()) * np.exp(-((x - rng.normal()) ** 2) / 4)) for _ in range(count)]
    body = json.dumps({"potentials": [w.round(5).tolist() for w in wells]}).encode()
    return Body("POST", "/api/v1/energy/exact", body, JSON)


@dataclass
class Tally:
    """What a load run saw: latencies (s) by status, and the failures without an answer."""

    latencies: dict[int, list[float]] = field(default_factory=dict)
    reset: int = 0  # a request sent, the connection closed or reset before its answer
    refused: int = 0  # a connection refused (nothing sent: a clean refusal)
    timeouts: int = 0

    @classmethod
    def of(cls, samples: Sequence[driver.Sample]) -> Tally:
        tally = cls()
        for s in samples:
            if isinstance(s.status, int):
                tally.latencies.setdefault(s.status, []).append(s.latency_s)
            elif s.status == "ConnectionRefusedError":
                tally.refused += 1
            elif s.status in ("TimeoutError", "client: no answer within drain time"):
                tally.timeouts += 1
            else:
                tally.reset += 1
        return tally

    def count(self, *statuses: int) -> int:
        return sum(len(v) for k, v in self.latencies.items() if not statuses or k in statuses)

    def p(self, q: float, *statuses: int) -> float:
        values = [x for k, v in self.latencies.items() if k in statuses for x in v]
        return driver.percentile(values, q) * 1000 if values else math.nan

    def statuses(self) -> dict[int, int]:
        return {k: len(v) for k, v in self.latencies.items()}

    def other_5xx(self) -> int:
        return sum(len(v) for k, v in self.latencies.items() if k >= 500 and k not in (503, 504))


async def closed(
    port: int,
    body: Body,
    connections: int,
    seconds: float = math.inf,
    count: int | None = None,
    timeout_s: float = 60.0,
) -> Tally:
    """`driver.closed_loop` on one body, tallied."""
    samples = await driver.closed_loop(HOST, port, [body], connections, seconds, count, timeout_s)
    return Tally.of(samples)


async def wrk_closed_loop(
    url: str, body: Body, connections: int, seconds: float, work: Path
) -> Tally:
    """wrk (C, epoll): `connections` keep-alive connections sending as fast as answered."""
    r = await asyncio.to_thread(
        driver.run_wrk, url, [body], connections, seconds, work, 1, 30.0, True
    )
    tally = Tally(reset=r["reset"], refused=r["connect_errors"], timeouts=r["timeouts"])
    for status, n in r["statuses"].items():
        tally.latencies[500 if status == "5xx" else int(status)] = [0.0] * n  # counts only
    return tally


def listen_overflows() -> int:
    """The kernel's count of connections dropped or reset because an accept queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0)) + int(table.get("ListenDrops", 0))
    return 0


async def probe(port: int, seconds: float, body_file: str) -> dict[str, list[Any]]:
    """Run in its own process (`--probe`), so that the load generator's event loop does not
    add to what it measures: every 50 ms, one classify on a keep-alive connection (the latency
    of admitted and of refused requests) and one `GET /v2/health/ready` on a new connection
    each, as a Kubernetes probe does. (status or what went wrong, seconds) per request."""
    body = Body("POST", CLASSIFY_PATH, Path(body_file).read_bytes(), JSON)
    wires = {"classify": body.encode(f"{HOST}:{port}"), "health": HEALTH.encode(f"{HOST}:{port}")}
    found: dict[str, list[Any]] = {kind: [] for kind in wires}
    kept: driver.Connection | None = None
    deadline = time.perf_counter() + seconds
    while (begin := time.perf_counter()) < deadline:
        for kind, wire in wires.items():
            start, reuse = time.perf_counter(), kept if kind == "classify" else None
            status, connection = await driver.exchange(reuse, HOST, port, wire, 30.0)
            found[kind].append((status, time.perf_counter() - start))
            if kind == "classify":
                kept = connection
            elif connection is not None and connection.transport is not None:
                connection.transport.close()
        await asyncio.sleep(max(0.0, 0.05 - (time.perf_counter() - begin)))
    return found


async def probing(port: int, seconds: float, body_file: Path) -> dict[str, Tally]:
    probe_args = [str(port), str(seconds), str(body_file)]
    command = [sys.executable, "-m", "bench.overload", "--probe", *probe_args]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=harness.REPO, stdin=PIPE, stdout=PIPE
    )
    assert process.stdout is not None
    await process.stdout.readline()  # "ready": imported, about to probe
    out, _ = await process.communicate(b"go\n")
    found = json.loads(out.decode().strip().splitlines()[-1])
    return {  # an answer or "no answer" (reset, refused or timed out alike)
        name: Tally.of(
            [
                driver.Sample(0, t, s if isinstance(s, int) else "no answer", name)
                for s, t in samples
            ]
        )
        for name, samples in found.items()
    }


async def slowloris(port: int, connections: int, stop: asyncio.Event) -> None:
    """Connections that send a request head a byte every 0.5 s, reconnecting when closed."""
    head = b"GET /v2/health/live HTTP/1.1\r\nhost: bench\r\nx-filler: " + b"a" * 4096

    async def one() -> None:
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
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one() for _ in range(connections)))


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


def service(work: Path, model_dir: Path, workers: int = 1, **env: str) -> harness.Server:
    names = list(harness.models(model_dir))
    env |= {"MLDM_MAX_BODY_BYTES": str(64 * 2**20), "MLDM_LOG_FORMAT": "text"}  # as documented
    return harness.our_server(model_dir, names, workers, work, 16384, **env)


async def overload_rows(
    server: harness.Server, seconds: float, work: Path
) -> tuple[list[Row], dict[str, Any]]:
    classify, port = classify_body(), server.port
    body_file = work / "classify.json"
    body_file.write_bytes(classify.payload)
    base_p99 = (base := await closed(port, classify, 1, count=300)).p(99, 200)
    health_base = await closed(port, HEALTH, 1, count=100)
    rate = (await closed(port, classify, 32, seconds / 2)).count(200) / (seconds / 2)
    info = {
        "unloaded classify p50 / p99": f"{base.p(50, 200):.1f} / {base_p99:.1f} ms",
        "unloaded /v2/health/ready p99": f"{health_base.p(99, 200):.1f} ms",
        "sustainable rate (32 connections, closed loop)": f"{rate:.0f} req/s",
        "load generators": "wrk (closed loop); the driver's Python asyncio open loop; "
        "latencies from a separate probe process (a classify and a new-connection health "
        "request every 50 ms)",
    }
    loads: dict[str, Callable[[], Awaitable[Tally | list[driver.Sample]]]] = {
        "closed loop (wrk), 1,024 connections": lambda: wrk_closed_loop(
            server.url, classify, 1024, seconds, work
        ),
        f"open loop, 4x = {4 * rate:.0f} req/s": lambda: driver.open_loop(
            port, [("classify", classify)], 4 * rate, seconds, 2048, queue=True
        ),
    }
    rows: list[Row] = []
    for name, load in loads.items():
        before = listen_overflows()
        probe_task = asyncio.create_task(probing(port, seconds, body_file))
        loaded = await load()
        tally = loaded if isinstance(loaded, Tally) else Tally.of(loaded)
        seen, health = (sampled := await probe_task)["classify"], sampled["health"]
        overflows = listen_overflows() - before
        admitted, shed, shed_n = seen.p(99, 200), seen.p(99, 503), seen.count(503)
        offered = (tally.count() + tally.reset + tally.timeouts) / seconds
        others = tally.other_5xx() + seen.other_5xx()
        answered = " / ".join(str(tally.count(s)) for s in (200, 503, 504))
        health_p99, limit = health.p(99, 200), 4 * base_p99
        health_met = health_p99 < 100 and health.count(200) == health.count() and not health.reset
        health_s = (
            f"{health_p99:.1f} ms ({health.count(200)} ok of {health.count() + health.reset})"
        )
        admitted_s = f"{admitted:.1f} ms ({seen.count(200)} sampled)"
        shed_s = f"{shed:.1f} ms ({shed_n} sampled)" if shed_n else "none sampled"
        reset = f"{tally.reset} reset after sending + {overflows} listen-queue overflows "
        reset += f"(timeouts {tally.timeouts}, refused {tally.refused})"
        figures: list[tuple[str, str, bool | None]] = [
            ("offered; answered 200 / 503 / 504", f"{offered:.0f} req/s; {answered}", None),
            (f"admitted p99 <= 4x unloaded ({limit:.1f} ms)", admitted_s, admitted <= limit),
            ("503 answered within 50 ms (p99)", shed_s, shed_n == 0 or shed <= 50),
            ("0 5xx other than 503/504", str(others), others == 0),
            ("0 kernel resets", reset, tally.reset + overflows == 0),
            ("/v2/health/ready p99 < 100 ms", health_s, health_met),
        ]
        rows += [(name, *figure) for figure in figures]
        await asyncio.sleep(2)  # let the server settle
    return rows, info


async def hostile_rows(server: harness.Server, seconds: float) -> list[Row]:
    classify, port = classify_body(), server.port
    base_p99 = (await closed(port, classify, 8, seconds / 2)).p(99, 200)
    target = f"others' p99 < 2x ({2 * base_p99:.1f} ms)"
    stop = asyncio.Event()
    loris = asyncio.create_task(slowloris(port, 200, stop))
    await asyncio.sleep(1)
    during = await closed(port, classify, 8, seconds)
    stop.set()
    await loris
    p99, errors = during.p(99, 200), during.reset + during.timeouts
    rows: list[Row] = [
        ("200 slowloris connections", target, f"{p99:.1f} ms (errors {errors})", p99 < 2 * base_p99)
    ]
    header = asyncio.create_task(big_header(port, 64 * 2**20))
    p99 = (await closed(port, classify, 8, seconds / 2)).p(99, 200)
    figure = f"{p99:.1f} ms; the header got: {await header}"
    return [*rows, ("one 64 MiB header", target, figure, p99 < 2 * base_p99)]


async def solver_rows(server: harness.Server, seconds: float) -> list[Row]:
    classify, port = classify_body(), server.port
    base_p99 = (await closed(port, classify, 4, seconds / 2)).p(99, 200)
    # 40 at once, left when the classify load ends (the timeout): what came back by then.
    flood_load = closed(port, solver_body(4096), 40, count=40, timeout_s=0.5 + seconds / 2)
    flood = asyncio.create_task(flood_load)
    await asyncio.sleep(0.5)
    p99 = (await closed(port, classify, 4, seconds / 2)).p(99, 200)
    tally = await flood
    solver = f"solver: {tally.count(503)} refused 503 at once, p99 {tally.p(99, 503):.1f} ms"
    scenario, target = "40 exact-solver requests of 4,096 potentials", "classify p99 < 2x unloaded"
    target, figure = f"{target} ({2 * base_p99:.1f} ms)", f"{p99:.1f} ms ({solver})"
    flood_row: Row = (scenario, target, figure, p99 < 2 * base_p99)
    await asyncio.sleep(15)  # the one solver call still running ends
    one = solver_body(1)
    alone = await closed(port, one, 1, count=5)
    leave_wire = solver_body(1024).encode(f"{HOST}:{port}")

    async def leave() -> None:
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(leave_wire)
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    await asyncio.gather(*(leave() for _ in range(8)))
    await asyncio.sleep(0.5)  # the server sees them leave
    start = time.perf_counter()
    after = await closed(port, one, 1, count=1)
    wait = time.perf_counter() - start
    target = "their queued work not run: the next request waits ~ one call, not 8 (alone "
    target += f"{alone.p(50, 200):.0f} ms)"
    figure = f"{wait * 1000:.0f} ms (status {list(after.latencies)})"
    left_row: Row = ("8 solver clients that leave after 0.5 s", target, figure, None)
    return [flood_row, left_row]


async def memory_rows(server: harness.Server) -> list[Row]:
    one = len(json.dumps(np.random.default_rng(2).random((28, 28, 1)).round(4).tolist()))
    images = np.random.default_rng(2).random((32 * 10**6 // (one + 2), 28, 28, 1)).round(4)
    payload = json.dumps({"images": images.tolist(), "scale": "unit"}).encode()  # ~32 MB
    body = Body("POST", "/api/v1/digits/classify", payload, JSON)
    await closed(server.port, body, 1, count=2)  # the shapes of this path once, before measuring
    await asyncio.sleep(2)
    before = server.rss_kib() / 1024
    tally = await closed(server.port, body, 32, count=32)
    await asyncio.sleep(5)
    after = server.rss_kib() / 1024
    growth, refused = (after - before) / before, tally.count(503)
    figure = f"{before:.0f} -> {after:.0f} MiB ({growth:+.1%}); answers {tally.statuses()} "
    figure += f"({refused} of 32 refused)"
    target = "memory back within 10% of before, or the burst refused by the memory limit"
    return [("32 x 32 MB bodies at once", target, figure, growth <= 0.10 or refused >= 31)]


async def sigterm_row(work: Path, model_dir: Path, workers: int, seconds: float) -> Row:
    with harness.running(service(work, model_dir, workers, MLDM_SHUTDOWN_GRACE_S="20")) as server:
        assert server.process is not None
        load = asyncio.create_task(closed(server.port, classify_body(), 64, seconds + 15))
        await asyncio.sleep(seconds)
        server.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.process.wait, 120)
        tally = await load
    lost = tally.reset + tally.timeouts
    figure = (
        f"{lost} lost; answers {tally.statuses()}; refused connects {tally.refused}; exit {code}"
    )
    scenario = f"SIGTERM under load, {workers} worker(s)"
    return scenario, "0 requests lost without an answer", figure, lost == 0


async def run(seconds: float, model_dir: Path, work: Path) -> tuple[list[Row], dict[str, Any]]:
    with harness.running(service(work, model_dir)) as server:
        rows, info = await overload_rows(server, seconds, work)
        rows += await hostile_rows(server, seconds)
        rows += await solver_rows(server, seconds)
        rows += await memory_rows(server)
    for workers in (1, 2):
        rows.append(await sigterm_row(work, model_dir, workers, 3))
    return rows, info


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("overload", __doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    p.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)  # the probe process
    args = harness.parse(p, argv)
    if args.probe:
        port, seconds, body_file = args.probe
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(asyncio.run(probe(int(port), float(seconds), body_file))))
        return 0
    if harness.refuse_while_training(args):
        return 3
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1,024 connections and more, for
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # wrk and the clients (inherited)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    report = harness.new_report("overload", args.argv, seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="overload-") as work:
        rows, info = asyncio.run(run(args.seconds, args.model_dir, Path(work)))
    report |= {"rows": rows, "info": info}
    verdict = {True: "met", False: "**missed**", None: "-"}
    cells = ([*r[:3], verdict[r[3]]] for r in rows)
    lines = ["One worker unless said, loopback; the clients share the server's cores.", ""]
    lines += [*(f"- {key}: {value}" for key, value in info.items()), ""]
    lines += harness.table("scenario | target | figure | verdict", cells)
    harness.publish(report, harness.document(report, "Overload bench", lines), args)
    return 0 if all(met is not False for *_, met in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
