"""Our server against the servers users would pick instead, side by side in one run.

``python -m bench peers`` (``--quick`` for the short preset) does, in one invocation:

1. builds, once, a virtualenv per peer from the package registries (MLServer, KServe, BentoML,
   each with the tensorflow-cpu of requirements.lock), cached under ``~/.cache/mldm-bench/peers``
   (``MLDM_BENCH_CACHE``); never in CI;
2. writes a model folder holding only `digit_classifier/1` and `energy_from_potential/1`, and
   starts on 127.0.0.1 our service and every peer configuration (`bench/peer_runtimes/`: a
   minimal idiomatic runtime per peer calling the same `serving_default` signature, with each
   peer's documented throughput tuning as separate configurations);
3. measures `wrk`'s own ceiling on a canned-response server and the bare loopback round trip to
   a trivial route of our stack, and the in-process batch-1 signature call;
4. drives every server with the same request bodies through the V2 route (ours also through its
   task route, V2 binary and `.npy`; a peer also through V2 binary where it speaks it), at each
   concurrency, for both models, in interleaved rounds (the order of the servers rotates at every
   point), recording req/s, p50, p99, errors, the server's CPU time per request (from /proc) and
   its resident memory; every server's first answer is checked against ours V2's numbers;
5. writes one table to ``bench/results/peers-<date>-<commit>.md`` with the ratios ours / best
   peer and the issue-15 targets.

Every server is stopped at the end, on an error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import wrk
from bench.serving import (
    REPO,
    RESULTS_DIR,
    Server,
    canned_server,
    cpu_seconds,
    free_port,
    git_commit,
    machine_info,
    memory_kib,
    our_server,
    training_running,
)

RUNTIMES = Path(__file__).resolve().parent / "peer_runtimes"
PEER_PACKAGES = {
    "mlserver": "mlserver==1.7.1",
    "kserve": "kserve==0.21.0",
    "bentoml": "bentoml==1.4.40",
}
MODEL_KEYS = ("classify", "energy")
CONCURRENCIES = (1, 8, 64)
#: Different request bodies per point, cycled by wrk (same ones for every server).
VARIANTS = 8


# Peer virtualenvs -----------------------------------------------------------------------------


def cache_dir() -> Path:
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
    marker = (root or cache_dir()) / peer / ".mldm-spec"
    try:
        return marker.read_text().split() == venv_requirements(peer)
    except OSError:
        return False


def ensure_venv(peer: str, root: Path | None = None, python: str | None = None) -> Path:
    """The peer's virtualenv, built first if missing or built for other versions."""
    folder = (root or cache_dir()) / peer
    if venv_ready(peer, root):
        return folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    interpreter: str = python or getattr(sys, "_base_executable", None) or sys.executable
    print(f"building the {peer} virtualenv in {folder} (minutes; cached afterwards)", flush=True)
    subprocess.run([interpreter, "-m", "venv", str(folder)], check=True)
    subprocess.run(
        [
            str(folder / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *venv_requirements(peer),
        ],
        check=True,
        timeout=3600,
    )
    # Written last: an interrupted build has no marker and is rebuilt next time.
    (folder / ".mldm-spec").write_text("\n".join(venv_requirements(peer)) + "\n")
    return folder


def disk_mib(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total / 2**20


# Server configurations ------------------------------------------------------------------------


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
        if self.server == "ours":
            return ("v2", "task", "v2-binary", "npy")
        if self.server == "kserve":
            return ("v2", "v2-binary")  # KServe implements the binary extension
        return ("v2",)


OURS = Config("ours", "")
#: MLServer: parallel_workers (default 1, inference in a worker process; 0 = in the server),
#: adaptive batching (max_batch_size / max_batch_time), debug logging off. KServe: per-request
#: latency logging on (default) / off. BentoML: plain, and its adaptive batching.
FULL_PEERS = (
    Config("mlserver", "1 worker", {"parallel_workers": 1, "debug": False}),
    Config("mlserver", "0 workers", {"parallel_workers": 0, "debug": False}),
    Config(
        "mlserver",
        "1 worker, batch 64/2ms",
        {"parallel_workers": 1, "debug": False, "max_batch_size": 64, "max_batch_time": 0.002},
    ),
    Config(
        "mlserver",
        "0 workers, batch 64/2ms",
        {"parallel_workers": 0, "debug": False, "max_batch_size": 64, "max_batch_time": 0.002},
    ),
    Config("kserve", "latency log on", {"latency_logging": True}),
    Config("kserve", "latency log off", {"latency_logging": False}),
    Config("bentoml", "plain", {"batching": False}),
    # A tight max_latency_ms makes BentoML's dispatcher refuse requests under load (errors at
    # concurrency 64 with 20 and 200 ms here): a 10 s bound leaves the batching window to its
    # adaptive dispatcher, which is what its batching is for.
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


def peer_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a peer: its own venv's packages only (no PYTHONPATH of ours)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


def mlserver_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    folder = work / f"mlserver-{abs(hash(config.label))}"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
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
        model = folder / name
        model.mkdir(exist_ok=True)
        model_settings: dict[str, Any] = {
            "name": name,
            "implementation": "mlserver_runtime.SignatureModel",
            "parameters": {"uri": path},
        }
        if config.options.get("max_batch_size"):
            model_settings["max_batch_size"] = config.options["max_batch_size"]
            model_settings["max_batch_time"] = config.options["max_batch_time"]
        (model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    env = peer_env({"PYTHONPATH": str(RUNTIMES)})
    command = [str(venv / "bin" / "mlserver"), "start", str(folder)]
    return Server(config.name, command, env, port, work / f"{folder.name}.log")


def kserve_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port = free_port()
    command = [
        str(venv / "bin" / "python"),
        str(RUNTIMES / "kserve_server.py"),
        "--http_port",
        str(port),
        "--grpc_port",
        str(free_port()),
        "--enable_latency_logging",
        str(bool(config.options.get("latency_logging", True))).lower(),
    ]
    env = peer_env({"MLDM_PEER_MODELS": json.dumps(paths)})
    return Server(config.name, command, env, port, work / f"kserve-{port}.log")


def bentoml_server(config: Config, venv: Path, paths: dict[str, str], work: Path) -> Server:
    port = free_port()
    home = work / f"bentoml-home-{port}"
    home.mkdir(parents=True, exist_ok=True)
    env = peer_env(
        {
            "MLDM_PEER_MODELS": json.dumps(paths),
            "MLDM_PEER_BATCHING": "on" if config.options.get("batching") else "off",
            "MLDM_PEER_MAX_BATCH": str(config.options.get("max_batch", 64)),
            "MLDM_PEER_MAX_LATENCY_MS": str(config.options.get("max_latency_ms", 20)),
            "BENTOML_HOME": str(home),
            "BENTOML_DO_NOT_TRACK": "True",
        }
    )
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
    return Server(config.name, command, env, port, work / f"bentoml-{port}.log")


READY_PATHS = {
    "ours": "/v2/health/ready",
    "mlserver": "/v2/health/ready",
    "kserve": "/v2/health/ready",
    "bentoml": "/readyz",
}


def make_server(config: Config, model_root: Path, paths: dict[str, str], work: Path) -> Server:
    if config.server == "ours":
        server = our_server(model_root, list(paths), 1, work, 1024)
        server.name = config.name
        return server
    venv = ensure_venv(config.server)
    builders = {"mlserver": mlserver_server, "kserve": kserve_server, "bentoml": bentoml_server}
    return builders[config.server](config, venv, paths, work)


# Measuring ------------------------------------------------------------------------------------


def request_once(
    base_url: str, body: wrk.Body, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        base_url + body.path,
        data=body.payload or None,
        method=body.method,
        headers=dict(body.headers),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def tree_rss_mib(server: Server) -> tuple[float, float]:
    """VmRSS and Pss (MiB) summed over the server's process tree."""
    rss = pss = 0
    for pid in server.pids():
        mem = memory_kib(pid)
        rss += mem.get("rss", 0)
        pss += mem.get("pss", 0)
    return rss / 1024, pss / 1024


@dataclass
class Point:
    """One measured run: server, protocol, model, concurrency, round, and what it gave."""

    server: str
    kind: str
    model: str
    concurrency: int
    round: int
    result: dict[str, Any]
    cpu_us_per_req: float
    rss_mib: float
    pss_mib: float


def measure(
    server: Server,
    requests: Sequence[wrk.Body],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    work: Path,
) -> tuple[dict[str, Any], float, float, float]:
    if warmup_s > 0:
        wrk.run(server.url, requests, concurrency, warmup_s, work)
    pids = server.pids()
    cpu_before = cpu_seconds(pids)
    result = wrk.run(server.url, requests, concurrency, duration_s, work)
    cpu = cpu_seconds(pids) - cpu_before
    rss, pss = tree_rss_mib(server)
    answered = max(result.requests, 1)
    return result.as_dict(), cpu / answered * 1e6, rss, pss


def signature_latency_ms(path: str, case: wire.ModelCase, calls: int) -> float:
    """Median ms of a batch-1 `serving_default` call in this process (the in-process floor)."""
    import tensorflow as tf

    function = tf.saved_model.load(path).signatures["serving_default"]
    tensor = tf.constant(case.inputs(1, 0))
    for _ in range(20):
        function(**{case.input_name: tensor})
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        outputs = function(**{case.input_name: tensor})
        next(iter(outputs.values())).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# Results --------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def aggregate(points: Sequence[Point]) -> dict[tuple[str, str, str, int], dict[str, float]]:
    """Medians over rounds per (server, kind, model, concurrency); errors summed."""
    groups: dict[tuple[str, str, str, int], list[Point]] = {}
    for p in points:
        groups.setdefault((p.server, p.kind, p.model, p.concurrency), []).append(p)
    out = {}
    for key, group in groups.items():
        out[key] = {
            "rps": _median([p.result["rps"] for p in group]),
            "p50_ms": _median([p.result["p50_ms"] for p in group]),
            "p99_ms": _median([p.result["p99_ms"] for p in group]),
            "errors": float(sum(p.result["errors"] for p in group)),
            "requests": float(sum(p.result["requests"] for p in group)),
            "cpu_us": _median([p.cpu_us_per_req for p in group]),
            "rss_mib": max(p.rss_mib for p in group),
            "rounds": float(len(group)),
        }
    return out


def best_peer(
    stats: dict[tuple[str, str, str, int], dict[str, float]], model: str, concurrency: int
) -> tuple[str, dict[str, float]] | None:
    """The peer configuration with the most req/s on the V2 JSON route at this point."""
    candidates = [
        (server, s)
        for (server, kind, m, c), s in stats.items()
        if kind == "v2"
        and m == model
        and c == concurrency
        and not server.startswith("ours")
        and s["errors"] == 0
        and not math.isnan(s["rps"])
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda item: item[1]["rps"])


def _f(value: float, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float, b: float) -> float:
    if not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def summary_rows(
    stats: dict[tuple[str, str, str, int], dict[str, float]],
    concurrencies: Sequence[int],
) -> list[dict[str, Any]]:
    """Per (model, concurrency): ours V2 and task, the best peer, and the ratios."""
    rows = []
    for key in MODEL_KEYS:
        model = wire.CASES[key].model
        for c in concurrencies:
            ours_v2 = stats.get((OURS.name, "v2", model, c))
            ours_task = stats.get((OURS.name, "task", model, c))
            best = best_peer(stats, model, c)
            if ours_v2 is None or best is None:
                continue
            peer_name, peer = best
            rows.append(
                {
                    "model": key,
                    "concurrency": c,
                    "ours_v2": ours_v2,
                    "ours_task": ours_task,
                    "peer": peer_name,
                    "best": peer,
                    "v2_rps_ratio": ratio(ours_v2["rps"], peer["rps"]),
                    "task_rps_ratio": ratio(ours_task["rps"], peer["rps"])
                    if ours_task
                    else math.nan,
                    "v2_p99_ratio": ratio(ours_v2["p99_ms"], peer["p99_ms"]),
                    "task_p99_ratio": ratio(ours_task["p99_ms"], peer["p99_ms"])
                    if ours_task
                    else math.nan,
                }
            )
    return rows


def provenance(report: dict[str, Any]) -> str:
    """The line saying which command, at which commit, took how long."""
    return (
        f"Command: `{report['command']}` at commit `{report['commit']}`"
        + (" (with uncommitted changes)" if report["dirty"] else "")
        + f"; wall time {report['wall_s'] / 60:.1f} min."
    )


def render(report: dict[str, Any]) -> str:
    stats = report["stats"]
    concurrencies = report["concurrencies"]
    m = report["machine"]
    out = [
        f"# Peers benchmark, {report['date']}",
        "",
        provenance(report),
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"TensorFlow {m['tensorflow']}; load average before the run {m['load_before']}. "
        f"Load generator: wrk {report['wrk_version']} (Debian), {report['duration_s']:g} s per "
        f"point after {report['warmup_s']:g} s of warm-up, {report['rounds']} interleaved "
        f"round(s), {VARIANTS} different bodies "
        "per point, the same bytes for every server. Figures are medians over rounds.",
        "",
    ]
    if report.get("contended"):
        out += [
            "**Contended run:** other work was running on this machine during the run "
            f"({report['contended']}); only the ratios within a round mean anything.",
            "",
        ]
    rows = summary_rows(stats, concurrencies)
    out += [
        "## Ours / best peer (V2 JSON route; req/s, p99 ms)",
        "",
        "| model, conc. | ours V2 | ours task route | best peer (V2) | ours V2 / best "
        "| ours task / best | p99 ours V2 / best |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        task = r["ours_task"]
        out.append(
            f"| {r['model']}, {r['concurrency']} | {_f(r['ours_v2']['rps'])}, "
            f"{_f(r['ours_v2']['p99_ms'])} | "
            + (f"{_f(task['rps'])}, {_f(task['p99_ms'])}" if task else "-")
            + f" | {r['peer']}: {_f(r['best']['rps'])}, {_f(r['best']['p99_ms'])} "
            f"| {_f(r['v2_rps_ratio'], 2)} | {_f(r['task_rps_ratio'], 2)} "
            f"| {_f(r['v2_p99_ratio'], 2)} |"
        )
    out += ["", "## Targets (issue 15)", ""]
    out += [f"- {line}" for line in targets(report, rows)]
    out += [
        "",
        "## Every server, every route",
        "",
        "| model | conc. | server | route | req/s | p50 ms | p99 ms | errors | requests "
        "| server CPU us/req | RSS MiB |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = {name: i for i, name in enumerate(report["servers"])}
    for (server, kind, model, c), s in sorted(
        stats.items(),
        key=lambda kv: (kv[0][2], kv[0][3], order.get(kv[0][0], 99), wire.KINDS.index(kv[0][1])),
    ):
        out.append(
            f"| {model} | {c} | {server} | {wire.KIND_TITLES[kind]} | {_f(s['rps'])} "
            f"| {_f(s['p50_ms'], 2)} | {_f(s['p99_ms'], 1)} | {int(s['errors'])} "
            f"| {int(s['requests']):,} | {_f(s['cpu_us'], 0)} | {_f(s['rss_mib'], 0)} |"
        )
    out += ["", "## Floors measured in the same run", ""]
    for line in report["floors"]:
        out.append(f"- {line}")
    if report["memory"]:
        out += [
            "",
            "## Resident memory after the run (process tree, MiB)",
            "",
            "| server | VmRSS | Pss | processes |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, mem in report["memory"].items():
            out.append(f"| {name} | {mem['rss']:.0f} | {mem['pss']:.0f} | {mem['processes']} |")
    for title, lines in report.get("profiles", []):
        out += ["", f"## Profile of ours (py-spy, separate unmeasured run): {title}", "", *lines]
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"


def targets(report: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each issue-15 target with its measured ratio, met or not."""
    lines = []
    for r in rows:
        where = f"{r['model']}, concurrency {r['concurrency']}"
        for route, rps_key, p99_key in (
            ("V2", "v2_rps_ratio", "v2_p99_ratio"),
            ("task", "task_rps_ratio", "task_p99_ratio"),
        ):
            rps_ratio, p99_ratio = r[rps_key], r[p99_key]
            if math.isnan(rps_ratio):
                continue
            ok = rps_ratio >= 1.5 and p99_ratio <= 0.5
            lines.append(
                f"{'met' if ok else 'NOT met'}: {where}, ours {route} req/s {rps_ratio:.2f}x the "
                f"best peer ({r['peer']}; target >= 1.5x), p99 {p99_ratio:.2f}x (target <= 0.5x)"
            )
    floor = report.get("single_item_floor_ms", {})
    for key in MODEL_KEYS:
        model = wire.CASES[key].model
        ours = report["stats"].get((OURS.name, "v2", model, 1))
        if ours is None or key not in floor:
            continue
        limit = 1.5 * floor[key]
        p50 = ours["p50_ms"]
        lines.append(
            f"{'met' if p50 <= limit else 'NOT met'}: {key} single-item p50 (V2, conc. 1) "
            f"{p50:.2f} ms = {p50 / floor[key]:.2f}x (signature call + bare loopback round trip "
            f"= {floor[key]:.2f} ms; target <= 1.5x)"
        )
    memory = report.get("memory", {})
    ours_mem = memory.get(OURS.name)
    peers = {k: v for k, v in memory.items() if not k.startswith("ours")}
    if ours_mem and peers:
        best_name, best_mem = min(peers.items(), key=lambda kv: kv[1]["rss"])
        r = ours_mem["rss"] / best_mem["rss"]
        lines.append(
            f"{'met' if r <= 1.1 else 'NOT met'}: resident memory ours {ours_mem['rss']:.0f} MiB "
            f"= {r:.2f}x the leanest peer ({best_name}, {best_mem['rss']:.0f} MiB; target <= 1.1x)"
        )
    return lines


def write(report: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    label = "-quick" if report["quick"] else ""
    path = directory / f"peers{label}-{report['date'][:10]}-{report['commit']}.md"
    path.write_text(render(report), encoding="utf-8")
    (path.with_suffix(".json")).write_text(
        json.dumps(
            {**report, "stats": [[*k, v] for k, v in report["stats"].items()]},
            indent=1,
            default=str,
        ),
        encoding="utf-8",
    )
    return path


# Main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench peers",
        description="Our server against MLServer, KServe and BentoML, same bodies, wrk.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short preset: 5 s per point, 1 round, 5 peer configurations (~10 min)",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per point")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES), metavar="N"
    )
    parser.add_argument("--models", nargs="+", choices=MODEL_KEYS, default=list(MODEL_KEYS))
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=sorted(PEER_PACKAGES),
        default=sorted(PEER_PACKAGES),
        help="peer servers to include (none: ours only)",
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--model-version", type=int, default=1)
    parser.add_argument(
        "--setup-only", action="store_true", help="build the peer virtualenvs and stop"
    )
    parser.add_argument(
        "--plan", action="store_true", help="print what would run and its duration, and stop"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, py-spy ours on V2 JSON at concurrency 1 (unmeasured runs)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration if args.duration is not None else (5.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
    return args


def configurations(quick: bool, peers: Sequence[str]) -> list[Config]:
    chosen = QUICK_PEERS if quick else FULL_PEERS
    return [OURS, *(c for c in chosen if c.server in peers)]


def schedule(
    configs: Sequence[Config], models: Sequence[str], concurrencies: Sequence[int], rounds: int
) -> list[tuple[int, str, int, Config, str]]:
    """(round, model key, concurrency, config, kind), servers rotated at every point."""
    entries = [(config, kind) for config in configs for kind in config.kinds]
    plan = []
    point = 0
    for r in range(rounds):
        for key in models:
            for c in concurrencies:
                shift = point % len(entries)
                for config, kind in entries[shift:] + entries[:shift]:
                    plan.append((r, key, c, config, kind))
                point += 1
    return plan


def estimate_s(plan_length: int, configs: int, duration: float, warmup: float) -> float:
    """Wall time: per run the point plus warm-up plus ~1.5 s of wrk and probe overhead; ~40 s
    to start each server (TensorFlow import and model load, 25-55 s here); ~30 s of floors."""
    return plan_length * (duration + warmup + 1.5) + configs * 40 + 30


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = configurations(args.quick, args.peers)
    plan = schedule(configs, args.models, args.concurrency, args.rounds)
    expected = estimate_s(len(plan), len(configs), args.duration, args.warmup)
    missing = [p for p in args.peers if not venv_ready(p)]
    print(
        f"{len(plan)} runs on {len(configs)} servers, {args.rounds} round(s), "
        f"{args.duration:g} s per point: about {expected / 60:.0f} min"
        + (f" plus building the venvs of {missing} (~5-10 min each)" if missing else ""),
        flush=True,
    )
    if args.plan:
        for entry in plan:
            print(f"  round {entry[0]} {entry[1]} c={entry[2]} {entry[3].name} {entry[4]}")
        return 0
    if args.setup_only:
        for peer in args.peers:
            folder = ensure_venv(peer)
            print(f"{peer}: {folder} ({disk_mib(folder):,.0f} MiB)")
        return 0
    if wrk.executable() is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    for peer in args.peers:
        ensure_venv(peer)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through the ExitStack, which stops every server

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    commit, dirty = git_commit()
    busy = training_running()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "quick": args.quick,
        "command": "python -m bench peers " + " ".join(argv or []),
        "machine": machine_info(),
        "wrk_version": wrk_version(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "concurrencies": args.concurrency,
        "servers": [c.name for c in configs],
        "contended": "; ".join(busy),
        "floors": [],
        "single_item_floor_ms": {},
        "memory": {},
        "notes": [],
        "profiles": [],
    }
    points: list[Point] = []
    cases = {key: wire.CASES[key] for key in args.models}
    requests = {
        (key, kind): wire.bodies(case, kind, 1, VARIANTS)
        for key, case in cases.items()
        for kind in wire.KINDS
    }
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        model_root = work / "models"
        paths = model_folder(model_root, args.model_dir.resolve(), args.model_version)
        servers: dict[str, Server] = {}
        for config in configs:
            server = make_server(config, model_root, paths, work)
            try:
                seconds = server.start(READY_PATHS[config.server], timeout_s=300)
            except RuntimeError as exc:
                report["notes"].append(f"{config.name} did not start: {str(exc)[:300]}")
                print(f"{config.name} did not start:\n{exc}", flush=True)
                continue
            stack.callback(server.stop)
            servers[config.name] = server
            print(f"{config.name}: ready in {seconds:.1f} s on {server.url}", flush=True)
        floors(report, servers.get(OURS.name), paths, cases, work, args)

        # Probe each (server, kind, model) once: status, and the numbers against ours V2.
        usable: set[tuple[str, str, str]] = set()
        reference: dict[str, np.ndarray] = {}
        for config in configs:
            if config.name not in servers:
                continue
            for kind in config.kinds:
                for key, case in cases.items():
                    note = probe(
                        servers[config.name], kind, case, requests[(key, kind)][0], reference
                    )
                    if note:
                        report["notes"].append(
                            f"{config.name}, {wire.KIND_TITLES[kind]}, {key}: {note}"
                        )
                        print(f"skip: {report['notes'][-1]}", flush=True)
                    else:
                        usable.add((config.name, kind, key))

        for r, key, c, config, kind in plan:
            if (config.name, kind, key) not in usable:
                continue
            server = servers[config.name]
            result, cpu_us, rss, pss = measure(
                server, requests[(key, kind)], c, args.duration, args.warmup, work / "wrk"
            )
            points.append(
                Point(config.name, kind, cases[key].model, c, r, result, cpu_us, rss, pss)
            )
            print(
                f"round {r} {key:8s} c={c:<3d} {config.name:28s} {wire.KIND_TITLES[kind]:10s} "
                f"{result['rps']:8.1f} req/s p50 {result['p50_ms']:7.2f} "
                f"p99 {result['p99_ms']:7.1f} ms "
                f"errors {result['errors']} cpu {cpu_us:6.0f} us/req rss {rss:5.0f} MiB",
                flush=True,
            )
        if args.profile and OURS.name in servers:
            report["profiles"] = profile_ours(servers[OURS.name], requests, cases, work)
        for name, server in servers.items():
            rss, pss = tree_rss_mib(server)
            report["memory"][name] = {"rss": rss, "pss": pss, "processes": len(server.pids())}
    after = training_running()
    if after and not busy:
        report["contended"] = "; ".join(after)
    report["stats"] = aggregate(points)
    report["wall_s"] = time.monotonic() - started
    text = render(report)
    print("\n" + text)
    if not args.no_write:
        path = write(report, args.results_dir)
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


def profile_ours(
    server: Server,
    requests: dict[tuple[str, str], list[wrk.Body]],
    cases: dict[str, wire.ModelCase],
    work: Path,
    seconds: float = 8.0,
) -> list[tuple[str, list[str]]]:
    """py-spy samples our server during an extra single-request loop per model (V2 JSON)."""
    from bench import profile as profiling
    from bench.serving import profile_lines

    out = []
    for key in cases:
        stacks = work / f"profile-{key}.txt"
        sampler = profiling.start(server.pids()[0], seconds, stacks)
        wrk.run(server.url, requests[(key, "v2")], 1, seconds + 1, work / "wrk")
        sampler.wait(timeout=seconds + 60)
        profile = profiling.summarize(stacks.read_text() if stacks.exists() else "")
        out.append((f"{key}, V2 JSON, concurrency 1", profile_lines(profile)))
    return out


def probe(
    server: Server,
    kind: str,
    case: wire.ModelCase,
    body: wrk.Body,
    reference: dict[str, np.ndarray],
) -> str | None:
    """None if the server answers this body right (same numbers as ours V2), else why not."""
    try:
        status, headers, payload = request_once(server.url, body)
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


def floors(
    report: dict[str, Any],
    ours: Server | None,
    paths: dict[str, str],
    cases: dict[str, wire.ModelCase],
    work: Path,
    args: argparse.Namespace,
) -> None:
    """wrk's ceiling (canned server), our bare loopback round trip, the in-process call."""
    seconds = min(args.duration, 5.0)
    canned = canned_server(work)
    try:
        canned.start("/", timeout_s=30)
        body = wrk.Body("POST", "/", b"{}", (("Content-Type", wire.JSON),))
        for c in (1, 64):
            res = wrk.run(canned.url, [body], c, seconds, work / "wrk")
            report["floors"].append(
                f"wrk ceiling (canned-response server, conc. {c}): {res.rps:,.0f} req/s, "
                f"p50 {res.p50_ms:.3f} ms, wrk CPU "
                f"{res.client_cpu_s / max(res.requests, 1) * 1e6:.1f} us/req"
            )
    except RuntimeError as exc:
        report["notes"].append(f"canned server did not start: {exc}")
    finally:
        canned.stop()
    loopback = math.nan
    if ours is not None:
        res = wrk.run(ours.url, [wrk.Body("GET", "/v2/health/live", b"")], 1, seconds, work / "wrk")
        loopback = res.p50_ms
        report["floors"].append(
            f"bare loopback round trip to our stack (GET /v2/health/live, conc. 1): p50 "
            f"{res.p50_ms:.3f} ms, {res.rps:,.0f} req/s"
        )
    for key, case in cases.items():
        ms = signature_latency_ms(paths[case.model], case, 2000)
        report["floors"].append(
            f"in-process `serving_default` call, batch 1, {case.model}: median {ms:.3f} ms of 2,000"
        )
        if not math.isnan(loopback):
            report["single_item_floor_ms"][key] = ms + loopback


def wrk_version() -> str:
    exe = wrk.executable()
    if exe is None:
        return "not installed"
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].split()[1] if text and len(text[0].split()) > 1 else "unknown"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
