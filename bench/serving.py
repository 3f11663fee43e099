"""Serving benchmark: our FastAPI model server against a naive `model.predict` server.

``python -m bench serving`` (or ``python -m bench.serving``, ``make bench``) does, on this machine
and in one invocation:

1. the raw in-process throughput of each committed SavedModel through its `serving_default`
   signature at batch 256 (warm, repeated), and at the bulk scenarios' batch size;
2. the load generator's own ceiling, against a canned-response server;
3. our service (``python -m service``, uvicorn, 1 worker unless ``--workers``) on a free loopback
   port, driven at concurrency 1, 8 and 64: one image per request (JSON), one potential per
   request (JSON), and bulk binary requests (``application/x-npy`` in and out);
4. the naive reference server (`bench/naive_server.py`) on the same JSON scenarios;
5. the resident memory of the service with 1 and with 2 uvicorn workers.

It prints one table with ours / naive ratios and the served bulk throughput as a fraction of the
raw one, checks the targets of issue 5, and writes it all to
``bench/results/serving-<date>-<commit>.md``. Every run is bounded by a request count and a time
limit. Servers run one at a time, so they never compete with each other for the CPU; the load
generator shares the machine with them, and its CPU time per request is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench import profile as profiling
from bench.loadgen import Request, RunResult, run_load

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
NPY = "application/x-npy"
JSON = "application/json"
CONCURRENCIES = (1, 8, 64)
RAW_BATCH = 256


# Machine and repository -------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, Python/TensorFlow versions and the load before the run."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tf_version = "not installed"
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            tf_version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    mem_gib = math.nan
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "tensorflow": tf_version,
        "uvicorn": _version("uvicorn"),
        "fastapi": _version("fastapi"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> tuple[str, bool]:
    """Short commit of HEAD and whether the bench or service trees differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "bench", "models"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(dirty)


def latest_version(model_dir: Path, name: str) -> Path | None:
    folder = model_dir / name
    if not folder.is_dir():
        return None
    versions = [p for p in folder.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def training_running() -> list[str]:
    """Command lines of `python -m training` processes (someone else's load on the machine)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if "-m training" in cmdline and int(proc.name) != os.getpid():
            found.append(f"{proc.name}: {cmdline}")
    return found


# Raw in-process throughput --------------------------------------------------------------------


def raw_throughput(path: Path, batch: int, seconds: float = 3.0) -> dict[str, Any]:
    """Items/s of the signature called in a loop on one pre-built tensor of `batch` items."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures["serving_default"]
    _, kwargs = function.structured_input_signature
    (name, spec), *_ = kwargs.items()
    shape = [batch, *(int(d) for d in spec.shape[1:])]
    rng = np.random.default_rng(0)
    if spec.dtype == tf.uint8:
        array = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        array = rng.random(shape, dtype=np.float32)
    tensor = tf.constant(array, dtype=spec.dtype)
    for _ in range(3):
        function(**{name: tensor})
    calls = 0
    start = time.perf_counter()
    while True:
        outputs = function(**{name: tensor})
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 5:
            break
    for value in outputs.values():
        value.numpy()
    return {
        "batch": batch,
        "calls": calls,
        "seconds": elapsed,
        "items_per_s": calls * batch / elapsed,
        "ms_per_call": elapsed / calls * 1e3,
    }


# Servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's worker processes)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes, from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident, shared pages counted in full) and Pss (shared pages split) in KiB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """A server subprocess in its own session, so that stopping it stops its workers too."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/v2/health/ready", timeout_s: float = 300.0) -> float:
        """Start and wait until `ready_path` answers 200; the seconds that took."""
        start = time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = start + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                status, _ = http_get(self.url + ready_path, timeout=2.0)
                if status == 200:
                    return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Our own child's process group (start_new_session): uvicorn and its workers only.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def our_server(
    model_dir: Path, models: Sequence[str], workers: int, log_dir: Path, max_items: int
) -> Server:
    port = free_port()
    env = base_env()
    env.update(
        {
            "MLDM_MODEL_DIR": str(model_dir),
            # Readiness waits for the models the benchmark uses, not for all five.
            "MLDM_EXPECTED_MODELS": json.dumps(list(models)),
            # The bulk scenarios send more items per request than the default limit of 1024.
            "MLDM_MAX_BATCH_SIZE": str(max(max_items, 1024)),
            "MLDM_MAX_BODY_BYTES": str(max(max_items * 28 * 28 * 4 * 2, 64 * 1024 * 1024)),
        }
    )
    command = [
        sys.executable,
        "-m",
        "service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    return Server("service", command, env, port, log_dir / f"service-{workers}w.log")


def naive_server(model_dir: Path, log_dir: Path) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.naive_server",
        "--port",
        str(port),
        "--model-dir",
        str(model_dir),
    ]
    return Server("naive", command, base_env(), port, log_dir / "naive.log")


