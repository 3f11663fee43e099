"""The harness every benchmark scenario stands on (bench/README.md: layout, scenario API):
the launcher, the argument base, one load point (`measure`) and the results writer."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import driver
from bench.driver import Body

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"


def models(model_dir: Path | None = None) -> tuple[str, ...]:
    """Every model name of the service's contract, or those with a version in `model_dir`."""
    from service.tasks import model_names

    return tuple(m for m in model_names() if model_dir is None or latest_version(model_dir, m))


def latest_version(model_dir: Path, name: str) -> Path | None:
    found = [p.parent for p in (model_dir / name).glob("*/saved_model.pb")]
    return max((p for p in found if p.name.isdigit()), key=lambda p: int(p.name), default=None)


def parser(
    name: str,
    doc: str | None,
    *,
    duration: tuple[float, float] | None = None,
    warmup: tuple[float, float] | None = None,
    rounds: tuple[int, int] | None = None,
    concurrency: Sequence[int] | None = None,
    results: bool = True,
) -> argparse.ArgumentParser:
    """The argument base; a (quick, full) pair adds the option with its two presets; `results`
    the options of a scenario that writes a results file."""
    p = argparse.ArgumentParser(prog=f"python -m bench {name}", description=doc)
    given = {"duration": duration, "warmup": warmup, "rounds": rounds}
    presets: dict[str, tuple[float, float]] = {k: v for k, v in given.items() if v is not None}
    if presets:
        p.add_argument("--quick", action="store_true", help="the short preset")
    for key, (quick, full) in presets.items():
        kind = int if key == "rounds" else float
        p.add_argument(f"--{key}", type=kind, help=f"default {full:g}, --quick {quick:g}")
    if concurrency is not None:
        p.add_argument("--concurrency", type=int, nargs="+", default=list(concurrency))
    p.add_argument("--model-dir", "--models-dir", type=Path, default=REPO / "models")
    if results:
        p.add_argument("--results-dir", "--out", type=Path, default=RESULTS_DIR)
        p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--allow-training", action="store_true", help="run while training runs")
    p.set_defaults(_presets=presets)
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    for key, (quick, full) in args._presets.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def training_running() -> list[str]:
    """Command lines of `python -m training` processes (someone else's load on the machine)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                if "-m training" in cmdline:
                    found.append(f"{proc.name}: {cmdline}")
    return found


def refuse_while_training(args: argparse.Namespace) -> bool:
    """True (and a message) when training runs and the run should not start."""
    if (busy := training_running()) and not args.allow_training:
        print("training runs here (--allow-training for a smoke run):", *busy, file=sys.stderr)
        return True
    return False


def _version(*dists: str) -> str:
    for dist in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return "not installed"


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, versions and the load average before the run."""
    info: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)), "cpu": platform.processor()}
    with contextlib.suppress(OSError):
        cpu = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x]
        info["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu else info["cpu"] or "unknown"
        kib = Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0]
        info["memory_gib"] = round(int(kib) / 1024**2, 1)
    info["python"] = platform.python_version()
    info["tensorflow"] = _version("tensorflow", "tensorflow-cpu")
    info |= {dist: _version(dist) for dist in ("uvicorn", "fastapi", "uvloop", "httptools")}
    return info | {"load_before": [round(x, 2) for x in os.getloadavg()]}


