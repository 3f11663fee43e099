"""A closed-loop HTTP/1.1 load generator for the serving benchmark, and its statistics.

``concurrency`` tasks each own one keep-alive connection and send the next request as soon as the
previous answer is complete, until ``max_requests`` have been sent or ``duration_s`` has passed;
requests in flight then finish and count. The default client speaks HTTP/1.1 straight over an
asyncio ``Protocol`` with the request bytes built once: on a 2-core machine the load generator
shares the CPU with the server under test, and httpx costs several times more CPU per request
(``--client httpx`` runs it anyway, to compare). Each run records its own CPU time per request,
so the client's share of the machine is part of the results, not a guess.

``python -m bench.loadgen --canned-server PORT`` is the cheapest server we can write (a fixed
answer, no parsing beyond the request head); driving it measures the client's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Request:
    """One prepared HTTP request: method, path, headers and body (sent as given)."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, host: str) -> bytes:
        """The whole request as bytes on the wire (Content-Length always set)."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class ResponseParser:
    """Incremental HTTP/1.1 response parser: `feed` bytes, get the responses they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple[int, dict[str, str], int, bool] | None = None

    def feed(self, data: bytes) -> list[Response]:
        self._buffer += data
        done: list[Response] = []
        while True:
            response = self._next()
            if response is None:
                return done
            done.append(response)

    def _next(self) -> Response | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            del self._buffer[: end + 4]
            self._head = (status, headers, int(headers.get("content-length", 0)), chunked)
        status, headers, length, chunked = self._head
        if chunked:
            body = self._dechunk()
            if body is None:
                return None
        else:
            if len(self._buffer) < length:
                return None
            body = bytes(self._buffer[:length])
            del self._buffer[:length]
        self._head = None
        return Response(status, headers, body)

    def _dechunk(self) -> bytes | None:
        parts: list[bytes] = []
        position = 0
        while True:
            line_end = self._buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(self._buffer[position:line_end]).split(b";")[0], 16)
            start = line_end + 2
            if size == 0:
                trailer_end = self._buffer.find(b"\r\n", start)
                if trailer_end < 0:
                    return None
                del self._buffer[: trailer_end + 2]
                return b"".join(parts)
            if len(self._buffer) < start + size + 2:
                return None
            parts.append(bytes(self._buffer[start : start + size]))
            position = start + size + 2


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for response in self.parser.feed(data):
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


@dataclass
class RunResult:
    """What one load run measured; `summary()` turns it into the numbers of the table."""

    concurrency: int
    items_per_request: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int | str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    first_body: bytes = b""
    first_headers: dict[str, str] = field(default_factory=dict)

    def record(self, status: int | str, latency_s: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies_s.append(latency_s)
        else:
            self.errors += 1

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies_s)
        total = ok + self.errors
        elapsed = self.elapsed_s or math.nan
        return {
            "concurrency": self.concurrency,
            "requests": total,
            "ok": ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "elapsed_s": self.elapsed_s,
            "rps": ok / elapsed,
            "items_per_s": ok * self.items_per_request / elapsed,
            "p50_ms": percentile(self.latencies_s, 50) * 1e3,
            "p99_ms": percentile(self.latencies_s, 99) * 1e3,
            "client_cpu_us_per_req": self.client_cpu_s / total * 1e6 if total else math.nan,
            "server_cpu_us_per_req": (
                self.server_cpu_s / total * 1e6
                if total and self.server_cpu_s is not None
                else math.nan
            ),
        }


async def _raw_worker(
    host: str,
    port: int,
    wires: Sequence[bytes],
    budget: _Budget,
    result: RunResult,
) -> None:
    loop = asyncio.get_running_loop()
    connection: _Connection | None = None
    i = 0
    while budget.take():
        wire = wires[i % len(wires)]
        i += 1
        start = time.perf_counter()
        try:
            if connection is None or connection.transport is None:
                _, connection = await loop.create_connection(_Connection, host, port)
            response = await connection.send(wire)
        except OSError as exc:
            result.record(type(exc).__name__, time.perf_counter() - start)
            connection = None
            continue
        result.record(response.status, time.perf_counter() - start)
        if not result.first_body:
            result.first_body, result.first_headers = response.body, response.headers
        if response.headers.get("connection", "").lower() == "close" and connection.transport:
            connection.transport.close()
            connection = None
    if connection is not None and connection.transport is not None:
        connection.transport.close()


async def _httpx_worker(
    client: Any, base: str, requests: Sequence[Request], budget: _Budget, result: RunResult
) -> None:
    i = 0
    while budget.take():
        request = requests[i % len(requests)]
        i += 1
        start = time.perf_counter()
        try:
            response = await client.request(
                request.method,
                base + request.path,
                content=request.body,
                headers=dict(request.headers),
            )
        except Exception as exc:  # any transport error counts, the run goes on
            result.record(type(exc).__name__, time.perf_counter() - start)
            continue
        result.record(response.status_code, time.perf_counter() - start)
        if not result.first_body:
            result.first_body = response.content
            result.first_headers = {k.lower(): v for k, v in response.headers.items()}


class _Budget:
    """Shared stop condition: at most `max_requests` started, none after `deadline`."""

    def __init__(self, max_requests: int, duration_s: float) -> None:
        self.left = max_requests
        self.deadline = time.perf_counter() + duration_s

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def run_load(
    host: str,
    port: int,
    requests: Sequence[Request],
    concurrency: int,
    max_requests: int,
    duration_s: float,
    items_per_request: int = 1,
    client: str = "raw",
) -> RunResult:
    """Drive `requests` (cycled) at `concurrency` until the request or time budget is spent."""
    result = RunResult(concurrency=concurrency, items_per_request=items_per_request)
    budget = _Budget(max_requests, duration_s)
    # The benchmark process may hold TensorFlow (raw throughput); a full collection over its
    # objects takes ~150 ms and would show up as the server's latency.
    gc.collect()
    gc.freeze()
    cpu_start = time.process_time()
    start = time.perf_counter()
    if client == "raw":
        authority = f"{host}:{port}"
        wires = [request.encode(authority) for request in requests]
        await asyncio.gather(
            *(_raw_worker(host, port, wires, budget, result) for _ in range(concurrency))
        )
    elif client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=120.0) as session:
            base = f"http://{host}:{port}"
            await asyncio.gather(
                *(
                    _httpx_worker(session, base, requests, budget, result)
                    for _ in range(concurrency)
                )
            )
    else:
        raise ValueError(f"unknown client {client!r} (raw or httpx)")
    result.elapsed_s = time.perf_counter() - start
    result.client_cpu_s = time.process_time() - cpu_start
    return result


# The canned server: the floor under any server, to measure the client's own ceiling. --------

CANNED_BODY = b'{"ok":true}'
CANNED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(CANNED_BODY)}\r\n\r\n".encode()
    + CANNED_BODY
)


class _CannedProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(CANNED_RESPONSE)


async def serve_canned(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_CannedProtocol, host, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--canned-server", type=int, metavar="PORT", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_canned(args.host, args.canned_server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
