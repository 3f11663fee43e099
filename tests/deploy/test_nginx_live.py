"""deploy/nginx.conf in a real nginx (Debian's), in front of replicas that are still loading.

`make nginx-test` (installs nginx-light with apt if missing; MLDM_NGINX=1). Two stand-in replicas
on 127.0.0.2 and 127.0.0.3 answer 503 while they "load" their models, as the service does, then
200. nginx gets the committed config with the one name `api-replica:8000` replaced by their two
addresses (a name that resolves to several addresses defines one server per address, so this is
the same upstream), and a client polls through it the whole time, as compose-test's readiness
check does. With the committed config every request after the replicas are ready must be answered
200 by one of them; the same run without the backup servers must get nginx's own 502 ("no live
upstreams") then, or this test proves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import ROOT

ENABLED = os.environ.get("MLDM_NGINX") == "1"
pytestmark = pytest.mark.skipif(not ENABLED, reason="real nginx: make nginx-test (MLDM_NGINX=1)")

LOADING_S = 2.0


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _Replica(ThreadingHTTPServer):
    """503 until `ready_at` (loading its models), then 200 naming itself."""

    daemon_threads = True

    def __init__(self, host: str, port: int, ready_at: float) -> None:
        self.ready_at = ready_at

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                loading = time.monotonic() < server.ready_at
                body = b'{"ready":false}' if loading else f'{{"replica":"{host}"}}'.encode()
                self.send_response(503 if loading else 200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = self
        super().__init__((host, port), Handler)


def _config(port: int, replicas: list[str], listen: int, tmp: Path, backups: bool) -> Path:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    primary = re.search(r"^(\s*)server api-replica:8000 (max_fails[^;]*);\n", conf, re.MULTILINE)
    backup = re.search(r"^\s*server api-replica:8000 backup[^;]*;\n", conf, re.MULTILINE)
    assert primary and backup, "deploy/nginx.conf no longer has the lines this test replaces"
    indent, params = primary.group(1), primary.group(2)
    conf = conf.replace(
        primary.group(0), "".join(f"{indent}server {r}:{port} {params};\n" for r in replicas)
    )
    conf = conf.replace(
        backup.group(0),
        "".join(f"{indent}server {r}:{port} backup max_fails=0;\n" for r in replicas)
        if backups
        else "",
    )
    conf = re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", conf)
    conf = conf.replace("pid /tmp/nginx.pid;", f"pid {tmp}/nginx.pid;")
    conf = conf.replace("access_log /dev/stdout;", "access_log off;")
    conf = conf.replace("error_log /dev/stderr warn;", f"error_log {tmp}/error.log warn;")
    # Writable temporary paths for an unprivileged prefix.
    temp = "".join(
        f"    {name}_temp_path {tmp}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = conf.replace("http {\n", "http {\n" + temp, 1)
    path = tmp / "nginx.conf"
    path.write_text(conf)
    return path


@pytest.fixture
def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("MLDM_NGINX=1 but no nginx: `make nginx-test` installs Debian's nginx-light")
    return binary


def _poll_through(
    nginx: str, tmp: Path, backups: bool
) -> tuple[dict[int, int], dict[int, int], str]:
    """Statuses while the replicas load and after they are ready, and nginx's error log."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = _free_port(hosts[0])
    listen = _free_port("127.0.0.1")
    ready_at = time.monotonic() + LOADING_S
    replicas = [_Replica(host, port, ready_at) for host in hosts]
    for replica in replicas:
        threading.Thread(target=replica.serve_forever, daemon=True).start()
    conf = _config(port, hosts, listen, tmp, backups)
    command = [nginx, "-p", str(tmp), "-e", str(tmp / "startup.log"), "-c", str(conf)]
    process = subprocess.Popen([*command, "-g", "daemon off;"])
    loading: dict[int, int] = {}
    ready: dict[int, int] = {}
    try:
        url = f"http://127.0.0.1:{listen}/v2/health/ready"
        deadline = time.monotonic() + 10
        while True:  # nginx up
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        # Poll while the replicas load and for 3 s after: what a readiness check, or a client
        # that arrives right after start-up, sees.
        end = ready_at + 3
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < end:
                sent = time.monotonic()
                status = client.get(url).status_code
                # A request sent before ready_at may have reached a replica still loading.
                seen = loading if sent < ready_at else ready
                seen[status] = seen.get(status, 0) + 1
                time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(10)
        for replica in replicas:
            replica.shutdown()
            replica.server_close()
    return loading, ready, (tmp / "error.log").read_text()


def test_nginx_answers_from_the_replicas_as_soon_as_they_are_ready(
    nginx_binary: str, tmp_path: Path
) -> None:
    loading, ready, errors = _poll_through(nginx_binary, tmp_path, backups=True)
    # While every replica loads there is nothing to answer with: nginx passes a 503 on or, once
    # it has tried every server, answers 502 itself - both say "not ready" to a client (a
    # request sent just before ready_at can be answered after it: 200).
    assert set(loading) <= {200, 502, 503}, loading
    assert loading.get(200, 0) <= 2, loading
    # The moment they are ready, every request is answered by one of them.
    assert ready and set(ready) == {200}, (ready, errors)


def test_nginx_without_the_backups_answers_502_after_the_replicas_are_ready(
    nginx_binary: str, tmp_path: Path
) -> None:
    # The control: the failure the backups prevent (compose-test's 502s), reproduced with the
    # same replicas and client: the 503s of loading marked both down for fail_timeout (10 s).
    _, ready, errors = _poll_through(nginx_binary, tmp_path, backups=False)
    assert ready.get(502, 0) > 0, ready
    assert "no live upstreams" in errors


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield
