"""`python -m service`: the real server with uvicorn on a loopback port, over TCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.__main__ import main
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
