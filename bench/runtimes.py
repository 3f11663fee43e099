"""The backends side by side, in process: per committed model version and batch size (1, 8, 64),
the median call time of TensorFlow's signature and of ONNX Runtime's compiled model, the largest
difference to TensorFlow, and what `auto` would pick (docs/runtimes.md).

    python -m bench runtimes [--calls N] [--models-dir DIR] [--out DIR]

Inputs are each version's stored verification batch (real digits, codes, potentials,
densities), tiled to the batch size. Calls alternate between the backends so that a busy machine
slows both alike; the result files record the machine's load average before and after. Then
one fresh process per `MLDM_BACKEND` setting loads every version: its start-up time, resident
memory and whether it imported TensorFlow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.select import choose, tile
from service.backends.verify import VerificationBatch
from service.registry import BackendPolicy, load_version

REPO = Path(__file__).resolve().parent.parent
SIZES = (1, 8, 64)
STARTUP_SETTINGS = ("tensorflow", "auto", "onnxruntime")


def _difference(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over the float outputs; integer outputs must be equal
    (a mismatch shows as inf)."""
    worst = 0.0
    for name, expected in reference.items():
        if expected.dtype.kind in "biu":
            if np.any(got[name] != expected):
                return float("inf")
            continue
        error = np.abs(got[name].astype(np.float64) - expected.astype(np.float64))
        worst = max(worst, float(np.max(error, initial=0.0)))
    return worst


def bench_version(path: Path, calls: int) -> dict[str, Any]:
    tf_backend = load_version(
        path.parent.name, int(path.name), path, BackendPolicy(default="tensorflow")
    ).backends["tensorflow"]
    runners = {"tensorflow": tf_backend, "onnxruntime": OnnxRuntimeBackend.load(path, 1)}
    batch = VerificationBatch.load(path)
    rows: dict[str, Any] = {}
    timings: dict[str, dict[int, float]] = {name: {} for name in runners}
    for size in SIZES:
        inputs = tile(batch.inputs, size)
        outputs = {name: r.run(inputs) for name, r in runners.items()}  # also the warm-up
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(calls):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner.run(inputs)
                samples[name].append(time.perf_counter() - start)
        for name in runners:
            timings[name][size] = statistics.median(samples[name])
        rows[str(size)] = {
            "median_us": {name: round(timings[name][size] * 1e6, 1) for name in runners},
            "max_abs_diff_to_tensorflow": _difference(
                outputs["tensorflow"], outputs["onnxruntime"]
            ),
        }
    return {"sizes": rows, "auto": choose(timings).describe()}


_STARTUP = """
import json, sys, time
start = time.perf_counter()
from service.tasks import model_names
from service.registry import BackendPolicy, ModelRegistry
registry = ModelRegistry(sys.argv[1], model_names(), BackendPolicy(sys.argv[2]))
registry.load(warm_up=True)
seconds = time.perf_counter() - start
lines = [line.split() for line in open("/proc/self/status") if line.startswith("Vm")]
status = {fields[0].rstrip(":"): int(fields[1]) for fields in lines}
print(json.dumps({"ready": registry.ready, "load_s": round(seconds, 1),
    "rss_mib": status["VmRSS"] // 1024, "peak_rss_mib": status["VmHWM"] // 1024,
    "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def startup(models_dir: Path, setting: str) -> dict[str, Any]:
    """A fresh process loads every model with one setting: seconds, resident memory after
    warm-up and its peak (VmHWM: getrusage's maxrss would carry this parent's over exec), and
    whether TensorFlow was imported."""
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _STARTUP, str(models_dir), setting],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Backends in process ({result['date']}, commit {result['commit']})",
        "",
        f"Command: `{result['command']}`. Machine: {result['machine']}. Load average before / "
        f"after: {result['load_before']} / {result['load_after']} - "
        "**a loaded, shared machine** (other jobs ran beside this one): the absolute times are "
        "inflated and noisy; the ratio between backends, measured interleaved, is the figure "
        "to read. Median of "
        f"{result['calls']} calls per cell, microseconds; inputs: each version's stored "
        "verification batch tiled to the batch size; ONNX Runtime with 1 intra-op thread, "
        "TensorFlow with its defaults.",
        "",
        "| model (version) | batch | TensorFlow us | ONNX Runtime us | TF / ORT | max abs diff "
        "to TF | auto picks |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, entry in result["versions"].items():
        for size, row in entry["sizes"].items():
            tf_us, ort_us = row["median_us"]["tensorflow"], row["median_us"]["onnxruntime"]
            pick = next(
                (
                    backend
                    for sizes, backend in entry["auto"].items()
                    if _in_range(int(size), sizes)
                ),
                "?",
            )
            lines.append(
                f"| {key} | {size} | {tf_us:,.0f} | {ort_us:,.0f} | {tf_us / ort_us:.1f}x | "
                f"{row['max_abs_diff_to_tensorflow']:.2g} | {pick} |"
            )
    lines += [
        "",
        "Start-up of a fresh process that loads and warms every committed version with one "
        "`MLDM_BACKEND` setting (the registry alone, no HTTP server):",
        "",
        "| setting | load + warm-up s | resident MiB after | peak resident MiB | TensorFlow "
        "imported |",
        "| --- | --- | --- | --- | --- |",
    ]
    for setting, row in result["startup"].items():
        lines.append(
            f"| `{setting}` | {row['load_s']} | {row['rss_mib']} | {row['peak_rss_mib']} | "
            f"{'yes' if row['tensorflow_imported'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _in_range(size: int, sizes: str) -> bool:
    if sizes.endswith("+"):
        return size >= int(sizes[:-1])
    low, _, high = sizes.partition("-")
    return int(low) <= size <= int(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench runtimes", description=__doc__)
    parser.add_argument("--calls", type=int, default=50, help="timed calls per cell")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    versions = {}
    for path in sorted(p.parent for p in args.models_dir.glob("*/*/model.onnx")):
        key = f"{path.parent.name} ({path.name})"
        versions[key] = bench_version(path, args.calls)
        print(key, json.dumps(versions[key]), flush=True)
    processes = {setting: startup(args.models_dir, setting) for setting in STARTUP_SETTINGS}
    print(json.dumps(processes), flush=True)
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "command": "nice -n 10 python -m bench runtimes " + " ".join(argv or []),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "calls": args.calls,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "startup": processes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"runtimes-{dt.date.today().isoformat()}-{result['commit']}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(_markdown(result))
    print(f"wrote {args.out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
