"""The Dockerfile and .dockerignore, read as the builder would read them (no engine here)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    ROOT,
    Instruction,
    base_images,
    env_of,
    normalise,
    parse_dockerfile,
    requirement_pins,
    url_paths,
)

CODE_DIRS = ("data/", "training/", "service/")


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def copy_sources(instruction: Instruction) -> list[str]:
    parts = [p for p in shlex.split(instruction.args) if not p.startswith("--")]
    return parts[:-1]


def test_parse_dockerfile_joins_continuations_and_counts_stages() -> None:
    text = "ARG A=1\nFROM x AS b\n# note\nRUN a \\\n    && b\nFROM y\nUSER 1\n"
    parsed = parse_dockerfile(text)
    assert [(i.stage, i.keyword) for i in parsed] == [
        (-1, "ARG"),
        (0, "FROM"),
        (0, "RUN"),
        (1, "FROM"),
        (1, "USER"),
    ]
    assert parsed[2].args == "a && b"


def test_dockerfile_builds_in_stages_on_a_slim_base(dockerfile: list[Instruction]) -> None:
    images = base_images(dockerfile)
    assert len(images) >= 2, "expected a builder stage and a runtime stage"
    assert all(re.match(r"python:3\.11[\w.]*-slim", image) for image in images), images
    # The runtime stage takes the virtualenv from an earlier stage instead of building anything.
    runtime = final_stage(dockerfile)
    assert any(
        i.keyword == "COPY" and i.args.startswith("--from=") and "/opt/venv" in i.args
        for i in runtime
    )


def test_dockerfile_installs_dependencies_before_copying_code(
    dockerfile: list[Instruction],
) -> None:
    builder = [i for i in dockerfile if i.stage == 0]
    keywords = [(i.keyword, i.args) for i in builder]
    lock_install = next(
        n for n, (k, a) in enumerate(keywords) if k == "RUN" and "-r requirements.lock" in a
    )
    code_copies = [
        n
        for n, i in enumerate(builder)
        if i.keyword == "COPY" and any(src in CODE_DIRS for src in copy_sources(i))
    ]
    assert code_copies, "the builder never copies the packages"
    assert lock_install < min(code_copies)
    # Before the dependency layer, only the lock file may enter: anything else would make a code
    # edit rebuild TensorFlow's layer.
    copied_before = [
        src for i in builder[:lock_install] if i.keyword == "COPY" for src in copy_sources(i)
    ]
    assert copied_before == ["requirements.lock"]
    # The project itself goes in without re-resolving its (already pinned) dependencies.
    project_install = [a for k, a in keywords[max(code_copies) :] if k == "RUN" and "pip" in a]
    assert project_install and "--no-deps" in project_install[0]


def test_dockerfile_keeps_dev_dependencies_out(
    dockerfile: list[Instruction], pyproject: dict
) -> None:
    text = " ".join(i.args for i in dockerfile)
    assert "requirements-dev.lock" not in text
    assert "[dev]" not in text
    runtime_runs = [i.args for i in final_stage(dockerfile) if i.keyword == "RUN"]
    assert not any("pip" in run for run in runtime_runs), "the runtime stage installs packages"
    dev_tools = {
        normalise(re.split(r"[<>=!~ ;\[]", d)[0])
        for d in pyproject["project"]["optional-dependencies"]["dev"]
    }
    locked = set(requirement_pins(ROOT / "requirements.lock"))
    assert not dev_tools & locked, f"dev tools in requirements.lock: {sorted(dev_tools & locked)}"


def test_dockerfile_runs_as_a_created_non_root_user(dockerfile: list[Instruction]) -> None:
    runtime = final_stage(dockerfile)
    users = [i for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    # Nothing after USER may need root, and the uid must exist in the image.
    after = runtime[runtime.index(users[-1]) :]
    assert not any(i.keyword == "RUN" for i in after)
    created = " ".join(i.args for i in runtime if i.keyword == "RUN" and "useradd" in i.args)
    assert re.search(rf"--uid {user}\b", created) or re.search(rf"\b{user}$", created)


def test_dockerfile_bakes_models_where_the_service_looks(dockerfile: list[Instruction]) -> None:
    runtime = final_stage(dockerfile)
    model_copies = [
        shlex.split(i.args)[-1]
        for i in runtime
        if i.keyword == "COPY" and copy_sources(i) == ["models/"]
    ]
    assert model_copies, "the models are not copied into the runtime image"
    model_dir = env_of(runtime).get("MLDM_MODEL_DIR", "")
    assert model_dir.rstrip("/") == model_copies[0].rstrip("/")
    assert (ROOT / "models").is_dir()


def test_dockerfile_healthcheck_probes_readiness_without_curl(
    dockerfile: list[Instruction], service_routes: set[str]
) -> None:
    checks = [i for i in final_stage(dockerfile) if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = checks[0].exec_form()
    assert command[0] == "python", "the slim image has no curl or wget"
    paths = url_paths(" ".join(command))
    assert paths == ["/v2/health/ready"]
    assert paths[0] in service_routes


def test_dockerfile_worker_count_comes_from_the_environment(
    dockerfile: list[Instruction],
) -> None:
    from service.settings import Settings

    runtime = final_stage(dockerfile)
    assert int(env_of(runtime)["MLDM_WORKERS"]) >= 1
    # The entry point reads MLDM_WORKERS through Settings and hands it to uvicorn.
    cmd = next(i for i in runtime if i.keyword == "CMD").exec_form()
    assert cmd == ["python", "-m", "service"]
    assert "workers" in Settings.model_fields
    main = ROOT / "service" / "__main__.py"
    assert main.is_file(), "`python -m service` needs service/__main__.py"
    assert re.search(r"workers\s*=", main.read_text()), "service/__main__.py ignores workers"


def test_dockerfile_exposes_the_port_the_service_binds(dockerfile: list[Instruction]) -> None:
    runtime = final_stage(dockerfile)
    env = env_of(runtime)
    exposed = [i.args for i in runtime if i.keyword == "EXPOSE"]
    assert exposed == [f"{env['PORT']} {env['MLDM_GRPC_PORT']}"] == ["8000 8081"]
    assert env["HOST"] == "0.0.0.0", "bound to loopback, the port would be unreachable"


def test_dockerfile_environment_is_accepted_by_the_service_settings(
    dockerfile: list[Instruction], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    env = env_of(final_stage(dockerfile))
    for key, value in env.items():
        if key.startswith("MLDM_") or key in {"HOST", "PORT"}:
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.model_dir == Path(env["MLDM_MODEL_DIR"])
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.workers == int(env["MLDM_WORKERS"])


def test_dockerignore_admits_only_what_the_dockerfile_copies(
    dockerfile: list[Instruction],
) -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list keeps .env, .git and .venv out of the build context"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src.rstrip("/")
        for i in dockerfile
        if i.keyword == "COPY" and not i.args.startswith("--from=")
        for src in copy_sources(i)
    }
    assert copied == allowed
    assert all((ROOT / path).exists() for path in copied), sorted(
        p for p in copied if not (ROOT / p).exists()
    )


def _answering(status: int) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/v2/health/ready" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.mark.parametrize("setting", ["MLDM_PORT", "PORT"])
def test_dockerfile_healthcheck_asks_the_port_the_service_binds(
    dockerfile: list[Instruction], setting: str
) -> None:
    """The HEALTHCHECK command itself, run here against a stand-in readiness route on the port
    each setting names; MLDM_PORT wins over PORT as in service/settings.py."""
    command = next(i for i in final_stage(dockerfile) if i.keyword == "HEALTHCHECK").exec_form()
    ready, port = _answering(200)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        elsewhere = str(unused.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k not in ("MLDM_PORT", "PORT")}
    env[setting] = str(port)
    if setting == "MLDM_PORT":
        env["PORT"] = elsewhere  # the service would ignore PORT here: so must the check
    try:
        result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True)
    finally:
        ready.shutdown()
    assert result.returncode == 0, result.stderr.decode()


def test_dockerfile_healthcheck_fails_while_not_ready(dockerfile: list[Instruction]) -> None:
    command = next(i for i in final_stage(dockerfile) if i.keyword == "HEALTHCHECK").exec_form()
    loading, port = _answering(503)
    env = {**os.environ, "MLDM_PORT": str(port)}
    try:
        result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True)
    finally:
        loading.shutdown()
    assert result.returncode != 0


def _imported_top_levels(*dirs: str) -> set[str]:
    """Every top-level module the image's own code imports (anywhere: lazily too)."""
    names: set[str] = set()
    for directory in dirs:
        for path in (ROOT / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names


def test_dockerfile_diet_uninstalls_nothing_the_service_imports(
    dockerfile: list[Instruction],
) -> None:
    uninstalled = {
        normalise(name)
        for i in dockerfile
        if i.keyword == "RUN"
        for part in i.args.split("&&")
        if "pip uninstall" in part
        for name in shlex.split(part)[3:]
        if not name.startswith("-")
    }
    assert {"networkx", "pygments"} <= uninstalled, uninstalled
    assert "grpcio" not in uninstalled  # the gRPC port (service/grpc) needs it
    by_module = md.packages_distributions()
    imported = {
        normalise(dist)
        for module in _imported_top_levels("service", "data")
        for dist in by_module.get(module, [])
    }
    assert "scikit-image" in imported and "tensorflow-cpu" in imported  # the mapping works
    assert not imported & uninstalled, (
        f"the diet uninstalls what the service imports: {imported & uninstalled}"
    )
