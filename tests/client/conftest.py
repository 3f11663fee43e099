"""The client distribution's own tests (`make client-test`): they import `mldm_client`, the
installed distribution of service/client/, in a virtualenv that has no TensorFlow, and talk to the
real server on loopback, started with the project's virtualenv (MLDM_SERVER_PYTHON) on the
committed models. Where `mldm_client` is not installed (the project's own virtualenv, `make
test`) there is nothing to test here: the same code is tested as `service.client` in
tests/service/test_client*.py.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.live_server import REPO, live_server

if importlib.util.find_spec("mldm_client") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = os.environ.get("MLDM_SERVER_PYTHON", sys.executable)
    log: Path = tmp_path_factory.mktemp("server") / "server.log"
    with live_server(
        REPO / "models", log, {"MLDM_WARMUP": "false"}, ready_within_s=180, python=python
    ) as server:
        yield server.url
