"""Our server against MLServer, KServe, BentoML, LitServe and Triton on the same bodies, with
floors and issue 19's targets; `--peers` with none: ours alone on every protocol."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bodies as wire
from bench import driver, harness, matrix
from bench.harness import REPO, Server, fmt, free_port
from bench.matrix import Key
from service.backends.select import measure
from service.backends.verify import VerificationBatch
from service.codecs import dtypes
from service.registry import BackendPolicy, load_version

RUNTIMES = Path(__file__).resolve().parent / "peer_runtimes"
#: Each peer's own virtualenv. The Python peers call TensorFlow (pinned as in requirements.lock),
#: as their users would; Triton (the server binary in the pytriton wheel, which needs numpy < 2)
#: runs the committed model.onnx with ONNX Runtime inside its Python backend.
PEERS = {
    "mlserver": ["mlserver==1.7.1"],
    "kserve": ["kserve==0.21.0"],
    "bentoml": ["bentoml==1.4.40"],
    "litserve": ["litserve==0.2.19"],
    "triton": ["nvidia-pytriton==0.7.0", "numpy<2"],
}
MODEL_KEYS = tuple(wire.CASES)


def cache_dir() -> Path:
    return Path(os.environ.get("MLDM_BENCH_CACHE", "~/.cache/mldm-bench")).expanduser() / "peers"


def pinned(package: str, lock: Path = REPO / "requirements.lock") -> str:
    """`package==X` as pinned in requirements.lock (pip's cache then has its wheel)."""
    name = re.escape(package).replace("\\-", "[-_]")
    match = re.search(rf"^{name}==(\S+)", lock.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no {package} pin in {lock}")
    return f"{package}=={match.group(1)}"


def venv_requirements(peer: str) -> list[str]:
    runtime = "onnxruntime" if peer == "triton" else "tensorflow-cpu"
    return [*PEERS[peer], pinned(runtime)]


def venv_ready(peer: str, root: Path | None = None) -> bool:
    """True when the cached venv was built, completely, for exactly these requirements."""
    try:
        marker = (root or cache_dir()) / peer / ".mldm-spec"
        return marker.read_text().split() == venv_requirements(peer)
    except OSError:
        return False


def ensure_venv(peer: str, root: Path | None = None) -> Path:
    """The peer's virtualenv, built first if missing or built for other versions."""
    folder = (root or cache_dir()) / peer
    if venv_ready(peer, root):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the {peer} virtualenv in {folder} (minutes; cached afterwards)", flush=True)
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *venv_requirements(peer)], check=True, timeout=3600)
    # Written last: an interrupted build has no marker and is rebuilt next time.
    (folder / ".mldm-spec").write_text("\n".join(venv_requirements(peer)) + "\n")
    return folder


@dataclass(frozen=True)
class Config:
    """One server set-up: which server, a short label, and its knobs."""

    server: str  # "ours" or a key of PEERS
    label: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.server} ({self.label})" if self.label else self.server

    @property
    def kinds(self) -> tuple[str, ...]:
        """The protocol routes driven on this server."""
        binary = ("v2", "v2-binary")
        return {"ours": wire.KINDS, "kserve": binary, "triton": binary}.get(self.server, ("v2",))


OURS = Config("ours", "")
BATCH = {"max_batch_size": 64, "max_batch_time": 0.002}
#: MLServer: parallel_workers (1 = inference in a worker process, 0 = in the server), adaptive
#: batching; KServe: per-request latency logging on/off; BentoML: plain and adaptive batching
#: (a 10 s max latency: a tight one makes its dispatcher refuse requests at concurrency 64).
FULL_PEERS = (
    Config("mlserver", "1 worker", {"parallel_workers": 1}),
    Config("mlserver", "0 workers", {"parallel_workers": 0}),
    Config("mlserver", "1 worker, batch 64/2ms", {"parallel_workers": 1, **BATCH}),
    Config("mlserver", "0 workers, batch 64/2ms", {"parallel_workers": 0, **BATCH}),
    Config("kserve", "latency log on", {"latency_logging": True}),
    Config("kserve", "latency log off", {"latency_logging": False}),
    Config("bentoml", "plain", {"batching": False}),
    Config(
        "bentoml", "batch 64/10s", {"batching": True, "max_batch": 64, "max_latency_ms": 10_000}
    ),
    Config("litserve", "TensorFlow"),
    Config("triton", "Python backend, ORT"),
    Config("triton", "Python backend, ORT, dynamic batch 64", {"max_batch_size": 64}),
)
QUICK_PEERS = tuple(FULL_PEERS[i] for i in (1, 3, 5, 6, 8, 10))
#: --quick drives only the routes of issue 19's targets (every protocol stays in the full run).
QUICK_KINDS = ("v2", "task")


