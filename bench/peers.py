"""Our server against the servers users would pick instead, side by side in one run.

``python -m bench peers`` (``--quick`` for the short preset, ``--plan`` to see it first):

1. builds once a virtualenv per peer (MLServer, KServe, BentoML, each with the tensorflow-cpu of
   requirements.lock), cached under ``~/.cache/mldm-bench/peers`` (``MLDM_BENCH_CACHE``);
2. serves version 1 of the classifier and the energy model from our service and from every peer
   configuration (`bench/peer_runtimes/`: a minimal idiomatic runtime per peer calling the same
   `serving_default` signature; each peer's documented tuning as separate configurations);
3. measures the floors: the load client's ceiling (canned server), the bare loopback round trip
   to our stack, the in-process batch-1 signature call;
4. drives every server with the same bodies through V2 JSON (ours also task JSON, V2 binary and
   `.npy`; KServe also V2 binary) at each concurrency for both models, in interleaved rounds
   (the order of the servers rotates at every point); each server's first answer is checked
   against ours V2's numbers;
5. writes ``bench/results/peers-<date>-<commit>.md`` (+ ``.json``) with ours / best peer and the
   targets (>= 1.5x req/s and <= 0.5x p99 of the best peer; p50 <= 1.5x the floor; memory).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import driver, harness
from bench import profile as profiling
from bench.harness import REPO, Server, fmt, free_port

RUNTIMES = Path(__file__).resolve().parent / "peer_runtimes"
PEER_PACKAGES = {
    "mlserver": "mlserver==1.7.1",
    "kserve": "kserve==0.21.0",
    "bentoml": "bentoml==1.4.40",
}
MODEL_KEYS = tuple(wire.CASES)
VARIANTS = 8  # different bodies per point, cycled (the same bytes for every server)


def cache_dir() -> Path:
    import os

    return Path(os.environ.get("MLDM_BENCH_CACHE", "~/.cache/mldm-bench")).expanduser() / "peers"


def tensorflow_requirement(lock: Path = REPO / "requirements.lock") -> str:
    """`tensorflow-cpu==X` as pinned in requirements.lock (pip's cache then has its wheel)."""
    match = re.search(r"^tensorflow[-_]cpu==(\S+)", lock.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no tensorflow-cpu pin in {lock}")
    return f"tensorflow-cpu=={match.group(1)}"


def venv_requirements(peer: str) -> list[str]:
    return [PEER_PACKAGES[peer], tensorflow_requirement()]


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
    subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(folder)], check=True
    )
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *venv_requirements(peer)], check=True, timeout=3600)
    # Written last: an interrupted build has no marker and is rebuilt next time.
    (folder / ".mldm-spec").write_text("\n".join(venv_requirements(peer)) + "\n")
    return folder


@dataclass(frozen=True)
class Config:
    """One server set-up: which server, a short label, and its knobs."""

    server: str  # "ours" | "mlserver" | "kserve" | "bentoml"
    label: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.server} ({self.label})" if self.label else self.server

    @property
    def kinds(self) -> tuple[str, ...]:
        """The protocol routes driven on this server."""
        return {"ours": ("v2", "task", "v2-binary", "npy"), "kserve": ("v2", "v2-binary")}.get(
            self.server, ("v2",)
        )


OURS = Config("ours", "")
BATCH = {"max_batch_size": 64, "max_batch_time": 0.002}
#: MLServer: parallel_workers (1 = inference in a worker process, 0 = in the server), adaptive
#: batching; KServe: per-request latency logging on/off; BentoML: plain and adaptive batching
#: (a 10 s max latency: a tight one makes its dispatcher refuse requests at concurrency 64).
FULL_PEERS = (
    Config("mlserver", "1 worker", {"parallel_workers": 1, "debug": False}),
    Config("mlserver", "0 workers", {"parallel_workers": 0, "debug": False}),
    Config("mlserver", "1 worker, batch 64/2ms", {"parallel_workers": 1, "debug": False, **BATCH}),
    Config("mlserver", "0 workers, batch 64/2ms", {"parallel_workers": 0, "debug": False, **BATCH}),
    Config("kserve", "latency log on", {"latency_logging": True}),
    Config("kserve", "latency log off", {"latency_logging": False}),
    Config("bentoml", "plain", {"batching": False}),
    Config(
        "bentoml", "batch 64/10s", {"batching": True, "max_batch": 64, "max_latency_ms": 10_000}
    ),
)
QUICK_PEERS = (FULL_PEERS[1], FULL_PEERS[3], FULL_PEERS[5], FULL_PEERS[6], FULL_PEERS[7])


