"""Soak: the real server open loop at a calibrated rate, a mix of every route; errors, latency
over time and memory growth after the warm-up (``make soak``; bench/README.md)."""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bodies as wire
from bench import driver, harness
from bench.driver import Body, Sample
from bench.harness import Server, fmt

DIGITS, DENSITY = "/api/v1/digits", "/api/v1/energy/from-density"
GROWTH = 0.05  # the target: resident memory grows less after the warm-up


def workload(models: Sequence[str], code: str | None) -> list[tuple[str, Body]]:
    """(name, request) pairs, one item each, for the models that are served."""
    image, potential = wire.CLASSIFY.inputs(1, 1), wire.ENERGY.inputs(1, 2)
    x = [-15.0 + 30.0 * i / 63 for i in range(64)]
    density = [math.exp(-0.5 * v**2) for v in x]
    density = [v / (sum(density) * 30.0 / 63) for v in density]
    digits = {"images": image[0, ..., 0].tolist(), "scale": "unit"}
    pairs = {
        "classify": ("digit_classifier", wire.task_json(wire.CLASSIFY, image)),
        "tfserving classify": ("digit_classifier", wire.tfserving_row(wire.CLASSIFY, image)),
        "compress": ("digit_encoder", wire.json_body(f"{DIGITS}/compress", digits)),
        "decompress": ("digit_decoder", wire.json_body(f"{DIGITS}/decompress", {"codes": [code]})),
        "energy": ("energy_from_potential", wire.task_json(wire.ENERGY, potential)),
        "v2 energy": ("energy_from_potential", wire.v2_json(wire.ENERGY, potential)),
        "density": ("energy_from_density", wire.json_body(DENSITY, {"densities": density})),
    }
    codec = "digit_encoder" in models and "digit_decoder" in models
    return [
        (name, body)
        for name, (model, body) in pairs.items()
        if model in models
        and (codec or model not in ("digit_encoder", "digit_decoder"))
        and (name != "decompress" or code is not None)
    ]


@dataclass
class SoakRun:
    rate: float
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    rss_kib: list[tuple[float, int]] = field(default_factory=list)  # (seconds, VmRSS)


async def soak(
    port: int,
    pairs: Sequence[tuple[str, Body]],
    rate: float,
    duration_s: float,
    burst: int,
    rss: Callable[[], int],
) -> SoakRun:
    """`driver.open_loop` (256 connections at most), the server's VmRSS (`rss`) every second."""
    run, start = SoakRun(rate, duration_s), time.perf_counter()
    load = asyncio.create_task(driver.open_loop(port, pairs, rate, duration_s, burst=burst))
    while not load.done():
        run.rss_kib.append((time.perf_counter() - start, rss()))
        await asyncio.wait([load], timeout=1.0)
    run.rss_kib.append((time.perf_counter() - start, rss()))
    run.samples = load.result()
    return run


def figures(samples: Sequence[Sample], elapsed_s: float) -> dict[str, Any]:
    """Requests, answers 200, errors, rate and latency of the samples (`driver.summary`)."""
    ok = [s.latency_s for s in samples if s.status == 200]
    return driver.summary(0, 1, ok, len(samples) - len(ok), elapsed_s, math.nan)


