"""The service's layers import only downward: no import circle, nothing below the HTTP layer
imports it, and the batcher imports nothing of the service (its counters reach the metrics
through a callback)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
#: Each module's layer; a module may import only modules of a lower layer (or its own package's
#: siblings within the HTTP layer, which routes share: ERRORS, parse_version).
LAYERS = [
    {"errors", "context", "codecs", "codecs.dtypes", "http_protocol", "api.responses"}
    | {"backends", "backends.base", "backends.tensorflow", "backends.onnxruntime"}
    | {"backends.verify", "backends.select"},
    {"arrays", "codec", "imaging", "registry", "codecs.npy", "codecs.compression", "batching"},
    {"energy_domain"},
    {"catalogue", "reloader", "reading"},
    {"settings", "schemas", "metrics", "types", "logs"},
    {"runtime", "codecs.v2", "codecs.tfserving"},
    {"dataplane"},
    {"inference"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(SERVICE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imports() -> dict[str, set[str]]:
    """Module -> the service modules it imports at run time (not under TYPE_CHECKING)."""
    modules = {_module(p) for p in SERVICE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in SERVICE.rglob("*.py"):
        name = _module(path)
        if name.startswith("client"):  # the client package is its own, HTTP-only world
            continue
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("service")
            ):
                base = node.module.removeprefix("service").lstrip(".")
                for alias in node.names:
                    full = f"{base}.{alias.name}".lstrip(".")
                    found.add(full if full in modules else base)
        graph[name] = {m for m in found if m and m != name}
    return graph


def test_service_has_no_import_circle() -> None:
    graph = imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, " -> ".join([*path, name])
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_every_layer_imports_only_below_itself() -> None:
    graph = imports()
    rank = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    for module, deps in graph.items():
        if module not in rank:  # the HTTP layer (api.*), app, __main__: top
            continue
        for dep in deps:
            assert dep in rank, f"{module} imports {dep}, a layer above it"
            assert rank[dep] < rank[module], f"{module} imports {dep} of the same or a higher layer"


def test_batcher_imports_nothing_of_the_service() -> None:
    assert imports()["batching"] == set()
