"""uvicorn's httptools protocol with TCP_NODELAY set on every accepted connection.

With `--workers N`, uvicorn 0.54 binds the listening socket itself with protocol number 0, and
asyncio then never sets TCP_NODELAY on the connections it accepts (Kludex/uvicorn#3149): Nagle's
algorithm held every keep-alive response back ~45 ms, until the client's delayed ACK came.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """Sends each response as soon as it is written, whatever socket uvicorn accepted it on."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
