"""Closing a listening socket without resetting the connections waiting in its accept queue.

The kernel completes a client's TCP handshake before the server accepts the connection: it waits
in the listening socket's accept queue until the event loop takes it. Closing the listening
socket resets every connection still queued, so a client that connected a moment before a
SIGTERM was drained saw its request cut ("connection reset") instead of an answer or a clean
refusal (`tests/service/test_shutdown.py`'s late probe: 7 of 20 runs on a loaded machine, when
the event loop was busy as the listener closed; 0 of 20 with this module).

So the drain stops the queue from growing first, then lets the server accept what is queued,
then closes:

1. `stop_accepting` attaches a socket filter that drops every packet sent to the listening
   socket: new SYNs, and the last ACK of a handshake not yet complete, so no connection joins
   the queue any more. Connections already accepted are separate sockets and are not affected.
2. `wait_drained` waits until the queue is empty (its length is `tcpi_unacked` of the listening
   socket's `TCP_INFO`), the event loop accepting as usual meanwhile.
3. The server closes the socket. A client whose SYN was dropped sends it again after its
   retransmission timeout (1 s on Linux) and is refused (`ECONNREFUSED`), which clients and
   balancers retry elsewhere.

Linux only (socket filters and `TCP_INFO`'s queue length): elsewhere, or on a socket that is not
TCP, each step does nothing and the socket closes as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

logger = logging.getLogger("service.connections")

_SO_ATTACH_FILTER = 26  # linux/asm-generic/socket.h
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: "return k bytes of the packet"; k = 0 drops it
_TCP_INFO_SIZE = 104
_TCPI_UNACKED = 24  # offset of tcpi_unacked: the accept queue's length on a listening socket
_TCP_LISTEN = 10


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


@contextlib.contextmanager
def _duplicate(sock: Any) -> Iterator[socket.socket | None]:
    """A `socket.socket` on a duplicate of `sock`'s descriptor (asyncio and uvloop hand out
    wrappers that lack setsockopt with a buffer); None when it has none any more."""
    try:
        fd = os.dup(sock.fileno())
    except (OSError, ValueError):
        yield None
        return
    dup = socket.socket(fileno=fd)
    try:
        yield dup
    finally:
        dup.close()  # the duplicate only: the listening socket stays open


def _listening_tcp(sock: socket.socket) -> bool:
    if sys.platform != "linux" or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)[0]
    except OSError:
        return False
    return bool(state == _TCP_LISTEN)


def stop_accepting(sockets: Iterable[Any]) -> bool:
    """Drop every packet sent to these listening sockets from now on (see the module's doc);
    False where a socket could not take the filter (not Linux, not a listening TCP socket)."""
    program = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, 0))
    fprog = _SockFprog(1, program)
    raw = ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog))
    attached = True
    for sock in sockets:
        with _duplicate(sock) as dup:
            if dup is None or not _listening_tcp(dup):
                attached = False
                continue
            try:
                dup.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, raw)
            except OSError as exc:
                logger.warning("cannot stop the listening socket's queue: %s", exc)
                attached = False
    return attached


def queued(sockets: Iterable[Any]) -> int:
    """Connections waiting in these listening sockets' accept queues (0 where unknown)."""
    total = 0
    for sock in sockets:
        with _duplicate(sock) as dup:
            if dup is None or not _listening_tcp(dup):
                continue
            info = dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
            total += struct.unpack_from("I", info, _TCPI_UNACKED)[0]
    return total


async def drain(sockets: list[Any], timeout_s: float) -> int:
    """`stop_accepting`, then wait (the event loop accepting) until the queues are empty or
    `timeout_s` has passed; returns the connections still queued (reset when the socket
    closes)."""
    if not stop_accepting(sockets):
        return queued(sockets)
    deadline = time.monotonic() + timeout_s
    _announce(queued(sockets))
    while (left := queued(sockets)) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return _report(left, timeout_s)


def drain_blocking(sockets: list[Any], timeout_s: float) -> int:
    """`drain` for a process whose event loop does not accept (uvicorn's supervisor: its
    workers accept from the socket they share with it)."""
    if not stop_accepting(sockets):
        return queued(sockets)
    deadline = time.monotonic() + timeout_s
    _announce(queued(sockets))
    while (left := queued(sockets)) and time.monotonic() < deadline:
        time.sleep(0.005)
    return _report(left, timeout_s)


def _announce(waiting: int) -> None:
    if waiting:
        logger.info("%d connections queued on the listening socket: accepting them", waiting)


def _report(left: int, timeout_s: float) -> int:
    if left:
        logger.warning("%d queued connections not accepted within %g s: reset", left, timeout_s)
    return left