def git_commit() -> tuple[str, bool]:
    """Short commit of HEAD and whether service/, bench/ or models/ differ from it."""
    git = ["git", "-C", str(REPO)]
    try:
        commit = subprocess.check_output([*git, "rev-parse", "--short", "HEAD"], text=True)
        paths = ["status", "--porcelain", "--", "service", "bench", "models"]
        dirty = subprocess.check_output([*git, *paths], text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit.strip(), bool(dirty.strip())


def new_report(name: str, argv: Sequence[str], **fields: Any) -> dict[str, Any]:
    commit, dirty = git_commit()
    return {
        "name": name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "command": " ".join(["python -m bench", name, *argv]),
        "machine": machine_info(),
        "contended": "; ".join(training_running()),
        "notes": [],
        **fields,
    }


def document(report: dict[str, Any], title: str, lines: Iterable[str]) -> str:
    """A results file's text: title, command, machine and contention, `lines`, then the notes."""
    m, contended = report["machine"], report.get("contended")
    dirty = " (+ uncommitted changes in service/, bench/ or models/)" if report["dirty"] else ""
    wall = f"; wall time {report['wall_s'] / 60:.1f} min" if "wall_s" in report else ""
    notes = [f"- {n}" for n in report.get("notes", [])]
    text = [
        f"# {title}, {report['date']}, commit {report['commit']}{dirty}",
        "",
        f"Command: `{report['command']}`{wall}.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m.get('memory_gib', '?')} GiB; Python "
        f"{m['python']}, TensorFlow {m['tensorflow']}, uvicorn {m.get('uvicorn', '?')}; load "
        f"average before the run {', '.join(map(str, m['load_before']))} (a machine shared "
        "with other work: compare figures within one run).",
        "",
        *(
            [f"**Contended run** ({contended}): only ratios within it count.", ""]
            if contended
            else []
        ),
        *lines,
        *(section("Notes", *notes) if notes else []),
    ]
    return "\n".join(text) + "\n"


def write(report: dict[str, Any], text: str, directory: Path, label: str = "") -> Path:
    """`<name><label>-<date>-<commit>.md` (and `.json` of the report) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{report['name']}{label}-{report['date'][:10]}-{report['commit']}.md"
    path.write_text(text, encoding="utf-8")
    if isinstance(report.get("stats"), dict):  # keyed by tuples: rows of key parts + figures
        report = {**report, "stats": [[*k, v] for k, v in report["stats"].items()]}
    path.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return path


def publish(report: dict[str, Any], text: str, args: argparse.Namespace, label: str = "") -> None:
    """Print the results file's text and write it (and its `.json`) unless `--no-write`."""
    print(text)
    if not args.no_write:
        write(report, text, args.results_dir, label)


def verdict(met: bool, what: str) -> str:
    """One target's line: `met: what` or `NOT met: what`."""
    return f"{'met' if met else 'NOT met'}: {what}"


def section(title: str, *lines: str) -> list[str]:
    """A results file's `## title` section (after a blank line)."""
    return ["", f"## {title}", "", *lines]


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: '-' for no figure, thousands separators from 1,000."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(head: str, rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table; `head` is "a | b: | c:" (a trailing ':' right-aligns the column);
    cells that are not strings go through `fmt`."""
    cols = [c.strip() for c in head.split("|")]
    out = ["| " + " | ".join(c.rstrip(":") for c in cols) + " |"]
    out.append("| " + " | ".join("---:" if c.endswith(":") else "---" for c in cols) + " |")
    out += ["| " + " | ".join(v if isinstance(v, str) else fmt(v) for v in r) + " |" for r in rows]
    return out


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(statistics.median(finite)) if finite else math.nan


def ratio(a: float, b: float) -> float:
    return math.nan if not b or math.isnan(a) or math.isnan(b) else a / b


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's worker processes)."""
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        with contextlib.suppress(OSError):
            todo += map(int, Path(f"/proc/{current}/task/{current}/children").read_text().split())
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes, from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (shared pages in full) and Pss (shared pages split) in KiB."""
    out: dict[str, int] = {}
    for key, name, file in (("rss", "VmRSS:", "status"), ("pss", "Pss:", "smaps_rollup")):
        with contextlib.suppress(OSError, IndexError):
            out[key] = int(Path(f"/proc/{pid}/{file}").read_text().split(name)[1].split()[0])
    return out


def request_once(
    base_url: str, body: Body, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        base_url + body.path, body.payload or None, dict(body.headers), method=body.method
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


@dataclass
class Server:
    """A server subprocess in its own session, so that stopping it stops its workers too."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    ready_path: str = "/v2/health/ready"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300.0) -> float:
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
        while time.perf_counter() < start + timeout_s:
            if (code := self.process.poll()) is not None:
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                if request_once(self.url, Body("GET", self.ready_path), 2.0)[0] == 200:
                    return time.perf_counter() - start
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_s:g} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def rss_kib(self) -> int:
        """VmRSS of the server's main process."""
        return memory_kib(self.process.pid).get("rss", 0) if self.process else 0

    def memory_mib(self) -> tuple[float, float]:
        """VmRSS and Pss summed over the process tree, MiB."""
        mems = [memory_kib(pid) for pid in self.pids()]
        return sum(m.get("rss", 0) for m in mems) / 1024, sum(m.get("pss", 0) for m in mems) / 1024

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # our child's own group (start_new_session)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through `running`, which stops the server


@contextlib.contextmanager
def running(server: Server, timeout_s: float = 300.0) -> Iterator[Server]:
    """The server, started; stopped on leaving, also on an error, Ctrl-C or SIGTERM."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupted) if main else None
    try:
        server.start(timeout_s)
        yield server
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def base_env(ours: bool = True) -> dict[str, str]:
    """Our packages on PYTHONPATH; a peer (`ours=False`) sees only its own venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if ours:
        env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
        env.setdefault("MLDM_GRPC_PORT", "-1")  # gRPC on a free port: no clash on 8081
    return env


def python_server(name: str, module: str, args: Sequence[str], log_dir: Path, **env: str) -> Server:
    """`python -m module --port P args...` of this checkout on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", module, "--port", str(port), *args]
    return Server(name, command, {**base_env(), **env}, port, log_dir / f"{name}-{port}.log")


def our_server(
    model_dir: Path,
    names: Sequence[str],
    workers: int,
    log_dir: Path,
    max_items: int = 1024,
    **env: str,
) -> Server:
    """The service on loopback; readiness waits for `names`; bodies of `max_items` items fit."""
    args = ["--host", "127.0.0.1", "--workers", str(workers), "--log-level", "warning"]
    env = {
        "MLDM_MODEL_DIR": str(model_dir),
        "MLDM_EXPECTED_MODELS": json.dumps(list(names)),
        "MLDM_MAX_ITEMS_PER_REQUEST": str(max(max_items, 1024)),
        "MLDM_MAX_BODY_BYTES": str(max(max_items * 28 * 28 * 4 * 2, 64 * 2**20)),
        **env,
    }
    return python_server("service", "service", args, log_dir, **env)


@contextlib.contextmanager
def serving_only(
    model_dir: Path, names: Sequence[str], log_dir: Path, timeout_s: float = 300.0
) -> Iterator[Server]:
    """Our server (one worker), running, with only the models `names` of `model_dir`."""
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            (Path(root) / name).symlink_to((model_dir / name).resolve())
        with running(our_server(Path(root), names, 1, log_dir), timeout_s) as server:
            yield server


def measure(
    server: Server,
    bodies: Sequence[Body],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    work: Path,
) -> dict[str, Any]:
    """Warm up, then one measured load point; adds the server's CPU us/request and memory."""
    if warmup_s > 0:
        driver.run(server.url, bodies, concurrency, warmup_s, work)
    pids = server.pids()
    before = cpu_seconds(pids)
    result = driver.run(server.url, bodies, concurrency, duration_s, work)
    cpu_s = cpu_seconds(pids) - before
    result["server_cpu_us_per_req"] = cpu_s / max(result["requests"], 1) * 1e6
    result["rss_mib"], result["pss_mib"] = server.memory_mib()
    return result
