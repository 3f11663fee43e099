"""A real Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium, and a real server.

Skipped in `make test`; `make browser-test` (in .ci/run) installs the two packages when missing
and sets MLDM_BROWSER=1. Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver and
Selenium Manager is kept offline, so nothing is downloaded. The server is `python -m service` on
loopback with the committed models. Screenshots of each step go to tests/browser/screenshots/
(git-ignored), for a person to look at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.service.conftest import REPO_MODELS
from tests.service.live_server import LiveServer, live_server

CHROMIUM = Path(os.environ.get("MLDM_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MLDM_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"

ENABLED = os.environ.get("MLDM_BROWSER") == "1"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("browser") / "server.log"
    with live_server(REPO_MODELS, log, env={"MLDM_WORKERS": "1"}) as running:
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager would otherwise look for (and download) a browser and a driver.
    os.environ["SE_OFFLINE"] = "true"
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: run `make browser-test`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1200,1600",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--metrics-recording-only",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def requests(driver: Any) -> list[dict[str, Any]]:
    """Every request the browser sent since the last call (Chrome's performance log):
    `url`, `method` and, for small bodies, `postData`."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            sent.append(message["params"]["request"])
    return sent


def foreign(sent: list[dict[str, Any]], server_url: str) -> list[str]:
    """The URLs that would leave the machine: anything but the server, data: and blob:."""
    origin = urlsplit(server_url)
    out = []
    for url in (request["url"] for request in sent):
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob"):
            continue
        if (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc):
            out.append(url)
    return out


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
