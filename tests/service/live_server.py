"""The real server as a subprocess (`python -m service`) on a free loopback port, for tests.

Output goes to a file (a pipe nobody reads would fill up and block the server), shown on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def live_server(
    model_dir: Path,
    log: Path,
    env: dict[str, str] | None = None,
    ready_within_s: float = 120,
    ready_path: str = "/v2/health/ready",
    python: str = sys.executable,
) -> Iterator[LiveServer]:
    """Start the server, wait until `ready_path` answers 200, SIGTERM it on the way out.
    `python`: the interpreter that runs it (the client's tests run in a virtualenv without the
    server's dependencies and start the server with the project's)."""
    port = free_port()
    environment = {
        **os.environ,
        "MLDM_LOG_FORMAT": "text",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(env or {}),
    }
    command = [python, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--model-dir", str(model_dir)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=sink, stderr=sink)
    server = LiveServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.url}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready within {ready_within_s} s:\n{server.output()}")
            time.sleep(0.25)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
