"""The example requests of the README and of the API and client pages run as written.

Every fenced `sh` or `python` block of `EXAMPLE_PAGES` that calls `localhost:8000` is an example
request. Each runs against the real server (`python -m service` on a free loopback port, the
committed models), with `localhost:8000` pointed at that server and nothing else changed: `sh`
blocks in bash with `-e -o pipefail` and curl made to fail on an HTTP error (`--fail-with-body`),
`python` blocks in a fresh interpreter. A block preceded by a line `<!-- not run: reason -->` is
skipped (it installs something, say). The working directory holds the pictures the examples
upload, `digit.png` and `number.png`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service.live_server import LiveServer, live_server

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PAGES = ("README.md", "docs/api.md", "docs/client.md")
ADDRESS = "localhost:8000"
_FENCE = re.compile(r"^```(\w*)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not run\b")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    language: str
    code: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def examples(page: str) -> list[Example]:
    """The example requests of one page, in order."""
    lines = (REPO / page).read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        code = "\n".join(lines[index + 1 : end]) + "\n"
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        if (
            match.group(1) in {"sh", "python"}
            and ADDRESS in code
            and not _NOT_RUN.match(previous.strip())
        ):
            found.append(Example(page, index + 1, match.group(1), code))
        index = end + 1
    return found


ALL_EXAMPLES = [example for page in EXAMPLE_PAGES for example in examples(page)]


def _picture(strokes: list[tuple[int, int]], width: int) -> Image.Image:
    """Dark vertical strokes (left, right columns) on light paper with a margin, like a scan."""
    pixels = np.full((64, width), 235, dtype=np.uint8)
    for left, right in strokes:
        pixels[12:52, left:right] = 20
    return Image.fromarray(pixels, mode="L")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the pictures the examples upload, and a curl that fails on HTTP errors."""
    root = tmp_path_factory.mktemp("examples")
    _picture([(29, 35)], 64).save(root / "digit.png")
    _picture([(20, 26), (60, 66), (100, 106)], 128).save(root / "number.png")
    curl = shutil.which("curl")
    if curl is not None:
        (root / "bin").mkdir()
        wrapper = root / "bin" / "curl"
        wrapper.write_text(f'#!/bin/sh\nexec {curl} --fail-with-body "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("examples-server") / "server.log"
    with live_server(REPO / "models", log, env={"MLDM_WARMUP": "false"}) as running:
        yield running


def test_the_readme_has_one_request_per_api() -> None:
    readme = "".join(example.code for example in examples("README.md"))
    for what, marker in {
        "task route": "/api/v1/",
        "V2": "/v2/models/",
        "TF Serving": "/v1/models/",
        "Python client": "Client(",
    }.items():
        assert marker in readme, f"README.md has no runnable {what} example ({marker})"


@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=str)
def test_example_runs_as_written(example: Example, server: LiveServer, workdir: Path) -> None:
    code = example.code.replace(ADDRESS, server.url.removeprefix("http://"))
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    if example.language == "sh":
        if not (workdir / "bin" / "curl").exists():
            pytest.skip("no curl on this machine")
        environment["PATH"] = f"{workdir / 'bin'}{os.pathsep}{environment['PATH']}"
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    else:
        command = [sys.executable, "-c", code]
    try:
        done = subprocess.run(
            command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired as error:
        output = b"".join(part for part in (error.stdout, error.stderr) if isinstance(part, bytes))
        pytest.fail(f"{example} did not finish within 120 s:\n{output.decode(errors='replace')}")
    assert done.returncode == 0, (
        f"{example} failed with status {done.returncode}\n--- code\n{code}--- stdout\n"
        f"{done.stdout}\n--- stderr\n{done.stderr}\n--- server log\n{server.output()[-3000:]}"
    )
    assert done.stdout.strip(), f"{example} printed nothing:\n{done.stderr}"
