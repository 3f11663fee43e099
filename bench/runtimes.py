"""The backends side by side, in process (docs/runtimes.md): per committed model version and batch
size, the median call of TensorFlow's signature and of ONNX Runtime's compiled model (and
OpenVINO's, where installed) on the version's verification batch (calls interleaved), their
largest difference and what `measure` would pick; then per `MLDM_BACKEND` setting a fresh
process's start-up, memory and imports."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import harness
from service.backends.base import ONNX_FILE
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.openvino import OpenVinoBackend
from service.backends.select import choose, measure, tile
from service.backends.verify import VerificationBatch, compare
from service.registry import BackendPolicy, load_version

SIZES = (1, 8, 64)
OPENVINO = importlib.util.find_spec("openvino") is not None
STARTUP_SETTINGS = ("tensorflow", "measure", "auto", *(("openvino",) if OPENVINO else ()))


def bench_version(path: Path, calls: int) -> dict[str, Any]:
    tf = load_version(path.parent.name, int(path.name), path, BackendPolicy("tensorflow"))
    ort = OnnxRuntimeBackend.load(path / ONNX_FILE, 1)
    runners = {"tensorflow": tf.backends["tensorflow"], "onnxruntime": ort}
    if OPENVINO:
        runners["openvino"] = OpenVinoBackend.load(path / ONNX_FILE, 1)
    inputs = VerificationBatch.load(path).inputs
    # Interleaved calls, the warm-up included (select.measure, as `measure` does at load).
    timings = measure({n: r.run for n, r in runners.items()}, inputs, SIZES, calls)
    plan, rows = choose(timings), {}
    for size in SIZES:
        outputs = {name: r.run(tile(inputs, size)) for name, r in runners.items()}
        # Float outputs: the largest absolute difference; integer ones: elements that differ.
        diff = [compare(outputs["tensorflow"], outputs[n]).differences for n in list(runners)[1:]]
        rows[str(size)] = {
            "median_us": {name: round(timings[name][size] * 1e6, 1) for name in runners},
            "max_abs_diff_to_tensorflow": max((v for d in diff for v in d.values()), default=0.0),
            "measure_picks": plan.for_size(size),
        }
    return {"sizes": rows, "measure": plan.describe()}


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
    command = [sys.executable, "-c", _STARTUP, str(models_dir), setting]
    done = subprocess.run(command, cwd=harness.REPO, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _markdown(report: dict[str, Any]) -> str:
    rows = []
    for key, entry in report["versions"].items():
        for size, row in entry["sizes"].items():
            tf_us, ort_us = row["median_us"]["tensorflow"], row["median_us"]["onnxruntime"]
            diff, picks = f"{row['max_abs_diff_to_tensorflow']:.2g}", row["measure_picks"]
            ov_us = row["median_us"].get("openvino", "-")
            rows.append([key, size, tf_us, ort_us, ov_us, f"{tf_us / ort_us:.1f}x", diff, picks])
    figures = ("load_s", "rss_mib", "peak_rss_mib")
    starts = (
        [f"`{s}`", *(r[k] for k in figures), "yes" if r["tensorflow_imported"] else "no"]
        for s, r in report["startup"].items()
    )
    lines = [
        f"Load average after: {report['load_after']}. The absolute times are inflated and noisy "
        "on a shared machine; the ratio between backends, measured interleaved, is the figure "
        f"to read. Median of {report['calls']} calls per cell, microseconds; inputs: each "
        "version's stored verification batch tiled to the batch size; ONNX Runtime with 1 "
        "intra-op thread, OpenVINO (if installed) f32, 1 thread, TensorFlow with its defaults.",
        "",
        *harness.table(
            "model (version) | batch | TensorFlow us: | ONNX Runtime us: | OpenVINO us: | TF / ORT "
            "| max abs diff to TF | measure picks",
            rows,
        ),
        "",
        "Start-up of a fresh process that loads and warms every committed version with one "
        "`MLDM_BACKEND` setting (the registry alone, no HTTP server):",
        "",
        *harness.table(
            "setting | load + warm-up s | resident MiB after | peak resident MiB | TensorFlow "
            "imported",
            starts,
        ),
    ]
    return harness.document(report, "Backends in process", lines)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("runtimes", __doc__)
    p.add_argument("--calls", type=int, default=50, help="timed calls per cell")
    args = harness.parse(p, argv)
    report = harness.new_report("runtimes", args.argv, calls=args.calls)
    report["versions"] = {}
    for path in sorted(p.parent for p in args.model_dir.glob("*/*/model.onnx")):
        key = f"{path.parent.name} ({path.name})"
        report["versions"][key] = bench_version(path, args.calls)
        print(key, json.dumps(report["versions"][key]), flush=True)
    report["startup"] = {s: startup(args.model_dir, s) for s in STARTUP_SETTINGS}
    print(json.dumps(report["startup"]), flush=True)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    harness.publish(report, _markdown(report), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
