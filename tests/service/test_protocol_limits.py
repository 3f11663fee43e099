"""The HTTP protocol's limits against slow and hostile clients (`service.http_protocol`): a real
uvicorn server on a loopback port, in the test's event loop, with a trivial app (no models)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import Receive, Scope, Send

from service.http_protocol import SHUTTING_DOWN, ConnectionLimits, NoDelayHttpToolsProtocol
from tests.service.live_server import free_port

#: Requests to `/hold` wait for it.
HOLD = asyncio.Event()


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, answers its length."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/hold":
        await HOLD.wait()
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"received": size}).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(limits: ConnectionLimits) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        echo,
        host="127.0.0.1",
        port=port,
        http=NoDelayHttpToolsProtocol,
        lifespan="off",
        log_level="warning",
    )
    config.connection_limits = limits  # type: ignore[attr-defined]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await task
        SHUTTING_DOWN.clear()  # set by the server's shutdown of its connections


async def exchange(port: int, data: bytes, pause_s: float = 0.0) -> tuple[bytes, float]:
    """Send `data` (one byte every `pause_s` when set) while reading until the server closes
    its side; stop sending then, as a client that reads its answer does."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    answer = asyncio.create_task(reader.read(-1))
    try:
        if pause_s:
            for byte in data:
                if answer.done():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(pause_s)
        else:
            writer.write(data)
            await writer.drain()
        received = await asyncio.wait_for(answer, timeout=10)
    except ConnectionResetError:
        received = b"<reset>"
    finally:
        writer.close()
    return received, time.perf_counter() - start


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


REQUEST = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"


async def test_request_within_limits_is_served() -> None:
    async with serving(ConnectionLimits()) as port:
        answer, _ = await exchange(port, REQUEST)
    assert status_and_body(answer) == (200, {"received": 5})


async def test_header_over_max_header_bytes_is_answered_431_in_the_error_shape() -> None:
    huge = b"GET / HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n"
    async with serving(ConnectionLimits(max_header_bytes=16 * 1024)) as port:
        answer, seconds = await exchange(port, huge)
        # The server still serves others afterwards.
        after, _ = await exchange(port, REQUEST)
    status, body = status_and_body(answer)
    assert status == 431 and "at most 16384 bytes" in str(body["error"]), body
    assert seconds < 3
    assert status_and_body(after)[0] == 200


async def test_slow_request_head_is_answered_408_after_header_timeout() -> None:
    async with serving(ConnectionLimits(header_timeout_s=0.5)) as port:
        # A byte every 0.1 s: each read keeps the connection busy, the total is what counts.
        answer, seconds = await exchange(port, REQUEST, pause_s=0.1)
    status, body = status_and_body(answer)
    assert status == 408 and "request head" in str(body["error"]), body
    assert 0.4 < seconds < 3


async def test_silent_connection_is_closed_after_header_timeout() -> None:
    async with serving(ConnectionLimits(header_timeout_s=0.3)) as port:
        answer, seconds = await exchange(port, b"")
    assert status_and_body(answer)[0] == 408
    assert seconds < 3


async def test_slow_body_is_answered_408_after_body_timeout() -> None:
    head = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n"
    async with serving(ConnectionLimits(body_timeout_s=0.5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        writer.write(head + b"0123456789")  # 10 of 100 bytes, then nothing
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(-1), timeout=10)
        seconds = time.perf_counter() - start
        writer.close()
    status, body = status_and_body(answer)
    assert status == 408 and "request body" in str(body["error"]), body
    assert 0.4 < seconds < 3


async def test_connection_beyond_max_connections_is_answered_503_but_probes_pass() -> None:
    async with serving(ConnectionLimits(max_connections=2)) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)  # accepted by the server
        refused, _ = await exchange(port, REQUEST)
        probe, _ = await exchange(
            port, b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.1)
        served, _ = await exchange(port, REQUEST)
    status, body = status_and_body(refused)
    assert status == 503 and "connections" in str(body["error"]), body
    assert b"retry-after: 1" in refused.lower()
    assert status_and_body(probe)[0] == 200  # the trivial app answers every path
    assert status_and_body(served)[0] == 200


async def test_request_beyond_max_in_flight_is_refused_at_once_and_the_connection_kept() -> None:
    HOLD.clear()
    hold = b"POST /hold HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
    async with serving(ConnectionLimits(max_in_flight=1)) as port:
        held = asyncio.create_task(exchange(port, hold))
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        keep = REQUEST.replace(b"connection: close\r\n", b"")
        writer.write(keep)
        refused = await asyncio.wait_for(reader.readuntil(b"}"), timeout=5)
        HOLD.set()
        await held
        writer.write(REQUEST)  # the same connection, now with room
        served = await asyncio.wait_for(reader.read(-1), timeout=5)
        writer.close()
    status, body = status_and_body(refused)
    assert status == 503 and "1 requests in flight" in str(body["error"]), body
    assert b"retry-after: 1" in refused and b"connection: close" not in refused
    assert status_and_body(served) == (200, {"received": 5})


async def test_unparsable_request_is_answered_400_in_the_error_shape() -> None:
    async with serving(ConnectionLimits()) as port:
        answer, _ = await exchange(port, b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
    status, body = status_and_body(answer)
    assert status == 400 and "malformed HTTP request" in str(body["error"]), body
    assert b"content-type: application/json" in answer
