"""Fixtures of the data tests: no test here may reach the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from data import mnist


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the real downloader fail loudly; tests that download pass their own ``fetch``."""

    def refuse(url: str, destination: Path) -> None:
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(mnist, "_urllib_fetch", refuse)