def canned_server(log_dir: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.loadgen", "--canned-server", str(port)]
    return Server("canned", command, base_env(), port, log_dir / "canned.log")


# Scenarios ------------------------------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def images(count: int, seed: int) -> np.ndarray:
    """Digit-like float32 images [count, 28, 28] in [0, 1] (values do not change the cost)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 28, 28), dtype=np.float32)
    out[:, 4:24, 6:22] = rng.random((count, 20, 16), dtype=np.float32)
    return out


def potentials(count: int, seed: int) -> np.ndarray:
    """Float32 potentials [count, 64] in Hartree on linspace(-15, 15, 64): wells and bumps."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-15.0, 15.0, 64)
    k = rng.uniform(0.01, 0.2, size=(count, 1))
    depth = rng.uniform(0.0, 2.0, size=(count, 1))
    centre = rng.uniform(-3.0, 3.0, size=(count, 1))
    return (0.5 * k * x**2 - depth * np.exp(-((x - centre) ** 2))).astype(np.float32)


def json_request(path: str, body: dict[str, Any]) -> Request:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return Request("POST", path, payload, (("Content-Type", JSON),))


def npy_request(path: str, array: np.ndarray) -> Request:
    return Request("POST", path, npy_bytes(array), (("Content-Type", NPY), ("Accept", NPY)))


@dataclass(frozen=True)
class Scenario:
    """One workload: what every request carries and how to tell a right answer."""

    name: str
    model: str
    items: int
    requests: Callable[[], list[Request]]
    check: Callable[[bytes, dict[str, str]], str | None]
    naive: bool = False
    bulk: bool = False


def _check_classify_json(items: int) -> Callable[[bytes, dict[str, str]], str | None]:
    def check(body: bytes, headers: dict[str, str]) -> str | None:
        predictions = json.loads(body).get("predictions", [])
        if len(predictions) != items or len(predictions[0]["probabilities"]) != 10:
            return f"expected {items} predictions of 10 probabilities, got {body[:120]!r}"
        return None

    return check


def _check_energy_json(items: int) -> Callable[[bytes, dict[str, str]], str | None]:
    def check(body: bytes, headers: dict[str, str]) -> str | None:
        energies = json.loads(body).get("energies")
        count = len(energies) if isinstance(energies, list) else 1
        if count != items:
            return f"expected {items} energies, got {body[:120]!r}"
        return None

    return check


def _check_npy(shape: tuple[int, ...]) -> Callable[[bytes, dict[str, str]], str | None]:
    def check(body: bytes, headers: dict[str, str]) -> str | None:
        kind = headers.get("content-type", "")
        if not kind.startswith(NPY):
            return f"expected {NPY}, got {kind!r}: {body[:120]!r}"
        array = np.load(io.BytesIO(body), allow_pickle=False)
        if array.shape != shape:
            return f"expected an array of shape {shape}, got {array.shape}"
        return None

    return check


def scenarios(bulk_images: int, bulk_arrays: int) -> list[Scenario]:
    classify = "/api/v1/digits/classify"
    energy = "/api/v1/energy/from-potential"
    return [
        Scenario(
            "classify, 1 image, JSON",
            "digit_classifier",
            1,
            lambda: [
                json_request(classify, {"images": image.tolist(), "scale": "unit"})
                for image in images(16, seed=1)
            ],
            _check_classify_json(1),
            naive=True,
        ),
        Scenario(
            "energy, 1 potential, JSON",
            "energy_from_potential",
            1,
            lambda: [
                json_request(energy, {"potentials": row.tolist()}) for row in potentials(16, 2)
            ],
            _check_energy_json(1),
            naive=True,
        ),
        Scenario(
            f"classify, {bulk_images} images, npy",
            "digit_classifier",
            bulk_images,
            lambda: [npy_request(classify + "?scale=unit", images(bulk_images, seed=3))],
            _check_npy((bulk_images, 10)),
            bulk=True,
        ),
        Scenario(
            f"energy, {bulk_arrays} potentials, npy",
            "energy_from_potential",
            bulk_arrays,
            lambda: [npy_request(energy, potentials(bulk_arrays, seed=4))],
            _check_npy((bulk_arrays,)),
            bulk=True,
        ),
    ]


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    server: str
    summary: dict[str, Any]
    check: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def drive(
    server: Server,
    scenario: Scenario,
    concurrency: int,
    max_requests: int,
    duration_s: float,
    client: str,
    warmup_s: float,
) -> Row:
    """Warm up, then one measured run; the server's CPU time over the run is recorded too."""
    requests = scenario.requests()
    if warmup_s > 0:
        asyncio.run(
            run_load(
                "127.0.0.1",
                server.port,
                requests,
                concurrency,
                max(concurrency * 4, 50),
                warmup_s,
                scenario.items,
                client,
            )
        )
    pids = server.pids()
    cpu_before = cpu_seconds(pids)
    result: RunResult = asyncio.run(
        run_load(
            "127.0.0.1",
            server.port,
            requests,
            concurrency,
            max_requests,
            duration_s,
            scenario.items,
            client,
        )
    )
    result.server_cpu_s = cpu_seconds(pids) - cpu_before
    check = None
    if result.first_body:
        try:
            check = scenario.check(result.first_body, result.first_headers)
        except Exception as exc:  # a malformed answer is a finding, not a crash
            check = f"unreadable answer ({exc}): {result.first_body[:120]!r}"
    else:
        check = f"no successful answer (statuses {result.statuses})"
    return Row(scenario.name, server.name, result.summary(), check)


def profile_run(
    server: Server,
    scenario: Scenario,
    concurrency: int,
    max_requests: int,
    duration_s: float,
    client: str,
    out: Path,
) -> profiling.Profile:
    """An extra, unmeasured run with py-spy sampling the server (never the measured run)."""
    requests = scenario.requests()
    sampler = profiling.start(server.pids()[0], duration_s, out)
    asyncio.run(
        run_load(
            "127.0.0.1",
            server.port,
            requests,
            concurrency,
            max_requests,
            duration_s + 0.5,
            scenario.items,
            client,
        )
    )
    sampler.wait(timeout=duration_s + 60)
    return profiling.summarize(out.read_text() if out.exists() else "")


#: Frames every request passes through (the event loop, thread bootstraps, middleware shells):
#: left out of the "top functions" list of the results, which is about where time differs.
_GENERIC_PACKAGES = ("<frozen runpy>", "asyncio", "threading", "concurrent")


def profile_lines(profile: profiling.Profile) -> list[str]:
    packages = ", ".join(f"{name} {share:.0%}" for name, share in profile.top_packages(8))
    functions = [
        (name, share)
        for name, share in profile.top_functions(200)
        if profiling.package_of(name) not in _GENERIC_PACKAGES
        and not name.split(" (")[0].endswith("__call__")
        and not name.startswith(("main (", "run (", "<module> (", "asyncio_run (", "Server.run ("))
    ][:14]
    out = [
        f"busy samples {profile.samples:,} (plus {profile.waiting:,} of threads waiting); "
        f"self time by package: {packages}",
        "",
        "| function (inclusive) | share of busy samples |",
        "| --- | ---: |",
    ]
    out += [f"| `{name}` | {share:.0%} |" for name, share in functions]
    return out


# Results --------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio_text(ours: float, naive: float) -> str:
    if not naive or math.isnan(naive) or math.isnan(ours):
        return "-"
    return f"{ours / naive:.1f}x"


def load_table(rows: Sequence[Row], raw: dict[str, dict[str, Any]]) -> list[str]:
    """The main table: one line per (scenario, server, concurrency) with ratios."""
    naive = {
        (row.scenario, row.summary["concurrency"]): row.summary["rps"]
        for row in rows
        if row.server == "naive"
    }
    lines = [
        "| scenario | server | conc. | requests | errors | p50 ms | p99 ms | req/s | items/s "
        "| ours / naive | of raw | client CPU us/req | server CPU us/req |",
        "| --- | --- " + "| ---: " * 11 + "|",
    ]
    for row in rows:
        s = row.summary
        versus = "-"
        if row.server == "service":
            key = (row.scenario, s["concurrency"])
            versus = ratio_text(s["rps"], naive.get(key, math.nan))
        of_raw = "-"
        model_raw = raw.get(row.extra.get("model", ""), {}).get(RAW_BATCH)
        if row.extra.get("bulk") and model_raw:
            of_raw = f"{s['items_per_s'] / model_raw['items_per_s']:.0%}"
        scenario = row.scenario + ("" if row.check is None else " (**wrong answer**)")
        lines.append(
            f"| {scenario} | {row.server} | {s['concurrency']} | {_fmt(s['requests'])} "
            f"| {_fmt(s['errors'])} | {_fmt(s['p50_ms'], 2)} | {_fmt(s['p99_ms'], 2)} "
            f"| {_fmt(s['rps'])} | {_fmt(s['items_per_s'])} | {versus} | {of_raw} "
            f"| {_fmt(s['client_cpu_us_per_req'], 0)} | {_fmt(s['server_cpu_us_per_req'], 0)} |"
        )
    return lines


def evaluate_targets(rows: Sequence[Row], raw: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 5's targets against the measured rows: what was asked, what we saw, met or not."""

    def find(scenario_prefix: str, server: str, concurrency: int | None) -> Row | None:
        for row in rows:
            if (
                row.scenario.startswith(scenario_prefix)
                and row.server == server
                and (concurrency is None or row.summary["concurrency"] == concurrency)
            ):
                return row
        return None

    targets: list[dict[str, Any]] = []
    for task, prefix in (("classify", "classify, 1 "), ("energy", "energy, 1 ")):
        one = find(prefix, "service", 1)
        if one is not None:
            p50 = one.summary["p50_ms"]
            targets.append(
                {
                    "target": f"{task}, 1 item, concurrency 1: p50 <= 2 ms",
                    "measured": f"p50 {p50:.2f} ms",
                    "met": p50 <= 2.0 and one.summary["errors"] == 0,
                }
            )
        ours, naive = find(prefix, "service", 64), find(prefix, "naive", 64)
        if ours is not None and naive is not None:
            ratio = ours.summary["rps"] / naive.summary["rps"] if naive.summary["rps"] else 0
            p99 = ours.summary["p99_ms"]
            targets.append(
                {
                    "target": f"{task}, 1 item, concurrency 64: >= 20x naive req/s, p99 <= 50 ms",
                    "measured": f"{ratio:.1f}x naive, p99 {p99:.1f} ms",
                    "met": ratio >= 20 and p99 <= 50 and ours.summary["errors"] == 0,
                }
            )
    for row in rows:
        if not row.extra.get("bulk") or row.server != "service":
            continue
        model_raw = raw.get(row.extra["model"], {}).get(RAW_BATCH)
        if not model_raw:
            continue
        fraction = row.summary["items_per_s"] / model_raw["items_per_s"]
        targets.append(
            {
                "target": f"{row.scenario}, concurrency {row.summary['concurrency']}: "
                f">= 50% of raw batch-{RAW_BATCH} throughput",
                "measured": f"{fraction:.0%} ({_fmt(row.summary['items_per_s'])} of "
                f"{_fmt(model_raw['items_per_s'])} items/s)",
                "met": fraction >= 0.5 and row.summary["errors"] == 0 and row.check is None,
            }
        )
    return targets


def render_markdown(report: dict[str, Any]) -> str:
    """The results file: machine, command, tables, targets, memory, notes."""
    machine = report["machine"]
    out = [
        f"# Serving benchmark, {report['date']}, commit {report['commit']}"
        + (" (+ uncommitted changes in service/, bench/ or models/)" if report["dirty"] else ""),
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; "
        f"Python {machine['python']}, TensorFlow {machine['tensorflow']}, uvicorn "
        f"{machine['uvicorn']} (uvloop {machine['uvloop']}, httptools {machine['httptools']}), "
        f"FastAPI {machine['fastapi']}; load average before the run "
        f"{', '.join(map(str, machine['load_before']))}.",
        "",
        f"Models: {', '.join(f'{k} v{v}' for k, v in report['models'].items()) or 'none'} "
        f"from `{report['model_dir']}`. Service workers: {report['workers']}. Client: "
        f"{report['client']}, each run at most {_fmt(report['max_requests'])} requests "
        f"(bulk {_fmt(report['bulk_max_requests'])}) or {report['duration_s']:g} s, after a "
        f"{report['warmup_s']:g} s warm-up.",
        "",
        "## Load",
        "",
        *load_table(report["rows"], report["raw"]),
        "",
        "*ours / naive*: requests/s of our service over the naive server's at the same "
        f"concurrency. *of raw*: served items/s over the raw in-process batch-{RAW_BATCH} "
        "throughput of the same model. CPU columns: CPU seconds per request of the load "
        "generator and of the server processes over the run (2 cores = 2,000,000 us/s).",
    ]
    wrong = [row for row in report["rows"] if row.check]
    if wrong:
        out += ["", "Wrong or unreadable answers:", ""]
        out += [f"- {row.scenario} ({row.server}): {row.check}" for row in wrong]
    out += [
        "",
        "## Raw in-process throughput (signature called in a loop, one pre-built tensor)",
        "",
        "| model | batch | items/s | ms per call |",
        "| --- | ---: | ---: | ---: |",
    ]
    for model, by_batch in report["raw"].items():
        for batch, stats in sorted(by_batch.items()):
            out.append(
                f"| {model} | {batch:,} | {_fmt(stats['items_per_s'])} "
                f"| {stats['ms_per_call']:.2f} |"
            )
    if report.get("ceiling"):
        out += [
            "",
            "## Load generator ceiling (against a canned-response asyncio server)",
            "",
            "| client | conc. | requests | req/s | p50 ms | p99 ms | client CPU us/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for client, summary in report["ceiling"]:
            out.append(
                f"| {client} | {summary['concurrency']} | {_fmt(summary['requests'])} "
                f"| {_fmt(summary['rps'])} | {_fmt(summary['p50_ms'], 3)} "
                f"| {_fmt(summary['p99_ms'], 3)} | {_fmt(summary['client_cpu_us_per_req'], 0)} |"
            )
    out += ["", "## Targets (issue 5)", "", "| target | measured | met |", "| --- | --- | --- |"]
    for target in report["targets"]:
        out.append(
            f"| {target['target']} | {target['measured']} | {'yes' if target['met'] else 'NO'} |"
        )
    if report.get("memory"):
        out += [
            "",
            "## Memory of the service by uvicorn workers (idle, after start-up and warm-up)",
            "",
            "| workers | process | VmRSS MiB | Pss MiB |",
            "| ---: | --- | ---: | ---: |",
        ]
        for entry in report["memory"]:
            for proc in entry["processes"]:
                out.append(
                    f"| {entry['workers']} | {proc['role']} | {proc['rss'] / 1024:.0f} "
                    f"| {proc.get('pss', 0) / 1024:.0f} |"
                )
            out.append(
                f"| {entry['workers']} | **total** | {entry['rss'] / 1024:.0f} "
                f"| {entry['pss'] / 1024:.0f} |"
            )
    if report.get("profiles"):
        out += [
            "",
            "## Profile of the service (py-spy, separate unmeasured runs)",
            "",
            "Shares of the samples in which a thread of the server was running Python (or a C "
            "call made from it, such as TensorFlow's kernels), by the package of the innermost "
            "frame, then by function including its callees.",
        ]
        for title, profile in report["profiles"]:
            out += ["", f"### {title}", "", *profile_lines(profile)]
    if report.get("notes"):
        out += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"


def write_results(report: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """`serving-<date>-<commit>.md` under `directory`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    day = report["date"][:10]
    path = directory / f"serving-{day}-{report['commit']}.md"
    path.write_text(render_markdown(report), encoding="utf-8")
    return path


# Memory ---------------------------------------------------------------------------------------


def measure_memory(
    model_dir: Path, models: Sequence[str], workers: int, log_dir: Path, settle_s: float = 3.0
) -> dict[str, Any]:
    """RSS and PSS of every process of the service with `workers` workers, once ready."""
    server = our_server(model_dir, models, workers, log_dir, 1024)
    with running(server):
        time.sleep(settle_s)
        pids = server.pids()
        processes = []
        for pid in pids:
            mem = memory_kib(pid)
            if not mem:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmdline = ""
            if pid == pids[0]:
                role = "uvicorn (serves)" if workers == 1 else "uvicorn supervisor"
            elif "multiprocessing" in cmdline and "resource_tracker" in cmdline:
                role = "resource tracker"
            else:
                role = "worker"
            processes.append({"pid": pid, "role": role, **mem})
    return {
        "workers": workers,
        "processes": processes,
        "rss": sum(p.get("rss", 0) for p in processes),
        "pss": sum(p.get("pss", 0) for p in processes),
    }


# Main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench serving",
        description="Benchmark our model server against a naive model.predict server.",
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of our service")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES), metavar="N"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (limit)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="requests per run")
    parser.add_argument("--bulk-max-requests", type=int, default=300, help="per bulk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    parser.add_argument("--bulk-images", type=int, default=10_000)
    parser.add_argument("--bulk-arrays", type=int, default=10_000)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=["single", "bulk"],
        default=["single", "bulk"],
        help="one item per request (JSON), bulk .npy requests, or both",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["raw", "ceiling", "service", "naive", "memory"],
        default=["raw", "ceiling", "service", "naive", "memory"],
        help="parts to run (all by default)",
    )
    parser.add_argument(
        "--allow-training",
        action="store_true",
        help="run even while `python -m training` is running (numbers then are not honest)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each measured run of our service, profile an extra run with py-spy",
    )
    parser.add_argument("--profile-concurrency", type=int, nargs="+", default=[1, 64], metavar="N")
    parser.add_argument(
        "--profile-dir", type=Path, default=None, help="keep py-spy's collapsed stacks here"
    )
    parser.add_argument(
        "--wait-for-training",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for a running `python -m training` to finish first",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so that `running()` stops the server it started

    signal.signal(signal.SIGTERM, interrupted)
    busy = training_running()
    waited_until = time.monotonic() + args.wait_for_training
    while busy and time.monotonic() < waited_until:
        print(f"waiting for training to finish: {busy[0]}", flush=True)
        time.sleep(min(30.0, max(1.0, waited_until - time.monotonic())))
        busy = training_running()
    if busy and not args.allow_training:
        print(
            "training is running on this machine; its load would distort the figures:\n  "
            + "\n  ".join(busy)
            + "\nwait for it to finish (or pass --allow-training for a smoke run)",
            file=sys.stderr,
        )
        return 3
    model_dir = args.model_dir.resolve()
    wanted = ("digit_classifier", "energy_from_potential")
    # Every model of the contract that is committed gets loaded (readiness waits for them all),
    # as in production; the load scenarios use two of them.
    contract = (
        "digit_classifier",
        "digit_encoder",
        "digit_decoder",
        "energy_from_potential",
        "energy_from_density",
    )
    present = {name: latest_version(model_dir, name) for name in contract}
    loaded = [name for name, path in present.items() if path is not None]
    models = [name for name in wanted if present[name] is not None]
    if not models:
        print(f"no SavedModels of {wanted} under {model_dir}", file=sys.stderr)
        return 2
    commit, dirty = git_commit()
    notes: list[str] = []
    if busy:
        notes.append("training was running during this run: the figures are not honest ones")
    for name in wanted:
        if present[name] is None:
            notes.append(f"{name} is not under {model_dir}: its scenarios were skipped")
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "command": "python -m bench serving " + " ".join(argv or []),
        "machine": machine_info(),
        "model_dir": os.path.relpath(model_dir, REPO)
        if model_dir.is_relative_to(REPO)
        else model_dir,
        "models": {name: int(path.name) for name, path in present.items() if path is not None},
        "workers": args.workers,
        "client": args.client,
        "duration_s": args.duration,
        "max_requests": args.max_requests,
        "bulk_max_requests": args.bulk_max_requests,
        "warmup_s": args.warmup,
        "rows": [],
        "raw": {},
        "ceiling": [],
        "targets": [],
        "memory": [],
        "profiles": [],
        "notes": notes,
    }
    print(f"machine: {report['machine']}", flush=True)
    all_scenarios = [
        s
        for s in scenarios(args.bulk_images, args.bulk_arrays)
        if s.model in models and ("bulk" if s.bulk else "single") in args.scenarios
    ]

    if "raw" in args.only:
        for name in loaded:
            path = present[name]
            assert path is not None
            sizes = sorted(
                {RAW_BATCH, *(s.items for s in all_scenarios if s.model == name and s.bulk)}
            )
            report["raw"][name] = {}
            for batch in sizes:
                stats = raw_throughput(path, batch)
                report["raw"][name][batch] = stats
                print(
                    f"raw {name} batch {batch}: {stats['items_per_s']:,.0f} items/s "
                    f"({stats['ms_per_call']:.2f} ms per call)",
                    flush=True,
                )

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        log_dir = Path(tmp)
        if "ceiling" in args.only:
            with running(canned_server(log_dir)) as server:
                for client in ("raw", "httpx"):
                    for concurrency in (1, 64):
                        result = asyncio.run(
                            run_load(
                                "127.0.0.1",
                                server.port,
                                [Request("POST", "/", b"{}", (("Content-Type", JSON),))],
                                concurrency,
                                args.max_requests,
                                min(args.duration, 5.0),
                                client=client,
                            )
                        )
                        summary = result.summary()
                        report["ceiling"].append((client, summary))
                        print(
                            f"ceiling {client} c={concurrency}: {summary['rps']:,.0f} req/s, "
                            f"p50 {summary['p50_ms']:.3f} ms, client CPU "
                            f"{summary['client_cpu_us_per_req']:.0f} us/req",
                            flush=True,
                        )

        servers: list[tuple[str, Callable[[], Server]]] = []
        if "service" in args.only:
            max_items = max([s.items for s in all_scenarios] + [1024])
            servers.append(
                ("service", lambda: our_server(model_dir, loaded, args.workers, log_dir, max_items))
            )
        if "naive" in args.only:
            servers.append(("naive", lambda: naive_server(model_dir, log_dir)))
        for name, make in servers:
            server = make()
            with running(server):
                for scenario in all_scenarios:
                    if name == "naive" and not scenario.naive:
                        continue
                    for concurrency in args.concurrency:
                        intruders = training_running()
                        if intruders:
                            report["notes"].append(
                                f"training was running at the start of {name} / {scenario.name} "
                                f"/ concurrency {concurrency}: not an honest figure "
                                f"({intruders[0]})"
                            )
                        row = drive(
                            server,
                            scenario,
                            concurrency,
                            args.bulk_max_requests if scenario.bulk else args.max_requests,
                            args.duration,
                            args.client,
                            args.warmup,
                        )
                        row.extra = {"model": scenario.model, "bulk": scenario.bulk}
                        report["rows"].append(row)
                        if (
                            args.profile
                            and name == "service"
                            and concurrency in args.profile_concurrency
                        ):
                            stacks_dir = args.profile_dir or log_dir
                            stacks_dir.mkdir(parents=True, exist_ok=True)
                            slug = "".join(c if c.isalnum() else "-" for c in scenario.name)
                            profile = profile_run(
                                server,
                                scenario,
                                concurrency,
                                args.bulk_max_requests if scenario.bulk else args.max_requests,
                                min(args.duration, 6.0),
                                args.client,
                                stacks_dir / f"{slug}-c{concurrency}.txt",
                            )
                            report["profiles"].append(
                                (f"{scenario.name}, concurrency {concurrency}", profile)
                            )
                        s = row.summary
                        print(
                            f"{name:8s} {scenario.name:34s} c={concurrency:<3d} "
                            f"{s['rps']:9,.1f} req/s {s['items_per_s']:11,.0f} items/s "
                            f"p50 {s['p50_ms']:8.2f} ms p99 {s['p99_ms']:8.2f} ms "
                            f"errors {s['errors']}"
                            + (f"  CHECK: {row.check}" if row.check else ""),
                            flush=True,
                        )

        if "memory" in args.only:
            for workers in (1, 2):
                entry = measure_memory(model_dir, loaded, workers, log_dir)
                report["memory"].append(entry)
                print(
                    f"memory, {workers} worker(s): RSS {entry['rss'] / 1024:.0f} MiB, "
                    f"PSS {entry['pss'] / 1024:.0f} MiB over {len(entry['processes'])} processes",
                    flush=True,
                )

    after = training_running()
    if after and not busy:
        report["notes"].append("training started during this run: the figures are not honest")
    report["targets"] = evaluate_targets(report["rows"], report["raw"])
    text = render_markdown(report)
    print()
    print(text)
    if not args.no_write:
        path = write_results(report, args.results_dir)
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