def peer_env(paths: dict[str, str], **env: str) -> dict[str, str]:
    """A peer's environment: its own venv, the runtimes' folder, the models to load."""
    env |= {"PYTHONPATH": str(RUNTIMES), "MLDM_PEER_MODELS": json.dumps(paths)}
    return {**harness.base_env(ours=False), **env}


def mlserver_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port, folder = free_port(), work / f"mlserver-{abs(hash(config.label))}"
    folder.mkdir(parents=True, exist_ok=True)
    workers = config.options.get("parallel_workers", 1)
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "debug": False}
    settings |= {"metrics_port": free_port(), "parallel_workers": workers}
    settings["model_repository_root"] = str(folder)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    for name, path in paths.items():
        model: dict[str, Any] = {"name": name, "parameters": {"uri": path}}
        model |= {"implementation": "mlserver_runtime.SignatureModel"}
        model |= {k: v for k, v in config.options.items() if k in BATCH}
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "model-settings.json").write_text(json.dumps(model, indent=2))
    command = [str(venv / "bin" / "mlserver"), "start", str(folder)]
    return Server(config.name, command, peer_env(paths), port, work / f"{folder.name}.log")


def kserve_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port = free_port()
    logging = str(bool(config.options.get("latency_logging", True))).lower()
    flags = ["--http_port", str(port), "--grpc_port", str(free_port())]
    flags += ["--enable_latency_logging", logging]
    command = [str(venv / "bin" / "python"), str(RUNTIMES / "kserve_server.py"), *flags]
    return Server(config.name, command, peer_env(paths), port, work / f"kserve-{port}.log")


def bentoml_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port, o = free_port(), config.options
    env = peer_env(
        paths,
        MLDM_PEER_BATCHING="on" if o.get("batching") else "off",
        MLDM_PEER_MAX_BATCH=str(o.get("max_batch", 64)),
        MLDM_PEER_MAX_LATENCY_MS=str(o.get("max_latency_ms", 20)),
        BENTOML_HOME=str(work / f"bentoml-home-{port}"),
        BENTOML_DO_NOT_TRACK="True",
    )
    command = [str(venv / "bin" / "bentoml"), "serve", "bentoml_service:Peers"]
    command += ["--working-dir", str(RUNTIMES), "--host", "127.0.0.1", "--port", str(port)]
    return Server(config.name, command, env, port, work / f"bentoml-{port}.log", "/readyz")


def litserve_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port = free_port()
    command = [str(venv / "bin" / "python"), str(RUNTIMES / "litserve_server.py"), str(port)]
    log = work / f"litserve-{port}.log"
    return Server(config.name, command, peer_env(paths), port, log, "/health")


def triton_config(name: str, version_dir: Path, max_batch_size: int) -> str:
    """config.pbtxt of a Python-backend model over `version_dir/model.onnx`, its tensors from
    the model card's signature (one item per row when batching: a scalar item is `[1]`,
    reshaped to `[]`)."""
    signature = json.loads((version_dir / "metrics.json").read_text())["signature"]

    def tensors(side: str) -> str:
        out = []
        for key, spec in signature[side].items():
            dims = [-1 if d is None else d for d in spec["shape"]][1 if max_batch_size else 0 :]
            shape = f"dims: {dims or [1]}" + ("" if dims else " reshape: { shape: [] }")
            data_type = dtypes.BY_NUMPY[spec["dtype"]].triton
            out.append(f'{{ name: "{key}" data_type: {data_type} {shape} }}')
        return ", ".join(out)

    onnx = json.dumps(str(version_dir / "model.onnx"))
    return "\n".join(
        [
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}',
            f"input [ {tensors('inputs')} ]\noutput [ {tensors('outputs')} ]",
            "instance_group [ { kind: KIND_CPU count: 1 } ]",
            *(["dynamic_batching { }"] if max_batch_size else []),
            f'parameters {{ key: "onnx" value: {{ string_value: {onnx} }} }}',
        ]
    )


