"""The service's layers import only downward: no import circle, nothing below the HTTP layer
imports it, and the batcher imports nothing of the service (its counters reach the metrics
through a callback). Imports inside functions count too (only `if TYPE_CHECKING:` ones do
not), and docs/ARCHITECTURE.md's layer table is this one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
ARCHITECTURE = SERVICE.parent / "docs" / "ARCHITECTURE.md"
#: protoc's output (`make grpc-protos`), a package of its own beside `service/`.
GRPC_GEN = SERVICE.parent / "grpc_gen"
#: Each module's layer; a module may import only modules of a lower layer. Everything not
#: listed is the top (HTTP) layer: `api.*`, the task modules `tasks.*`, `app`, `__main__`,
#: which may import each other and everything below.
LAYERS = [
    {"errors", "context", "codecs", "codecs.dtypes", "http_protocol", "api.responses"}
    | {"listening"}
    | {"backends", "backends.base", "backends.tensorflow", "backends.onnxruntime"}
    | {"backends.verify", "backends.select", "backends.openvino"},
    {
        "arrays",
        "contracts",
        "imaging",
        "registry",
        "codecs.b64",
        "codecs.npy",
        "codecs.compression",
        "batching",
    },
    {"energy_domain"},
    {"reloader", "reading"},
    {"settings", "schemas", "metrics", "types", "logs"},
    {"runtime", "codecs.v2", "codecs.v2_documents", "codecs.tfserving"},
    {"dataplane"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(SERVICE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under `if TYPE_CHECKING:` (not imported at run time)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def _imported(node: ast.AST, name: str, modules: set[str]) -> set[str]:
    """The service modules one import statement of module `name` brings in."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "service" or alias.name.startswith("service."):
                found.add(alias.name.removeprefix("service").lstrip("."))
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the module's own package
            package = name.split(".")[: -node.level] if name else []
            base = ".".join([*package, *([node.module] if node.module else [])])
        elif node.module and (node.module == "service" or node.module.startswith("service.")):
            base = node.module.removeprefix("service").lstrip(".")
        else:
            return found
        for alias in node.names:
            full = f"{base}.{alias.name}".lstrip(".")
            found.add(full if full in modules else base)
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the service modules it imports at run time, at module level or inside a
    function (not under TYPE_CHECKING)."""
    modules = {_module(p) for p in SERVICE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in SERVICE.rglob("*.py"):
        name = _module(path)
        if name.startswith("client"):  # the client package is its own, HTTP-only world
            continue
        tree = ast.parse(path.read_text())
        skipped = _type_checking_only(tree)
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) not in skipped:
                found |= _imported(node, name, modules)
        graph[name] = {m for m in found if m and m != name}
    return graph


def test_imports_inside_functions_are_read() -> None:
    function = ast.parse("def f():\n    from service.app import create_app\n").body[0]
    assert isinstance(function, ast.FunctionDef)
    assert _imported(function.body[0], "x", {"app"}) == {"app"}
    assert "app" in imports()["api.examples"]  # its `create_app` import lives in a function


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
        if module not in rank:  # the HTTP layer (api.*, tasks.*), app, __main__: top
            continue
        for dep in deps:
            assert dep in rank, f"{module} imports {dep}, a layer above it"
            assert rank[dep] < rank[module], f"{module} imports {dep} of the same or a higher layer"


def _top_level_imports(path: Path) -> set[str]:
    """The top-level packages one file imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_generated_grpc_code_lives_outside_the_service() -> None:
    """Vendored protos and protoc's modules are not ours: no `.proto` and no `_pb2` module in
    `service/`; only the gRPC layer (`service/grpc/`) imports `grpc_gen`, and `grpc_gen`
    imports nothing of the service, and neither imports TensorFlow (its protos are generated
    into `grpc_gen/tensorflow/`: tests/service/test_grpc_protos.py runs the server to check)."""
    assert not [p for p in SERVICE.rglob("*") if p.suffix == ".proto" or "_pb2" in p.name]
    users = {
        _module(path) for path in SERVICE.rglob("*.py") if "grpc_gen" in _top_level_imports(path)
    }
    assert users and all(user.startswith("grpc.") for user in users), users
    generated = list(GRPC_GEN.rglob("*.py"))
    assert generated
    for path in generated:
        assert not _top_level_imports(path) & {"service", "data", "training", "tensorflow"}, path
    for path in (SERVICE / "grpc").rglob("*.py"):
        assert "tensorflow" not in _top_level_imports(path), path


def test_batcher_imports_nothing_of_the_service() -> None:
    assert imports()["batching"] == set()


class _NoDocstrings(ast.NodeTransformer):
    """Drops docstrings (and other bare strings), which may name a model as an example."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        return None if isinstance(node.value, ast.Constant) else node


def test_no_model_is_named_below_the_task_layer() -> None:
    """Runtime, batcher, registry, data plane, settings and metrics know no model by name."""
    names = ("digit_classifier", "digit_encoder", "digit_decoder", "energy_from")
    for module in ("runtime", "batching", "registry", "dataplane", "contracts", "metrics", "types"):
        code = ast.unparse(_NoDocstrings().visit(ast.parse((SERVICE / f"{module}.py").read_text())))
        assert not any(name in code for name in names), module


def test_architecture_table_is_this_layer_map() -> None:
    """docs/ARCHITECTURE.md's table of layers says what LAYERS says, row by row."""
    documented: dict[str, int] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if row is None:
            continue
        for path in re.findall(r"`([\w/]+)\.py`", row.group(2)):
            documented[path.replace("/", ".").removesuffix(".__init__")] = int(row.group(1))
    ranked = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    for module, layer in ranked.items():
        if module in ("codecs", "http_protocol", "listening"):  # a package's doc; `__main__`'s
            continue
        assert documented.get(module) == layer, f"{module}: docs say {documented.get(module)}"
    for module, layer in documented.items():
        assert ranked.get(module, len(LAYERS)) == min(layer, len(LAYERS)), module