def summarise(run: SoakRun, window_s: float, warmup_s: float = 0.0) -> dict[str, Any]:
    """Errors by kind, latency, memory growth (from the start and after the warm-up), windows."""
    errors = Counter(f"{s.kind}: {s.status}" for s in run.samples if s.status != 200)
    rss = [kib / 1024 for _, kib in run.rss_kib]
    warm = next((kib / 1024 for t, kib in run.rss_kib if t >= warmup_s), rss[-1])
    windows = []
    for w in range(max(1, math.ceil(run.duration_s / window_s))):
        low, high = w * window_s, (w + 1) * window_s
        inside = [s for s in run.samples if low <= s.scheduled_s < high]
        before = [kib / 1024 for t, kib in run.rss_kib if t <= high]
        window = f"{low:g}-{min(high, run.duration_s):g} s"
        rss_mib = before[-1] if before else math.nan
        windows.append({"window": window, **figures(inside, window_s), "rss_mib": rss_mib})
    return {
        "rate": run.rate,
        "duration_s": run.duration_s,
        **figures(run.samples, run.duration_s),
        "error_kinds": dict(errors),
        **{"rss_start_mib": rss[0], "rss_end_mib": rss[-1], "rss_peak_mib": max(rss)},
        "rss_growth": rss[-1] / rss[0] - 1 if rss[0] else math.nan,
        "warmup_s": warmup_s,
        "rss_after_warmup_mib": warm,
        "rss_growth_after_warmup": rss[-1] / warm - 1 if warm else math.nan,
        "windows": windows,
    }


def render_markdown(report: dict[str, Any]) -> str:
    s, cal = report["soak"], report["calibration"]
    growth, warm, end = s["rss_growth_after_warmup"], s["rss_after_warmup_mib"], s["rss_end_mib"]
    latency = " / ".join(fmt(s[k]) for k in ("p50_ms", "p99_ms", "max_ms"))
    after = f"after the warm-up ({s['warmup_s']:.0f} s, {fmt(warm)} MiB): {growth:+.1%}"
    kinds = ", ".join(f"{k}: {v}" for k, v in s["error_kinds"].items())
    columns = ("window", "requests", "errors", "p50_ms", "p99_ms", "max_ms", "rss_mib")
    lines = [
        f"Models: {report['models_source']} ({', '.join(report['models'])}); RSS after start-up "
        f"{report['rss_after_start_mib']:.1f} MiB; ready after the soak: {report['ready_after']}.",
        "",
        f"Calibration: closed loop, {cal['concurrency']} connections, {cal['elapsed_s']:.1f} s: "
        f"{cal['rps']:.1f} requests/s (p99 {cal['p99_ms']:.1f} ms, errors {cal['errors']}). Soak: "
        f"open loop at {report['utilisation']:.0%} of that, **{s['rate']:.1f} requests/s** for "
        f"{s['duration_s']:g} s, round-robin over: {', '.join(report['workload'])}; "
        f"{report.get('burst', 1)} request(s) of one kind at a time.",
        *harness.section(
            "Result",
            f"- requests scheduled {s['requests']}, answered 200 {s['ok']} "
            f"({s['rps']:.1f}/s); latency p50 / p99 / max {latency} ms",
            f"- resident memory {fmt(s['rss_start_mib'])} MiB at the start, {fmt(end)} at the end"
            f" (peak {fmt(s['rss_peak_mib'])}): {s['rss_growth']:+.1%} from the start",
            "- " + harness.verdict(s["errors"] == 0, f"errors {s['errors']} (target 0)"),
            "- "
            + harness.verdict(growth < GROWTH, f"memory growth {after} (target < {GROWTH:.0%})"),
        ),
        *([f"\nErrors by kind: {kinds}"] if kinds else []),
        *harness.section(
            "Over time (latency from the scheduled send; the server's VmRSS at the window's end)",
            *harness.table(
                "window | requests: | errors: | p50 ms: | p99 ms: | max ms: | RSS MiB:",
                ([w[k] for k in columns] for w in s["windows"]),
            ),
        ),
    ]
    if report.get("batch_sizes"):
        calls = {
            m: ", ".join(f"{k}: {v}" for k, v in n.items())
            for m, n in report["batch_sizes"].items()
        }
        lines += harness.section(
            "As the server reports it (`/v2/models/{name}/config` and `/stats`)",
            *harness.table(
                "model | batching | model calls by batch size",
                ([m, report["config"].get(m, "-"), c or "none"] for m, c in calls.items()),
            ),
        )
    return harness.document(report, "Soak", lines)


