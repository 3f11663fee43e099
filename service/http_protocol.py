"""uvicorn's httptools protocol with the limits a server facing slow or hostile clients needs.

uvicorn's httptools protocol has no header size limit (a 64 MiB header took 4.2 s to parse, on
the event loop, and was answered 200), no time limit on reading a request head or body (200
connections sending headers a byte at a time stayed open for good) and no connection cap that
answers in our error shape (`limit_concurrency` also counts tasks and answers in text/plain).
Its h11 protocol has a head size limit (`h11_max_incomplete_event_size`) but no timeouts either,
and costs more CPU per request; so these checks are added here, where the bytes arrive:

- a request head over `max_header_bytes` is answered 431 and the connection closed, checked per
  read before it is parsed further;
- a head not complete within `header_timeout_s` of the connection (or of its first byte after a
  keep-alive pause), or a body not complete within `body_timeout_s` of its head, is answered 408
  and closed, logged once;
- a connection beyond `max_connections` of this worker is answered one 503 (health probes still
  get their answer) and closed;
- a request that finds this worker with more requests in flight than it can answer in
  `target_latency_s` (its rate of answers over the last second times that target, by Little's
  law, between 64 and `max_in_flight`) is answered 503 + `Retry-After` at once, before an ASGI
  task is made or its body read: under a flood, refusing costs the event loop microseconds, so
  the requests it admits, and the health probes (never refused), keep their latency.

Each refusal is counted in `mldm_http_refused_total{reason}`.

A request that does not parse as HTTP is answered 400 in the JSON error shape (uvicorn's own is
text/plain).

Also TCP_NODELAY on every accepted connection: with `--workers N`, uvicorn 0.54 binds the
listening socket itself with protocol number 0, and asyncio then never sets TCP_NODELAY on the
connections it accepts (Kludex/uvicorn#3149): Nagle's algorithm held every keep-alive response
back ~45 ms, until the client's delayed ACK came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("service.connections")

#: How long a rejected connection is kept half-closed, its further bytes dropped.
_LINGER_S = 2.0

#: How long connections are served as usual once the drain begins (see `shutdown`).
_DRAIN_DELAY_S = 1.0

#: Paths a refused connection is still answered on: probes must see the process alive.
_PROBES = (b"/v2/health/live", b"/v2/health/ready")


#: Set once uvicorn begins a graceful shutdown in this process (it calls `shutdown` on every
#: connection): readiness answers 503 while requests in flight drain, and a request still
#: running when the grace period ends is answered 503 in the error shape (the middleware).
SHUTTING_DOWN = threading.Event()

#: The scope key set when a request's body timed out: the client was answered 408, and that is
#: what the access line (`service.api.middleware`) says.
TIMED_OUT = "mldm.timed_out"


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of `service.settings.Settings` this protocol enforces; `service.__main__`
    hangs them on uvicorn's config (`config.connection_limits`), which every worker inherits."""

    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 2048
    max_in_flight: int = 512
    target_latency_s: float = 0.25


#: Requests refused by the protocol, before the app; `service.api.middleware` exposes it.
REFUSED = Counter(
    "mldm_http_refused",
    "Requests or connections refused before the app, by reason: in_flight (503), connections "
    "(503), header_size (431), header_timeout and body_timeout (408).",
    ("reason",),
    registry=None,
)


class _Answers:
    """This worker's rate of answered requests over the last whole second (every connection)."""

    def __init__(self) -> None:
        self.since = 0.0
        self.count = 0
        self.per_s = 0.0

    def add(self, now: float) -> None:
        elapsed = now - self.since
        if elapsed >= 1.0:
            self.per_s = self.count / elapsed if self.since else 0.0
            self.since, self.count = now, 0
        self.count += 1


_answers = _Answers()

#: The adaptive limit's floor: room for the requests that slow lanes (the solver) hold, each
#: bounded on its own, beside the fast ones.
_MIN_IN_FLIGHT = 64


