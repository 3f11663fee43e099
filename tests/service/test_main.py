"""`python -m service`: the real server with uvicorn on a loopback port, over TCP."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.__main__ import main, metrics_dir
from service.settings import Settings
from tests.service.helpers import images
from tests.service.live_server import live_server


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {"MLDM_WARMUP": "true", "MLDM_LOG_LEVEL": "warning"}
    with live_server(tiny_model_dir, log, env) as running:
        yield running.url


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


@pytest.mark.slow
def test_server_closes_idle_connections_after_keep_alive_s(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {"MLDM_KEEP_ALIVE_S": "1", "MLDM_LOG_LEVEL": "warning"}
    with live_server(tiny_model_dir, tmp_path / "server.log", env) as running:
        host, port = running.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):  # headers and body may come in separate packets
                answer += sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            start = time.monotonic()
            assert sock.recv(4096) == b"", "the server should close the idle connection"
            # Closed by the server's keep-alive timer (1 s), well before the socket's 10 s.
            assert 0.5 < time.monotonic() - start < 5


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


def test_metrics_dir_is_made_for_several_workers_and_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with metrics_dir(Settings(workers=2)) as made:
        assert made is not None and os.environ["PROMETHEUS_MULTIPROC_DIR"] == made
        path = Path(made)
        assert path.parent == tmp_path and path.stat().st_mode & 0o777 == 0o700
        (path / "counter_1.db").write_bytes(b"")
    assert not path.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with metrics_dir(Settings(workers=1)) as none:
        assert none is None and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_metrics_dir_of_the_operator_is_used_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with metrics_dir(Settings(workers=2)) as given:
        assert given == str(tmp_path)
    assert tmp_path.is_dir() and os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)


def test_main_refuses_to_start_without_a_writable_metrics_dir(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLDM_WORKERS", "1")  # restored after the test, as main() sets it
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert main(["--workers", "2", "--model-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "cannot make the metrics directory" in out and "TMPDIR" in out