def server_view(server: Server, model: str) -> tuple[str, dict[int, int]]:
    """The model's batching as its Triton-style config says, and its calls by batch size."""
    status, _, body = harness.request_once(server.url, Body("GET", f"/v2/models/{model}/config"))
    config = json.loads(body) if status == 200 else {}
    batching = "on" if "dynamic_batching" in config else "off"
    status, _, body = harness.request_once(server.url, Body("GET", f"/v2/models/{model}/stats"))
    counts: dict[int, int] = {}
    for version in json.loads(body).get("model_stats", []) if status == 200 else []:
        for batch in version.get("batch_stats", []):
            size = int(batch["batch_size"])
            counts[size] = counts.get(size, 0) + int(batch["compute_infer"]["count"])
    return f"{batching}, max {config.get('max_batch_size', '?')}", dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("soak", __doc__)
    p.add_argument("--tiny", action="store_true", help="serve the tiny contract models")
    p.add_argument("--duration-s", type=float, default=60.0, help="soak length (default 60)")
    p.add_argument("--window-s", type=float, default=5.0, help="report window (default 5)")
    p.add_argument("--warmup-s", type=float, help="memory growth from here (default: a sixth)")
    p.add_argument("--burst", type=int, default=1, help="requests of one kind sent at once")
    p.add_argument("--calibrate-s", type=float, default=10.0, help="closed-loop calibration")
    p.add_argument("--concurrency", type=int, default=8, help="calibration connections")
    p.add_argument("--utilisation", type=float, default=0.8, help="soak rate / calibrated rate")
    args = harness.parse(p, argv)
    if harness.refuse_while_training(args):
        return 3
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        model_dir, source = args.model_dir.resolve(), f"committed models ({args.model_dir})"
        if args.tiny:
            from training.tiny_models import build_tiny_models

            model_dir, source = build_tiny_models(work / "models"), "tiny contract models"
        models = list(harness.models(model_dir))
        if not models:
            print(f"no SavedModels under {model_dir}; train them or pass --tiny")
            return 2
        with harness.running(harness.our_server(model_dir, models, 1, work)) as server:
            code, rss_after_start = None, server.rss_kib()
            if "digit_encoder" in models:
                digits = {"images": wire.images(1, 7).tolist(), "scale": "unit"}
                compress = wire.json_body(f"{DIGITS}/compress", digits)
                status, _, body = harness.request_once(server.url, compress)
                code = json.loads(body)["codes"][0] if status == 200 else None
            pairs = workload(models, code)
            bodies, duration = [b for _, b in pairs], args.calibrate_s
            calibration = driver.run(
                server.url, bodies, args.concurrency, duration, work, client="raw"
            )
            rate = max(1.0, calibration["rps"] * args.utilisation)
            print(f"calibration: {calibration['rps']:.1f} req/s; soaking at {rate:.1f}", flush=True)
            loop = soak(server.port, pairs, rate, args.duration_s, args.burst, server.rss_kib)
            run = asyncio.run(loop)
            ready = harness.request_once(server.url, Body("GET", "/v2/health/ready"))[0]
            views = {model: server_view(server, model) for model in models}
    warmup = args.duration_s / 6 if args.warmup_s is None else args.warmup_s
    report = harness.new_report("soak", args.argv, models_source=source, models=models)
    report |= {"workload": [name for name, _ in pairs], "utilisation": args.utilisation}
    report |= {"calibration": {**calibration, "concurrency": args.concurrency}}
    report |= {"rss_after_start_mib": rss_after_start / 1024, "burst": args.burst}
    report |= {"config": {m: v[0] for m, v in views.items()}, "ready_after": ready}
    report |= {"batch_sizes": {m: v[1] for m, v in views.items()}}
    report["soak"] = summarise(run, args.window_s, warmup)
    harness.publish(report, render_markdown(report), args)
    s = report["soak"]
    return 0 if s["errors"] == 0 and s["rss_growth_after_warmup"] < GROWTH else 1


if __name__ == "__main__":
    raise SystemExit(main())
