"""`python -m service` / `mldm-serve`: run the model server with uvicorn.

Options override the `MLDM_*` environment (and plain `HOST`/`PORT`); they are passed to the app
through the environment so that every uvicorn worker process builds the same settings.

With several workers (or when the operator sets `PROMETHEUS_MULTIPROC_DIR`) the metrics use
prometheus-client's multiprocess mode: a fresh private directory under `$TMPDIR` (`/tmp`, a tmpfs
in the image) is made before the workers start, named in `PROMETHEUS_MULTIPROC_DIR`, which they
inherit, and removed on exit. A directory the operator names is used as is and kept.
"""

from __future__ import annotations

import argparse
import logging.config
import math
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType
from typing import Any

from pydantic import ValidationError

from service import listening, logs
from service.http_protocol import ConnectionLimits, NoDelayHttpToolsProtocol
from service.settings import Settings

#: uvicorn's exit status when the server could not start (app, models' directory, socket).
STARTUP_FAILURE = 3

#: How long a drain waits for the event loops to accept what the listening socket had queued.
QUEUE_DRAIN_S = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mldm-serve",
        description="Serve the SavedModels under the model directory over REST (task endpoints, "
        "TensorFlow Serving's REST API, KServe V2). Every option also has an MLDM_* env var.",
    )
    parser.add_argument(
        "--host", help="interface to bind (env MLDM_HOST or HOST; default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, help="TCP port (env MLDM_PORT or PORT; default 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        help="uvicorn worker processes, each with its own copy of the "
        "models (env MLDM_WORKERS; default 1)",
    )
    parser.add_argument(
        "--model-dir", help="directory of <name>/<version>/ SavedModels (env MLDM_MODEL_DIR)"
    )
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (env MLDM_LOG_LEVEL; default info)",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="json: one JSON object per log line; text: plain lines (env MLDM_LOG_FORMAT; "
        "default json)",
    )
    return parser.parse_args(argv)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextmanager
def metrics_dir(settings: Settings) -> Iterator[str | None]:
    """The multiprocess metrics directory for the run (None: one process, in-memory metrics)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given or settings.workers == 1 or not settings.metrics_enabled:
        yield given
        return
    # Private (mode 0700) and fresh: files left by an earlier run would add its counts to ours.
    path = tempfile.mkdtemp(prefix="mldm-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield path
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(path, ignore_errors=True)


def serve(settings: Settings, log_config: dict[str, Any]) -> bool:
    """Run uvicorn (one process, or a supervisor and `settings.workers` worker processes) until
    it is stopped; False when the server could not start."""
    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess

    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http=NoDelayHttpToolsProtocol,
        log_level=settings.log_level,
        # Every worker applies this config; the app logs one access line per request itself.
        log_config=log_config,
        access_log=False,
        # On SIGTERM uvicorn stops accepting, lets requests in flight finish for this long,
        # then runs the lifespan shutdown.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        timeout_keep_alive=settings.keep_alive_s,
        backlog=settings.backlog,
    )
    # Read by the protocol of every connection; pickled with the config into each worker.
    config.connection_limits = ConnectionLimits(  # type: ignore[attr-defined]
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
        max_in_flight=settings.max_in_flight,
        target_latency_s=settings.queue_max_wait_ms / 1000,
    )
    if config.workers == 1:

        class DrainingServer(uvicorn.Server):
            """uvicorn's server, whose drain accepts the connections already queued on the
            listening socket before closing it (`service.listening`): closed at once, the kernel
            reset them, and clients that connected a moment before the signal lost their
            request."""

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                listeners = [s for server in self.servers for s in server.sockets or ()]
                await listening.drain(listeners, QUEUE_DRAIN_S)
                await super().shutdown(sockets)

        server = DrainingServer(config)
        server.run()
        return server.started

    class Supervisor(Multiprocess):
        """uvicorn's supervisor of workers that lets go of the listening socket on SIGTERM.

        The supervisor holds the socket its workers inherited. Its own copy kept the socket
        listening after every worker had closed theirs to drain: the kernel went on accepting
        connections that no process would ever take, and reset them all when the supervisor
        exited (44 and 45 lost in two runs, issue 23). Closed here first, the socket stops
        listening as soon as the workers close it: a late client is refused, not reset."""

        def _release(self) -> None:
            # First the workers accept what the socket has queued (`service.listening`).
            listening.drain_blocking(self.sockets, QUEUE_DRAIN_S)
            for sock in self.sockets:
                sock.close()

        def handle_term(self) -> None:
            self._release()
            super().handle_term()

        def handle_int(self) -> None:
            self._release()
            super().handle_int()

    Supervisor(config, sockets=[config.bind_socket()]).run()
    return True


def main(argv: list[str] | None = None) -> int:
    """Parse options, validate the settings (fail fast), and run uvicorn until stopped."""
    args = parse_args(argv)
    overrides = {
        "MLDM_HOST": args.host,
        "MLDM_PORT": args.port,
        "MLDM_WORKERS": args.workers,
        "MLDM_MODEL_DIR": args.model_dir,
        "MLDM_LOG_LEVEL": args.log_level,
        "MLDM_LOG_FORMAT": args.log_format,
    }
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        # Without the input values: pydantic would print a refused MLDM_API_KEY in clear.
        problems = [
            f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        ]
        print("mldm-serve: invalid settings:\n" + "\n".join(problems))
        return 2
    with ExitStack() as stack:
        try:
            stack.enter_context(metrics_dir(settings))
        except OSError as exc:
            print(
                f"mldm-serve: cannot make the metrics directory of several workers: {exc}; set "
                "TMPDIR (or PROMETHEUS_MULTIPROC_DIR) to a writable directory"
            )
            return 2
        log_config = logs.logging_config(settings)
        logging.config.dictConfig(log_config)

        # After a graceful shutdown uvicorn re-raises the SIGTERM it caught, which with the default
        # handler ends the process as "killed by signal 15" even though nothing was lost; exit 0
        # instead, as orchestrators and process supervisors expect of a clean stop.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        if not serve(settings, log_config):
            return STARTUP_FAILURE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
