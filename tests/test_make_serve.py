"""`make serve` leaves host and port to the settings (MLDM_HOST, MLDM_PORT), which default to
loopback: the Makefile must not override them with a public interface."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def test_make_serve_runs_the_service_without_host_or_port_options() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -n: print the recipe; -o: take the venv stamp as up to date (no setup is run).
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.setup-stamp", "serve", "HOST=0.0.0.0", "PORT=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = [line for line in out.splitlines() if "-m service" in line]
    assert command and command[0].split()[-2:] == ["-m", "service"], out


def test_settings_decide_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "MLDM_HOST", "MLDM_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert (Settings().host, Settings().port) == ("127.0.0.1", 8000)
    monkeypatch.setenv("MLDM_HOST", "0.0.0.0")
    monkeypatch.setenv("MLDM_PORT", "8123")
    assert (Settings().host, Settings().port) == ("0.0.0.0", 8123)
