"""service.listening on real loopback sockets: the queue stops growing, what it held is accepted
intact, and a client that came after is refused at the connection, not accepted and reset."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time

import pytest

from service import listening

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="socket filters are Linux's")


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def _connect_later(port: int, outcome: dict[str, str]) -> threading.Thread:
    def connect() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"ping")
                outcome["late"] = repr(sock.recv(1))  # b'' or a reset: accepted, then dropped
        except OSError as exc:
            outcome["late"] = type(exc).__name__

    thread = threading.Thread(target=connect)
    thread.start()
    return thread


def test_queued_connections_are_counted_and_accepted_intact_after_the_queue_stops() -> None:
    with _listener() as server:
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for i, client in enumerate(clients):
            client.sendall(b"request %d" % i)
        deadline = time.monotonic() + 5
        while listening.queued([server]) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listening.queued([server]) == 3

        assert listening.stop_accepting([server])
        outcome: dict[str, str] = {}
        late = _connect_later(port, outcome)
        time.sleep(0.3)
        assert listening.queued([server]) == 3, "a connection joined the queue after the filter"

        received = []
        for _ in range(3):
            conn, _ = server.accept()
            with conn:
                received.append(conn.recv(64))
                conn.sendall(b"ok")
        assert sorted(received) == [b"request 0", b"request 1", b"request 2"]
        assert all(client.recv(2) == b"ok" for client in clients)
        assert listening.queued([server]) == 0
    late.join(timeout=10)
    # Its SYN was dropped; sent again once the socket had closed, it was refused.
    assert outcome == {"late": "ConnectionRefusedError"}
    for client in clients:
        client.close()


def test_drain_waits_for_the_event_loop_to_accept_the_queue() -> None:
    async def scenario() -> tuple[int, int, list[bytes]]:
        got: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(await reader.read(64))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=16)
        port = server.sockets[0].getsockname()[1]
        # Connections queue while the loop is busy (blocked here, as under load).
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for client in clients:
            client.sendall(b"hello")
        before = listening.queued(server.sockets)
        left = await listening.drain(list(server.sockets), timeout_s=5)
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
        for client in clients:
            client.close()
        return before, left, got

    before, left, got = asyncio.run(scenario())
    assert before == 4
    assert left == 0
    assert got == [b"hello"] * 4


def test_sockets_that_are_not_listening_tcp_are_left_alone() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix, socket.socket() as unbound:
        assert not listening.stop_accepting([unix, unbound])
        assert listening.queued([unix, unbound]) == 0
        assert listening.drain_blocking([unix], timeout_s=1) == 0