def _response(status: int, reason: str, error: str, extra: str = "", close: bool = True) -> bytes:
    """A complete response in the service's JSON error shape (`Connection: close` unless not
    `close`)."""
    body = json.dumps({"error": error}).encode()
    connection = "connection: close\r\n" if close else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}{connection}\r\n"
    )
    return head.encode("latin-1") + body


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """httptools with TCP_NODELAY, a head size limit, head/body timeouts and a connection cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = getattr(self.config, "connection_limits", None) or ConnectionLimits()
        self.max_header_bytes = limits.max_header_bytes
        self.header_timeout_s = limits.header_timeout_s
        self.body_timeout_s = limits.body_timeout_s
        self.max_connections = limits.max_connections
        #: Bytes of the current request head received so far (None: not reading a head).
        self._head_bytes: int | None = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._discarding = False
        #: The drain reached this connection: every answer closes it.
        self._draining = False
        #: A refused request's body is being skipped (the connection is kept).
        self._skipping = False
        #: The last request is done: the next bytes begin a new head.
        self._between = False
        self.max_in_flight = limits.max_in_flight
        self.target_latency_s = limits.target_latency_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Counted before super() adds this one: the cap is on the connections already open.
        self._refused = len(self.connections) >= self.max_connections
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._head_bytes is None and (
            self._between or (self.cycle is not None and self.cycle.response_complete)
        ):
            self._between = False
            self._head_bytes = 0  # the first bytes of the next request on this connection
            self._arm(self.header_timeout_s, "request head")
        reading_head = self._head_bytes is not None
        super().data_received(data)
        if reading_head and self._head_bytes is not None and not self.transport.is_closing():
            # Still in the head after this read (a head completed within it reset the count).
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                REFUSED.labels("header_size").inc()
                self._reject(
                    431,
                    "Request Header Fields Too Large",
                    f"request head: expected at most {self.max_header_bytes} bytes, received "
                    f"more than {self._head_bytes}",
                )

    def in_flight_limit(self) -> int:
        """Requests this worker may hold: what it answers in `target_latency_s` at its rate of
        the last second (Little's law), between 64 and `max_in_flight`."""
        if _answers.per_s == 0.0:
            return self.max_in_flight
        adaptive = int(_answers.per_s * self.target_latency_s)
        return min(self.max_in_flight, max(_MIN_IN_FLIGHT, adaptive))

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm()
        probe = self.url.split(b"?")[0] in _PROBES
        idle = self.cycle is None or self.cycle.response_complete  # not behind a pipelined one
        if not probe and idle and len(self.tasks) >= self.in_flight_limit():
            REFUSED.labels("in_flight").inc()
            keep = self.parser.should_keep_alive() and not self._draining
            self.transport.write(
                _response(
                    503,
                    "Service Unavailable",
                    f"the server is overloaded: {len(self.tasks)} requests in flight; retry later",
                    "retry-after: 1\r\n",
                    close=not keep,
                )
            )
            if not keep:
                self._linger()
                return
            self._skipping = True
            self._arm(self.body_timeout_s, "request body")
            return
        if self._refused and not probe:
            REFUSED.labels("connections").inc()
            self._reject(
                503,
                "Service Unavailable",
                f"the server is overloaded: more than {self.max_connections} connections; "
                "retry later",
                "retry-after: 1\r\n",
            )
            return
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # draining: answered, then closed
        if self.cycle is not None and self.cycle.more_body:
            self._arm(self.body_timeout_s, "request body")

    def on_body(self, body: bytes) -> None:
        if not self._skipping:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if self._skipping:
            self._skipping = False
            self._between = True
            self._answered()
            return
        super().on_message_complete()

    def _answered(self) -> None:
        _answers.add(self.loop.time())
        if not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        _answers.add(self.loop.time())
        super().on_response_complete()
        if self._refused and not self.transport.is_closing():
            self.transport.close()  # a probe answered on a refused connection: no keep-alive

    def shutdown(self) -> None:
        """uvicorn's drain begins (its listeners are closed). uvicorn would now close idle
        connections and end every other one after its response at once. Each is given
        `_DRAIN_DELAY_S` first: a client that connected just before, or sends its next request
        on a keep-alive connection, is answered rather than cut under its request; and with
        several workers, whose shared listening socket only closes when the last one lets go,
        clients sent away by the first worker to drain would reconnect into that socket's
        queue and be reset when the last one closes it: kept a moment, they reconnect after
        every worker has closed it, and are refused cleanly."""
        SHUTTING_DOWN.set()
        if not self.transport.is_closing():
            self.loop.call_later(_DRAIN_DELAY_S, self._drain)

    def _drain(self) -> None:
        self._draining = True
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self, seconds: float, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        REFUSED.labels("header_timeout" if what == "request head" else "body_timeout").inc()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A request is being read: the app sees a disconnect and its access line says 408.
            cycle.scope[TIMED_OUT] = True  # type: ignore[literal-required]
        else:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            logger.info("408 to %s: no complete %s within %g s; closing", client, what, seconds)
        self._reject(408, "Request Timeout", f"{what}: not received within {seconds:g} s")

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse: 400 in our JSON shape, not uvicorn's text/plain."""
        self._disarm()
        self.transport.write(_response(400, "Bad Request", f"malformed HTTP request: {msg}"))
        self._linger()

    def _reject(self, status: int, reason: str, error: str, extra: str = "") -> None:
        """Answer `status` in the error shape (unless a response already began) and close."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()
                return
            # The app is still reading the body: it sees a disconnect and its answer is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(_response(status, reason, error, extra))
        self._linger()

    def _linger(self) -> None:
        """Close after an answer is written."""
        # A lingering close, as nginx's: closing while the client still sends would make the
        # kernel reset the connection, and the client might lose the answer before reading it.
        # Half-close, drop what still comes, close for good after a moment.
        self._discarding = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(_LINGER_S, self.transport.close)