def model_folder(root: Path, source: Path, version: int) -> dict[str, str]:
    """A model repository holding only version `version` of the two models (symlinks)."""
    paths = {}
    for case in wire.CASES.values():
        target = source / case.model / str(version)
        if not (target / "saved_model.pb").exists():
            raise FileNotFoundError(f"no SavedModel at {target}")
        link = root / case.model / str(version)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
        paths[case.model] = str(target.resolve())
    return paths


def mlserver_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port, folder = free_port(), work / f"mlserver-{abs(hash(config.label))}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "debug": config.options.get("debug", True),
        "parallel_workers": config.options.get("parallel_workers", 1),
        "model_repository_root": str(folder),
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    for name, path in paths.items():
        model = {
            "name": name,
            "implementation": "mlserver_runtime.SignatureModel",
            "parameters": {"uri": path},
        }
        model.update({k: config.options[k] for k in BATCH if k in config.options})
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "model-settings.json").write_text(json.dumps(model, indent=2))
    env = {**harness.base_env(ours=False), "PYTHONPATH": str(RUNTIMES)}
    command = [str(venv / "bin" / "mlserver"), "start", str(folder)]
    return Server(config.name, command, env, port, work / f"{folder.name}.log")


def kserve_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port = free_port()
    logging = str(bool(config.options.get("latency_logging", True))).lower()
    command = [
        str(venv / "bin" / "python"),
        str(RUNTIMES / "kserve_server.py"),
        "--http_port",
        str(port),
        "--grpc_port",
        str(free_port()),
        "--enable_latency_logging",
        logging,
    ]
    env = {**harness.base_env(ours=False), "MLDM_PEER_MODELS": json.dumps(paths)}
    return Server(config.name, command, env, port, work / f"kserve-{port}.log")