def triton_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    """Triton's own binary from the pytriton wheel, laid out as pytriton does: the Python
    backend's stub for the venv's Python copied beside it, the wheel's libraries on
    LD_LIBRARY_PATH; a model repository of Python-backend models (peer_runtimes/triton_model.py)."""
    port, repo = free_port(), work / f"triton-models-{abs(hash(config.label))}"
    site = next((venv / "lib").glob("python3.*/site-packages"))
    dist = site / "pytriton" / "tritonserver"
    stub = dist / "python_backend_stubs" / site.parent.name[6:] / "triton_python_backend_stub"
    shutil.copy(stub, dist / "backends" / "python")
    for name, path in paths.items():
        (repo / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy(RUNTIMES / "triton_model.py", repo / name / "1" / "model.py")
        config_text = triton_config(name, Path(path), config.options.get("max_batch_size", 0))
        (repo / name / "config.pbtxt").write_text(config_text)
    command = [str(dist / "bin" / "tritonserver"), "--model-repository", str(repo)]
    command += ["--backend-directory", str(dist / "backends"), "--http-address", "127.0.0.1"]
    command += ["--http-port", str(port), "--allow-grpc", "false", "--allow-metrics", "false"]
    libs, path = (
        str(site / "nvidia_pytriton.libs"),
        f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    )
    env = peer_env(paths, LD_LIBRARY_PATH=libs, PATH=path)
    return Server(config.name, command, env, port, work / f"triton-{port}.log")


def make_server(config: Config, model_root: Path, paths: dict[str, str], work: Path) -> Server:
    if config.server == "ours":
        workers = int(config.options.get("workers", 1))
        # HTTP only, as every peer here is driven: no gRPC port the HTTP routes never use.
        server = harness.our_server(model_root, list(paths), workers, work, MLDM_GRPC_PORT="0")
        server.name = config.name
        return server
    build = {"mlserver": mlserver_server, "kserve": kserve_server, "bentoml": bentoml_server}
    build |= {"litserve": litserve_server, "triton": triton_server}
    return build[config.server](config, ensure_venv(config.server), paths, work)


def compiled_call(path: str, calls: int = 1000) -> tuple[str, float]:
    """The backend our server picks for a version's single items (`MLDM_BACKEND` as this process
    has it: `auto` by default) and its median ms per one-item call in this process (the first item
    of the version's verification batch; `select.measure`, as the registry times backends)."""
    version_dir, policy = Path(path), BackendPolicy(os.environ.get("MLDM_BACKEND", "auto"))
    model = load_version(version_dir.parent.name, int(version_dir.name), version_dir, policy)
    inputs = VerificationBatch.load(version_dir).inputs
    return model.backend_for(1), measure({"": model.predict}, inputs, (1,), calls)[""][1] * 1e3


def floors(report: dict[str, Any], ours: Server | None, paths: dict[str, str], work: Path) -> None:
    """Our bare loopback round trip and the in-process call of the runtime our server serves
    single items with."""
    loopback = math.nan
    if ours is not None:
        body = [driver.Body("GET", "/v2/health/live")]
        res = driver.run(ours.url, body, 1, min(report["duration_s"], 5.0), work)
        loopback = res["p50_ms"]
        report["floors"].append(
            f"bare loopback round trip to our stack (GET /v2/health/live, conc. 1): "
            f"p50 {loopback:.3f} ms, {res['rps']:,.0f} req/s"
        )
    for key in report["models"]:
        model = wire.CASES[key].model
        backend, median_ms = compiled_call(paths[model])
        report["runtimes"][model] = backend
        report["floors"].append(
            f"in-process call of {model} by {backend} (what our server runs for one item), "
            f"batch 1: median {median_ms:.3f} ms of 1,000 calls"
        )
        if not math.isnan(loopback):
            report["single_item_floor_ms"][key] = median_ms + loopback


def configurations(quick: bool, peers: Sequence[str], workers: int = 1) -> list[Config]:
    ours = OURS if workers == 1 else Config("ours", "", {"workers": workers})
    return [ours, *(c for c in (QUICK_PEERS if quick else FULL_PEERS) if c.server in peers)]


def driven(configs: Sequence[Config], quick: bool) -> list[tuple[str, str]]:
    """(server, route) pairs to drive: every route of each server, or --quick's."""
    return [(c.name, k) for c in configs for k in c.kinds if not quick or k in QUICK_KINDS]


def estimate_s(runs: int, configs: int, duration: float, warmup: float) -> float:
    """Per run the point, its warm-up and ~1.5 s overhead; ~40 s to start each server; floors."""
    return runs * (duration + warmup + 1.5) + configs * 40 + 30


def is_peer(server: str, triton: bool = False) -> bool:
    """A Python peer's configuration (or with `triton`, Triton's)."""
    return not server.startswith("ours") and server.startswith("triton") == triton


def best_peer(
    stats: dict[Key, dict[str, float]], model: str, c: int, triton: bool = False
) -> tuple[str, Any] | None:
    """The Python peer (or Triton) configuration with the most req/s on the V2 JSON route here."""
    candidates = [
        (server, s)
        for (server, kind, m, cc), s in stats.items()
        if (kind, m, cc) == ("v2", model, c) and is_peer(server, triton)
        if s["errors"] == 0 and not math.isnan(s["rps"])
    ]
    return max(candidates, key=lambda item: item[1]["rps"], default=None)


def _pair(best: tuple[str, dict[str, float]] | None) -> str:
    """A cell `server: req/s, p99 ms` ("-" without a figure)."""
    if not best:
        return "-"
    return (f"{best[0]}: " if best[0] else "") + f"{fmt(best[1]['rps'])}, {fmt(best[1]['p99_ms'])}"


def targets(report: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    """The table rows (ours, the best Python peer, Triton) and issue 19's verdict lines."""
    stats, rows, lines, routes = report["stats"], [], [], ("v2", "task")
    for key, c in ((k, c) for k in MODEL_KEYS for c in report["concurrencies"]):
        model, factor = wire.CASES[key].model, 3.0 if c == 1 else 2.0
        ours = {r: s for r in routes if (s := stats.get(("ours", r, model, c)))}
        peer, tri = best_peer(stats, model, c), best_peer(stats, model, c, triton=True)
        if not ours or not (peer or tri):
            continue
        rps, p99, vs_triton = (
            {
                r: harness.ratio(ours[r][f], best[1][f]) if best and r in ours else math.nan
                for r in routes
            }
            for best, f in ((peer, "rps"), (peer, "p99_ms"), (tri, "rps"))
        )
        cells = [*(_pair(("", ours[r]) if r in ours else None) for r in routes), _pair(peer)]
        cells += [*(fmt(rps[r], 2) for r in routes), fmt(p99["v2"], 2), _pair(tri)]
        rows.append([f"{key}, {c}", *cells, *(fmt(vs_triton[r], 2) for r in routes)])
        for route in ours:
            where = f"{key}, concurrency {c}, ours {route.replace('v2', 'V2')} req/s"
            if peer:
                what = (
                    f"{where} {rps[route]:.2f}x the best Python peer's ({peer[0]}; target >= "
                    f"{factor:g}x), p99 {p99[route]:.2f}x its p99 (target <= 0.5x)"
                )
                lines.append(harness.verdict(rps[route] >= factor and p99[route] <= 0.5, what))
            if tri:
                what = f"{where} {vs_triton[route]:.2f}x Triton's ({tri[0]}; target >= 1x)"
                lines.append(harness.verdict(vs_triton[route] >= 1.0, what))
    for key, floor in report["single_item_floor_ms"].items():
        if v2 := stats.get(("ours", "v2", wire.CASES[key].model, 1)):
            p50 = v2["p50_ms"]
            what = (
                f"{key} single-item p50 (V2, conc. 1) {p50:.2f} ms = {p50 / floor:.2f}x the "
                f"in-process call + bare loopback round trip ({floor:.2f} ms; target <= 1.5x)"
            )
            lines.append(harness.verdict(p50 <= 1.5 * floor, what))
    memory = report["memory"]
    for label, triton in (("Python peer", False), ("Triton", True)):
        if "ours" in memory and (peers := {k: v for k, v in memory.items() if is_peer(k, triton)}):
            name, lean = min(peers.items(), key=lambda kv: kv[1]["rss"])
            ours_rss = memory["ours"]["rss"]
            what = (
                f"resident memory ours {ours_rss:.0f} MiB = {ours_rss / lean['rss']:.2f}x the "
                f"leanest {label} ({name}, {lean['rss']:.0f} MiB; target <= 1.1x)"
            )
            lines.append(harness.verdict(ours_rss <= 1.1 * lean["rss"], what))
    return rows, lines


def render(report: dict[str, Any]) -> str:
    rows, lines = targets(report)
    memory = report["memory"].items()
    served = ", ".join(f"{m} by {b}" for m, b in report.get("runtimes", {}).items())
    out = [
        f"Load client: {report['client']}, {report['duration_s']:g} s per point after "
        f"{report['warmup_s']:g} s of warm-up, {report['rounds']} interleaved round(s), "
        f"{matrix.VARIANTS} different bodies per point, the same bytes for every server; "
        "medians over rounds, noise = (max - min) / median of req/s over rounds.",
        "",
        f"Runtimes: ours: {served or 'not measured'}; MLServer, KServe, BentoML and LitServe call "
        "TensorFlow (the SavedModel's `serving_default` signature), as their users would; Triton "
        "runs the same `model.onnx` with ONNX Runtime (1 thread) in its Python backend.",
        *harness.section(
            "Ours / best Python peer / Triton (V2 JSON route of the peers; req/s, p99 ms)",
            *harness.table(
                "model, conc. | ours V2: | ours task route: | best Python peer | ours V2 / peer: | "
                "ours task / peer: | p99 ours V2 / peer: | best Triton | ours V2 / Triton: | "
                "ours task / Triton:",
                rows,
            ),
            *([] if rows else ["", "No peer answered in this run: no ratios."]),
        ),
        *harness.section("Targets (issue 19)", *(f"- {line}" for line in lines)),
        *harness.section(
            "Every server, every route", *matrix.table(report["stats"], report["servers"])
        ),
        *harness.section("Floors measured in the same run", *(f"- {f}" for f in report["floors"])),
        *harness.section(
            "Resident memory after the run (process tree, MiB)",
            *harness.table(
                "server | VmRSS: | Pss: | processes:",
                ([n, f"{m['rss']:.0f}", f"{m['pss']:.0f}", m["processes"]] for n, m in memory),
            ),
        ),
    ]
    return harness.document(report, "Peers benchmark", out)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(
        "peers", __doc__, duration=(5, 10), warmup=(1, 2), rounds=(1, 3), concurrency=(1, 8, 64)
    )
    p.add_argument("--models", nargs="+", choices=MODEL_KEYS, default=list(MODEL_KEYS))
    p.add_argument("--peers", nargs="*", choices=sorted(PEERS), default=sorted(PEERS))
    p.add_argument("--setup-only", action="store_true", help="build the peer virtualenvs and stop")
    p.add_argument("--plan", action="store_true", help="print what would run and stop")
    p.add_argument("--workers", type=int, default=1, help="our server's workers (default 1)")
    args = harness.parse(p, argv)
    configs = configurations(args.quick, args.peers, args.workers)
    routes = driven(configs, args.quick)
    groups = [(key, c) for key in args.models for c in args.concurrency]
    plan = matrix.schedule(routes, groups, args.rounds)
    minutes = estimate_s(len(plan), len(configs), args.duration, args.warmup) / 60
    missing = [peer for peer in args.peers if not venv_ready(peer)]
    print(
        f"{len(plan)} runs on {len(configs)} servers, {args.rounds} round(s): about {minutes:.0f} "
        "min" + (f" plus building the venvs of {missing} (~5-10 min each)" if missing else ""),
        flush=True,
    )
    if args.plan:
        print(*(f"  round {r} {key} c={c} {n} {kind}" for r, (key, c), (n, kind) in plan), sep="\n")
        return 0
    for peer in args.peers:
        print(f"{peer}: {ensure_venv(peer)}", flush=True)
    if args.setup_only or harness.refuse_while_training(args):
        return 0 if args.setup_only else 3
    started = time.monotonic()
    client = "wrk" if shutil.which("wrk") else "Python (wrk is not installed)"
    report = harness.new_report(
        "peers", args.argv, client=client, servers=[c.name for c in configs]
    )
    report |= {"quick": args.quick, "duration_s": args.duration, "warmup_s": args.warmup}
    report |= {"rounds": args.rounds, "concurrencies": args.concurrency, "models": args.models}
    report |= {"floors": [], "single_item_floor_ms": {}, "runtimes": {}, "memory": {}}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        paths = matrix.model_folder(work / "models", args.model_dir.resolve(), 1)
        servers: dict[str, Server] = {}
        for config in configs:
            try:
                server = make_server(config, work / "models", paths, work)
                servers[config.name] = stack.enter_context(harness.running(server))
            except RuntimeError as exc:
                report["notes"].append(f"{config.name} did not start: {str(exc)[:300]}")
                print(report["notes"][-1], flush=True)
        floors(report, servers.get("ours"), paths, work)
        routes = [route for route in routes if route[0] in servers]
        points = matrix.run(servers, routes, groups, args, report, work)
        for name, server in servers.items():
            rss, pss = server.memory_mib()
            report["memory"][name] = {"rss": rss, "pss": pss, "processes": len(server.pids())}
    report["stats"] = matrix.aggregate(points)
    report["wall_s"] = time.monotonic() - started
    tag = ("-quick" if args.quick else "") + (f"-workers{args.workers}" if args.workers > 1 else "")
    harness.publish(report, render(report), args, tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
