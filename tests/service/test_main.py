"""`python -m service`: the real server with uvicorn on a loopback port, over TCP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.__main__ import main
from tests.service.helpers import images

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "MLDM_WARMUP": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-dir",
            str(tiny_model_dir),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"server exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server not ready within 120 s")
            time.sleep(0.25)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()


@pytest.mark.slow
def test_server_answers_over_tcp(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as client:
        response = client.post(
            "/api/v1/digits/classify", json={"images": images(2).tolist(), "scale": "unit"}
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
        assert client.get("/v1/models/digit_encoder").status_code == 200
        error = client.post(
            "/api/v1/digits/classify", content=b"{", headers={"content-type": "application/json"}
        )
        assert error.status_code == 400 and "not valid JSON" in error.json()["error"]


def test_main_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--workers", "--model-dir", "--log-level", "MLDM_PORT"):
        assert option in out


def test_main_refuses_invalid_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLDM_PORT", "8000")  # restored (unset) after the test, as main() sets it
    assert main(["--port", "0"]) == 2
    assert "invalid settings" in capsys.readouterr().out