def bentoml_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port, o = free_port(), config.options
    env = {
        **harness.base_env(ours=False),
        "MLDM_PEER_MODELS": json.dumps(paths),
        "MLDM_PEER_BATCHING": "on" if o.get("batching") else "off",
        "MLDM_PEER_MAX_BATCH": str(o.get("max_batch", 64)),
        "MLDM_PEER_MAX_LATENCY_MS": str(o.get("max_latency_ms", 20)),
        "BENTOML_HOME": str(work / f"bentoml-home-{port}"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    command = [
        str(venv / "bin" / "bentoml"),
        "serve",
        "bentoml_service:Peers",
        "--working-dir",
        str(RUNTIMES),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Server(config.name, command, env, port, work / f"bentoml-{port}.log", "/readyz")


def make_server(config: Config, model_root: Path, paths: dict[str, str], work: Path) -> Server:
    if config.server == "ours":
        server = harness.our_server(model_root, list(paths), 1, work)
        server.name = config.name
        return server
    build = {"mlserver": mlserver_server, "kserve": kserve_server, "bentoml": bentoml_server}
    return build[config.server](config, ensure_venv(config.server), paths, work)


def probe(
    server: Server,
    kind: str,
    case: wire.ModelCase,
    body: driver.Body,
    reference: dict[str, np.ndarray],
) -> str | None:
    """None if the server answers this body right (the same numbers as ours V2), else why not."""
    try:
        status, headers, payload = harness.request_once(server.url, body)
    except OSError as exc:
        return f"no answer ({exc})"
    if status != 200:
        return f"answered {status} (skipped): {payload[:200]!r}"
    try:
        got = wire.values(kind, case, payload, headers)
    except ValueError as exc:
        return str(exc)
    if got.size != case.values_per_item:
        return f"expected {case.values_per_item} values, got {got.size}"
    ref = reference.setdefault(case.key, got)
    if not np.allclose(got, ref, rtol=1e-4, atol=1e-5):
        return f"different numbers from ours V2: {got[:4]} vs {ref[:4]} (skipped)"
    return None


def signature_latency_ms(path: str, case: wire.ModelCase, calls: int) -> float:
    """Median ms of a batch-1 `serving_default` call in this process (the in-process floor)."""
    import tensorflow as tf

    function = tf.saved_model.load(path).signatures["serving_default"]
    tensor = tf.constant(case.inputs(1, 0))
    times = []
    for i in range(calls + 20):
        start = time.perf_counter()
        next(iter(function(**{case.input_name: tensor}).values())).numpy()
        if i >= 20:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def floors(
    report: dict[str, Any], ours: Server | None, paths: dict[str, str], work: Path, seconds: float
) -> None:
    """The client's ceiling (canned server), our bare loopback round trip, the in-process call."""
    with (
        contextlib.suppress(RuntimeError),
        harness.running(harness.canned_server(work), 30) as canned,
    ):
        for c in (1, 64):
            res = driver.run(canned.url, [driver.Body("POST", "/", b"{}")], c, seconds, work)
            report["floors"].append(
                f"client ceiling (canned-response server, conc. {c}): {res['rps']:,.0f} req/s, "
                f"p50 {res['p50_ms']:.3f} ms, client CPU {res['client_cpu_us_per_req']:.1f} us/req"
            )
    loopback = math.nan
    if ours is not None:
        res = driver.run(ours.url, [driver.Body("GET", "/v2/health/live")], 1, seconds, work)
        loopback = res["p50_ms"]
        report["floors"].append(
            f"bare loopback round trip to our stack (GET /v2/health/live, conc. 1): "
            f"p50 {loopback:.3f} ms, {res['rps']:,.0f} req/s"
        )
    for key in report["models"]:
        case = wire.CASES[key]
        ms = signature_latency_ms(paths[case.model], case, 2000)
        report["floors"].append(
            f"in-process `serving_default` call, batch 1, {case.model}: median {ms:.3f} ms of 2,000"
        )
        if not math.isnan(loopback):
            report["single_item_floor_ms"][key] = ms + loopback


# Schedule and results -----------------------------------------------------------------------


def configurations(quick: bool, peers: Sequence[str]) -> list[Config]:
    return [OURS, *(c for c in (QUICK_PEERS if quick else FULL_PEERS) if c.server in peers)]


def schedule(
    configs: Sequence[Config], models: Sequence[str], concurrencies: Sequence[int], rounds: int
) -> list[tuple[int, str, int, Config, str]]:
    """(round, model key, concurrency, config, kind), servers rotated at every point."""
    entries = [(config, kind) for config in configs for kind in config.kinds]
    plan, point = [], 0
    for r in range(rounds):
        for key in models:
            for c in concurrencies:
                shift = point % len(entries)
                plan += [
                    (r, key, c, config, kind) for config, kind in entries[shift:] + entries[:shift]
                ]
                point += 1
    return plan


def estimate_s(runs: int, configs: int, duration: float, warmup: float) -> float:
    """Per run the point, its warm-up and ~1.5 s overhead; ~40 s to start each server; floors."""
    return runs * (duration + warmup + 1.5) + configs * 40 + 30


def aggregate(
    points: Sequence[dict[str, Any]],
) -> dict[tuple[str, str, str, int], dict[str, float]]:
    """Medians over rounds per (server, kind, model, concurrency); errors summed."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["server"], p["kind"], p["model"], p["concurrency"]), []).append(p)
    return {
        key: {
            **{
                k: harness.median([p[k] for p in g])
                for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")
            },
            "errors": float(sum(p["errors"] for p in g)),
            "requests": float(sum(p["requests"] for p in g)),
            "rss_mib": max(p["rss_mib"] for p in g),
            "rounds": float(len(g)),
        }
        for key, g in groups.items()
    }


def best_peer(
    stats: dict[tuple[str, str, str, int], dict[str, float]], model: str, c: int
) -> tuple[str, dict[str, float]] | None:
    """The peer configuration with the most req/s on the V2 JSON route at this point."""
    candidates = [
        (server, s)
        for (server, kind, m, cc), s in stats.items()
        if kind == "v2"
        and m == model
        and cc == c
        and not server.startswith("ours")
        and s["errors"] == 0
        and not math.isnan(s["rps"])
    ]
    return max(candidates, key=lambda item: item[1]["rps"]) if candidates else None


def targets(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The ours / best-peer table rows and each target's verdict line."""
    stats, rows, lines = report["stats"], [], []
    for key in MODEL_KEYS:
        model = wire.CASES[key].model
        for c in report["concurrencies"]:
            v2, task = stats.get(("ours", "v2", model, c)), stats.get(("ours", "task", model, c))
            best = best_peer(stats, model, c)
            if v2 is None or best is None:
                continue
            peer, b = best
            t = f"{fmt(task['rps'])}, {fmt(task['p99_ms'])}" if task else "-"
            rows.append(
                f"| {key}, {c} | {fmt(v2['rps'])}, {fmt(v2['p99_ms'])} | {t} | {peer}: {fmt(b['rps'])}, "
                f"{fmt(b['p99_ms'])} | {fmt(harness.ratio(v2['rps'], b['rps']), 2)} "
                f"| {fmt(harness.ratio(task['rps'], b['rps']) if task else math.nan, 2)} "
                f"| {fmt(harness.ratio(v2['p99_ms'], b['p99_ms']), 2)} |"
            )
            for route, ours in (("V2", v2), ("task", task)):
                if ours is None:
                    continue
                r, p = (
                    harness.ratio(ours["rps"], b["rps"]),
                    harness.ratio(ours["p99_ms"], b["p99_ms"]),
                )
                lines.append(
                    f"{'met' if r >= 1.5 and p <= 0.5 else 'NOT met'}: {key}, concurrency {c}, ours "
                    f"{route} req/s {r:.2f}x the best peer ({peer}; target >= 1.5x), p99 {p:.2f}x (target <= 0.5x)"
                )
    for key, floor in report["single_item_floor_ms"].items():
        if (ours := stats.get(("ours", "v2", wire.CASES[key].model, 1))) is not None:
            p50 = ours["p50_ms"]
            lines.append(
                f"{'met' if p50 <= 1.5 * floor else 'NOT met'}: {key} single-item p50 (V2, conc. 1) "
                f"{p50:.2f} ms = {p50 / floor:.2f}x (signature call + bare loopback round trip "
                f"= {floor:.2f} ms; target <= 1.5x)"
            )
    memory = report["memory"]
    peers = {k: v for k, v in memory.items() if not k.startswith("ours")}
    if "ours" in memory and peers:
        name, lean = min(peers.items(), key=lambda kv: kv[1]["rss"])
        r = memory["ours"]["rss"] / lean["rss"]
        lines.append(
            f"{'met' if r <= 1.1 else 'NOT met'}: resident memory ours {memory['ours']['rss']:.0f} MiB "
            f"= {r:.2f}x the leanest peer ({name}, {lean['rss']:.0f} MiB; target <= 1.1x)"
        )
    return rows, lines


def render(report: dict[str, Any]) -> str:
    rows, lines = targets(report)
    out = [
        *harness.header(report, "Peers benchmark"),
        f"Load client: {report['client']}, {report['duration_s']:g} s per point after {report['warmup_s']:g} s "
        f"of warm-up, {report['rounds']} interleaved round(s), {VARIANTS} different bodies per point, the same "
        "bytes for every server. Figures are medians over rounds.",
        "",
        "## Ours / best peer (V2 JSON route; req/s, p99 ms)",
        "",
        "| model, conc. | ours V2 | ours task route | best peer (V2) | ours V2 / best | ours task / best "
        "| p99 ours V2 / best |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
        *rows,
        "",
        "## Targets",
        "",
        *(f"- {line}" for line in lines),
        "",
        "## Every server, every route",
        "",
        "| model | conc. | server | route | req/s | p50 ms | p99 ms | errors | requests | server CPU us/req "
        "| RSS MiB |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = {name: i for i, name in enumerate(report["servers"])}
    for (server, kind, model, c), s in sorted(
        report["stats"].items(),
        key=lambda kv: (kv[0][2], kv[0][3], order.get(kv[0][0], 99), wire.KINDS.index(kv[0][1])),
    ):
        out.append(
            f"| {model} | {c} | {server} | {wire.KIND_TITLES[kind]} | {fmt(s['rps'])} | {fmt(s['p50_ms'], 2)} "
            f"| {fmt(s['p99_ms'])} | {int(s['errors'])} | {int(s['requests']):,} "
            f"| {fmt(s['server_cpu_us_per_req'], 0)} | {fmt(s['rss_mib'], 0)} |"
        )
    out += ["", "## Floors measured in the same run", "", *(f"- {f}" for f in report["floors"])]
    out += [
        "",
        "## Resident memory after the run (process tree, MiB)",
        "",
        "| server | VmRSS | Pss | processes |",
        "| --- | ---: | ---: | ---: |",
    ]
    out += [
        f"| {name} | {m['rss']:.0f} | {m['pss']:.0f} | {m['processes']} |"
        for name, m in report["memory"].items()
    ]
    for title, profile in report.get("profiles", []):
        out += ["", f"## Profile of ours (py-spy, separate unmeasured run): {title}", "", *profile]
    if report["notes"]:
        out += ["", "## Notes", "", *(f"- {note}" for note in report["notes"])]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(
        "peers",
        __doc__,
        duration=(5.0, 10.0),
        warmup=(1.0, 2.0),
        rounds=(1, 3),
        concurrency=(1, 8, 64),
    )
    p.add_argument("--models", nargs="+", choices=MODEL_KEYS, default=list(MODEL_KEYS))
    p.add_argument(
        "--peers", nargs="*", choices=sorted(PEER_PACKAGES), default=sorted(PEER_PACKAGES)
    )
    p.add_argument("--model-version", type=int, default=1)
    p.add_argument("--setup-only", action="store_true", help="build the peer virtualenvs and stop")
    p.add_argument("--plan", action="store_true", help="print what would run and stop")
    p.add_argument(
        "--profile", action="store_true", help="py-spy ours on V2 JSON, conc. 1 (extra runs)"
    )
    args = harness.parse(p, argv)
    configs = configurations(args.quick, args.peers)
    plan = schedule(configs, args.models, args.concurrency, args.rounds)
    missing = [peer for peer in args.peers if not venv_ready(peer)]
    print(
        f"{len(plan)} runs on {len(configs)} servers, {args.rounds} round(s): about "
        f"{estimate_s(len(plan), len(configs), args.duration, args.warmup) / 60:.0f} min"
        + (f" plus building the venvs of {missing} (~5-10 min each)" if missing else ""),
        flush=True,
    )
    if args.plan:
        print("\n".join(f"  round {r} {k} c={c} {cf.name} {kind}" for r, k, c, cf, kind in plan))
        return 0
    for peer in args.peers:
        print(f"{peer}: {ensure_venv(peer)}", flush=True)
    if args.setup_only or harness.refuse_while_training(args):
        return 0 if args.setup_only else 3
    started = time.monotonic()
    report = harness.new_report(
        "peers",
        args.argv,
        quick=args.quick,
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
        concurrencies=args.concurrency,
        models=args.models,
        client="wrk" if shutil.which("wrk") else "Python (wrk is not installed)",
        servers=[c.name for c in configs],
        floors=[],
        single_item_floor_ms={},
        memory={},
    )
    bodies = {
        (k, kind): wire.bodies(wire.CASES[k], kind, 1, VARIANTS)
        for k in args.models
        for kind in wire.KINDS
    }
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        paths = model_folder(work / "models", args.model_dir.resolve(), args.model_version)
        servers: dict[str, Server] = {}
        for config in configs:
            server = make_server(config, work / "models", paths, work)
            try:
                stack.enter_context(harness.running(server))
            except RuntimeError as exc:
                report["notes"].append(f"{config.name} did not start: {str(exc)[:300]}")
                print(report["notes"][-1], flush=True)
                continue
            servers[config.name] = server
            print(f"{config.name}: ready on {server.url}", flush=True)
        floors(report, servers.get("ours"), paths, work, min(args.duration, 5.0))
        usable: set[tuple[str, ...]] = set()
        reference: dict[str, np.ndarray] = {}
        for name, server in servers.items():
            for kind in next(c for c in configs if c.name == name).kinds:
                for key in args.models:
                    note = probe(server, kind, wire.CASES[key], bodies[(key, kind)][0], reference)
                    if note:
                        report["notes"].append(f"{name}, {wire.KIND_TITLES[kind]}, {key}: {note}")
                        print(f"skip: {report['notes'][-1]}", flush=True)
                    else:
                        usable.add((name, kind, key))
        for r, key, c, config, kind in plan:
            if (config.name, kind, key) in usable:
                res = harness.measure(
                    servers[config.name], bodies[(key, kind)], c, args.duration, args.warmup, work
                )
                points.append(
                    {
                        **res,
                        "server": config.name,
                        "kind": kind,
                        "model": wire.CASES[key].model,
                        "round": r,
                    }
                )
                print(
                    f"round {r} {key:8s} c={c:<3d} {config.name:28s} {wire.KIND_TITLES[kind]:10s} "
                    f"{res['rps']:8.1f} req/s p50 {res['p50_ms']:7.2f} p99 {res['p99_ms']:7.1f} ms "
                    f"errors {res['errors']} rss {res['rss_mib']:5.0f} MiB",
                    flush=True,
                )
        if args.profile and "ours" in servers:
            ours = servers["ours"]
            report["profiles"] = [
                (
                    f"{k}, V2 JSON, concurrency 1",
                    profiling.during(
                        ours,
                        work / f"profile-{k}.txt",
                        lambda k=k: driver.run(ours.url, bodies[(k, "v2")], 1, 9.0, work),
                        8.0,
                    ),
                )
                for k in args.models
            ]
        for name, server in servers.items():
            rss, pss = server.memory_mib()
            report["memory"][name] = {"rss": rss, "pss": pss, "processes": len(server.pids())}
    report["stats"] = aggregate(points)
    report["wall_s"] = time.monotonic() - started
    text = render(report)
    print("\n" + text)
    if not args.no_write:
        write(report, text, args.results_dir)
    return 0


def write(report: dict[str, Any], text: str, directory: Path) -> Path:
    saved = {**report, "stats": [[*k, v] for k, v in report["stats"].items()]}
    return harness.write(saved, text, directory, "-quick" if report["quick"] else "")


if __name__ == "__main__":
    raise SystemExit(main())
