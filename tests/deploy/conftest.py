"""Readers for the deployment files (Dockerfile, docker-compose.yml, lock files, configs).

No Docker engine runs where the tests run, so these tests read the files the engine would read
and check them against the repository: paths that must exist, routes the service declares,
settings the service accepts, models the contract names.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined; stage -1 is before the first FROM."""

    stage: int
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of a CMD/ENTRYPOINT/HEALTHCHECK (after its options and `CMD`)."""
        text = self.args.split(" CMD ", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text.strip())
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form: {text}"
        return [str(item) for item in value]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, the way the builder does (comments, `\\` joins)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """ENV values (KEY=VALUE form) set by the given instructions, later ones winning."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", instruction.args):
                env[key] = value.strip("\"'")
    return env


def base_images(instructions: list[Instruction]) -> list[str]:
    """The image of every FROM, with global ARG defaults substituted."""
    defaults = dict(
        re.findall(r"^(\w+)=(\S+)$", i.args)[0]
        for i in instructions
        if i.keyword == "ARG" and i.stage == -1 and "=" in i.args
    )
    images = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            image = instruction.args.split()[0]
            images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], image))
    return images


def url_paths(command: str) -> list[str]:
    """The URL paths (e.g. /v2/health/ready) named in a health-check command."""
    without_hosts = re.sub(r"https?://[\w.-]+(:\d+)?", "", command)
    return re.findall(r"(?<![\w.])(/[\w-]+(?:/[\w-]+)+)", without_hosts)


def requirement_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a lock file, keyed by normalised name."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([\w.+!-]+)", line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    """PEP 503 name normalisation: `Foo_Bar.baz` and `foo-bar-baz` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def contract_model_names() -> list[str]:
    """The model names of the table in docs/ARCHITECTURE.md (the training/service contract)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    contract = text.split("## The model contract", 1)[1]
    return re.findall(r"^\| `([a-z_]+)` \|", contract, flags=re.MULTILINE)


def tfserving_model_configs(text: str) -> dict[str, str]:
    """name -> base_path of each `config { ... }` of a TF Serving models.config."""
    return dict(re.findall(r'name:\s*"([^"]+)"\s*base_path:\s*"([^"]+)"', text))


@pytest.fixture(scope="session")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared_route_paths(package: Path = ROOT / "service") -> set[str]:
    """Every path a route of the service could have, from the string literals of its source.

    Routes may be declared whole (`@app.get("/v2/health/ready")`) or as a router prefix plus a
    path (`APIRouter(prefix="/v2")` + `"/health/live"`), so literals starting with "/" are
    combined up to three deep. Read from the text rather than imported: no TensorFlow import,
    and no dependency on how the app factory is called.
    """
    literals: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"/[\w{}:./-]*", node.value)
            ):
                literals.add(node.value.rstrip("/") or "/")
    paths = set(literals)
    for _ in range(2):
        paths |= {a + b for a in paths for b in literals if a != "/" and b != "/"}
    return paths


@pytest.fixture(scope="session")
def service_routes() -> set[str]:
    routes = declared_route_paths()
    assert routes, "service/ declares no routes yet"
    return routes
