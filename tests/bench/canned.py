"""A test double for the driver's tests: every HTTP/1.1 request answered with a fixed body on
keep-alive connections (`python -m tests.bench.canned --port P`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

from bench import harness

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Canned(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer, self.transport = bytearray(), None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            marker = head.find(b"content-length:")
            length = int(head[marker + 15 :].split(b"\r\n", 1)[0]) if marker >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.transport.write(ANSWER)  # type: ignore[attr-defined]


def server(log_dir: Path) -> harness.Server:
    """This module as a server subprocess on a free loopback port (not started)."""
    canned = harness.python_server("canned", "tests.bench.canned", [], log_dir)
    canned.ready_path = "/"
    return canned


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.bench.canned")
    parser.add_argument("--port", type=int, required=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args().port))
