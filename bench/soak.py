"""Soak test: the real server on loopback for 60 s at the highest rate it sustains.

``python -m bench soak`` (or ``make soak``):

1. starts the service (``python -m service``, one worker) on a free loopback port with the
   committed models (``--model-dir``; ``--tiny`` uses the tiny test models instead);
2. finds the highest sustainable rate: a closed loop at ``--concurrency`` connections for
   ``--calibrate-s`` seconds measures the most requests per second the server completes, and the
   soak runs open-loop at ``--utilisation`` (default 0.8) of that, so a queue that grows shows up
   as rising latency instead of being hidden by a client that waits;
3. sends a mix of requests (every task endpoint with a committed model, TF Serving and V2
   predict, and decompression of codes made at the start) on a fixed schedule for
   ``--duration-s`` seconds, ``--burst`` requests of one kind at a time (so that the server's
   adaptive batching merges them: a batched load); latency is measured from each request's
   scheduled send time;
4. reports errors (target 0), p50/p99/max latency per ``--window-s`` window, the server's
   resident memory (VmRSS) at the start, after ``--warmup-s`` seconds of the soak and at its end
   (issue 15's target: growth after warm-up under 5%), the server's batching settings (batching
   and batch padding as the service's defaults give them unless the environment says otherwise)
   and the batch sizes it ran (its V2 statistics), and writes it all to
   ``bench/results/soak-<date>-<commit>.md``.

It is bounded (the schedule ends, in-flight requests get ``--drain-s`` to finish, the server is
stopped) and refuses to run while ``python -m training`` runs on the machine (its figures would
measure the training, and it would slow the training down) unless ``--allow-training``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import Request, _Connection, percentile, run_load
from bench.serving import (
    REPO,
    RESULTS_DIR,
    Server,
    git_commit,
    http_get,
    images,
    json_request,
    machine_info,
    memory_kib,
    our_server,
    potentials,
    running,
    training_running,
)

MODELS = (
    "digit_classifier",
    "digit_encoder",
    "digit_decoder",
    "energy_from_potential",
    "energy_from_density",
)
ERROR_TARGET = 0
#: Growth of resident memory from the end of the warm-up to the end of the soak (issue 15).
RSS_GROWTH_TARGET = 0.05
#: The warm-up, when ``--warmup-s`` is not given: this fraction of the soak.
WARMUP_FRACTION = 1 / 6


# The workload --------------------------------------------------------------------------------


def _first_code(server: Server) -> str | None:
    """One code made by the running server's encoder, for the decompress requests."""
    import urllib.request

    body = json.dumps({"images": images(1, seed=7).tolist(), "scale": "unit"}).encode()
    request = urllib.request.Request(
        server.url + "/api/v1/digits/compress",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            codes: list[str] = json.loads(response.read())["codes"]
            return codes[0]
    except OSError:
        return None


def workload(models: Sequence[str], code: str | None) -> list[tuple[str, Request]]:
    """(name, request) pairs, one request each, for the models that are served."""
    image = images(1, seed=1)[0].tolist()
    potential = potentials(1, seed=2)[0].tolist()
    x = [-15.0 + 30.0 * i / 63 for i in range(64)]
    density = [math.exp(-0.5 * v * v) for v in x]
    norm = sum(density) * (30.0 / 63)
    density = [v / norm for v in density]
    pairs: list[tuple[str, Request]] = []
    if "digit_classifier" in models:
        pairs.append(
            (
                "classify",
                json_request("/api/v1/digits/classify", {"images": image, "scale": "unit"}),
            )
        )
        pairs.append(
            (
                "tfserving classify",
                json_request(
                    "/v1/models/digit_classifier:predict",
                    {"instances": [[[[p] for p in row] for row in image]]},
                ),
            )
        )
    if "digit_encoder" in models and "digit_decoder" in models:
        pairs.append(
            (
                "compress",
                json_request("/api/v1/digits/compress", {"images": image, "scale": "unit"}),
            )
        )
        if code is not None:
            pairs.append(
                ("decompress", json_request("/api/v1/digits/decompress", {"codes": [code]}))
            )
    if "energy_from_potential" in models:
        pairs.append(
            ("energy", json_request("/api/v1/energy/from-potential", {"potentials": potential}))
        )
        tensor = {"name": "potential", "shape": [1, 64], "datatype": "FP32", "data": potential}
        pairs.append(
            (
                "v2 energy",
                json_request("/v2/models/energy_from_potential/infer", {"inputs": [tensor]}),
            )
        )
    if "energy_from_density" in models:
        pairs.append(
            ("density", json_request("/api/v1/energy/from-density", {"densities": density}))
        )
    return pairs


# The open-loop driver -------------------------------------------------------------------------


@dataclass
class Sample:
    scheduled_s: float  # since the start of the soak
    latency_s: float  # from the scheduled send time to the complete answer
    status: int | str
    kind: str


@dataclass
class SoakRun:
    rate: float
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    rss_kib: list[tuple[float, int]] = field(default_factory=list)  # (seconds, VmRSS)
    unsent: int = 0  # scheduled but never sent: the client had no free connection


async def soak(
    port: int,
    pairs: Sequence[tuple[str, Request]],
    rate: float,
    duration_s: float,
    max_connections: int,
    drain_s: float,
    sample_rss: Callable[[], int],
    rss_every_s: float,
    burst: int = 1,
) -> SoakRun:
    """Send `pairs` round-robin at `rate` per second for `duration_s`, open loop, `burst`
    requests of one kind at each scheduled time (so `rate / burst` bursts per second)."""
    loop = asyncio.get_running_loop()
    authority = f"127.0.0.1:{port}"
    wires = [(kind, request.encode(authority)) for kind, request in pairs]
    idle: list[_Connection] = []
    open_connections = 0
    run = SoakRun(rate, duration_s)
    tasks: set[asyncio.Task[None]] = set()

    async def one(kind: str, wire: bytes, scheduled: float, offset: float) -> None:
        nonlocal open_connections
        connection = idle.pop() if idle else None
        try:
            if connection is None or connection.transport is None:
                _, connection = await loop.create_connection(_Connection, "127.0.0.1", port)
            response = await connection.send(wire)
        except OSError as exc:
            run.samples.append(
                Sample(offset, time.perf_counter() - scheduled, type(exc).__name__, kind)
            )
            open_connections -= 1
            return
        run.samples.append(Sample(offset, time.perf_counter() - scheduled, response.status, kind))
        if connection.transport is not None and response.headers.get("connection") != "close":
            idle.append(connection)
        else:
            open_connections -= 1

    async def rss_sampler(start: float) -> None:
        while True:
            run.rss_kib.append((time.perf_counter() - start, sample_rss()))
            await asyncio.sleep(rss_every_s)

    start = time.perf_counter()
    sampler = asyncio.create_task(rss_sampler(start))
    total = int(rate * duration_s)
    for i in range(total):
        offset = (i - i % burst) / rate  # the burst's requests share its send time
        scheduled = start + offset
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not idle and open_connections >= max_connections:
            run.unsent += 1  # every connection busy: the server is not keeping up
            run.samples.append(Sample(offset, 0.0, "client: no free connection", "-"))
            continue
        if not idle:
            open_connections += 1
        kind, wire = wires[(i // burst) % len(wires)]
        task = asyncio.create_task(one(kind, wire, scheduled, offset))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in pending:
            task.cancel()
        run.samples.extend(
            Sample(duration_s, drain_s, "client: no answer within drain time", "-") for _ in pending
        )
    run.rss_kib.append((time.perf_counter() - start, sample_rss()))
    sampler.cancel()
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    return run


# Statistics ------------------------------------------------------------------------------------


def windows(run: SoakRun, window_s: float) -> list[dict[str, Any]]:
    """Per window of scheduled send time: requests, errors, p50/p99/max latency, RSS at its end."""
    count = max(1, math.ceil(run.duration_s / window_s))
    rows = []
    for w in range(count):
        low, high = w * window_s, (w + 1) * window_s
        inside = [s for s in run.samples if low <= s.scheduled_s < high]
        ok = [s.latency_s for s in inside if s.status == 200]
        rss = [kib for t, kib in run.rss_kib if t <= high]
        rows.append(
            {
                "window": f"{low:g}-{min(high, run.duration_s):g} s",
                "requests": len(inside),
                "errors": len(inside) - len(ok),
                "p50_ms": percentile(ok, 50) * 1e3,
                "p99_ms": percentile(ok, 99) * 1e3,
                "max_ms": max(ok) * 1e3 if ok else math.nan,
                "rss_mib": rss[-1] / 1024 if rss else math.nan,
            }
        )
    return rows


def rss_at(run: SoakRun, seconds: float) -> int:
    """The first RSS sample taken at or after `seconds` into the soak (else the last one)."""
    return next((kib for t, kib in run.rss_kib if t >= seconds), run.rss_kib[-1][1])


def summarise(run: SoakRun, window_s: float, warmup_s: float = 0.0) -> dict[str, Any]:
    ok = [s.latency_s for s in run.samples if s.status == 200]
    errors: dict[str, int] = {}
    for s in run.samples:
        if s.status != 200:
            errors[f"{s.kind}: {s.status}"] = errors.get(f"{s.kind}: {s.status}", 0) + 1
    rss_start, rss_end = run.rss_kib[0][1], run.rss_kib[-1][1]
    growth = (rss_end - rss_start) / rss_start if rss_start else math.nan
    rss_warm = rss_at(run, warmup_s)
    growth_warm = (rss_end - rss_warm) / rss_warm if rss_warm else math.nan
    return {
        "rate": run.rate,
        "duration_s": run.duration_s,
        "requests": len(run.samples),
        "ok": len(ok),
        "errors": len(run.samples) - len(ok),
        "error_kinds": errors,
        "achieved_rps": len(ok) / run.duration_s,
        "p50_ms": percentile(ok, 50) * 1e3,
        "p99_ms": percentile(ok, 99) * 1e3,
        "max_ms": max(ok) * 1e3 if ok else math.nan,
        "rss_start_mib": rss_start / 1024,
        "rss_end_mib": rss_end / 1024,
        "rss_peak_mib": max(kib for _, kib in run.rss_kib) / 1024,
        "rss_growth": growth,
        "warmup_s": warmup_s,
        "rss_after_warmup_mib": rss_warm / 1024,
        "rss_growth_after_warmup": growth_warm,
        "windows": windows(run, window_s),
    }


# Report ---------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    s = report["soak"]
    machine = report["machine"]
    dirty = " (dirty tree)" if report["dirty"] else ""
    errors_met = "met" if s["errors"] <= ERROR_TARGET else "MISSED"
    growth_met = "met" if s["rss_growth_after_warmup"] < RSS_GROWTH_TARGET else "MISSED"
    latency = f"{_f(s['p50_ms'])} / {_f(s['p99_ms'])} / {_f(s['max_ms'])} ms"
    memory = f"{_f(s['rss_start_mib'])} -> {_f(s['rss_end_mib'])} MiB ({_f(s['rss_peak_mib'])})"
    lines = [
        f"# Soak: {report['date']} at {report['commit']}{dirty}",
        "",
        f"`python -m bench soak {' '.join(report['argv'])}`".replace(" `", "`") + "; models: "
        f"{report['models_source']} ({', '.join(report['models'])}).",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, TensorFlow {machine['tensorflow']}, uvicorn "
        f"{machine['uvicorn']}; load average before: {machine['load_before']}; "
        f"`python -m training` running: {'yes' if report['training'] else 'no'}. "
        "The load generator runs on the same cores as the server.",
        "",
        f"Server resident memory right after start-up: {report['rss_after_start_mib']:.1f} MiB; "
        f"readiness after the soak: {report['ready_after']}.",
        "",
        "## Rate",
        "",
        f"Calibration: closed loop, {report['calibration']['concurrency']} connections, "
        f"{report['calibration']['elapsed_s']:.1f} s: {report['calibration']['rps']:.1f} "
        f"requests/s completed (p99 {report['calibration']['p99_ms']:.1f} ms, errors "
        f"{report['calibration']['errors']}). Soak: open loop at {report['utilisation']:.0%} of "
        f"that, **{s['rate']:.1f} requests/s** for {s['duration_s']:g} s, round-robin over: "
        f"{', '.join(report['workload'])}; {report.get('burst', 1)} request(s) of one kind at a "
        "time.",
        "",
        f"Serving: {report.get('serving', 'not recorded')}.",
        "",
        "## Result",
        "",
        "| | value | target | |",
        "| --- | --- | --- | --- |",
        f"| requests scheduled | {s['requests']} | | |",
        f"| answered 200 | {s['ok']} ({s['achieved_rps']:.1f}/s) | | |",
        f"| errors | {s['errors']} | {ERROR_TARGET} | {errors_met} |",
        f"| latency p50 / p99 / max | {latency} | | |",
        f"| resident memory start -> end (peak) | {memory} | | |",
        f"| memory growth from the start | {s['rss_growth']:+.1%} | | |",
        f"| resident memory after the warm-up ({_f(s['warmup_s'], 0)} s) -> end | "
        f"{_f(s['rss_after_warmup_mib'])} -> {_f(s['rss_end_mib'])} MiB | | |",
        f"| memory growth after the warm-up | {s['rss_growth_after_warmup']:+.1%} | "
        f"< {RSS_GROWTH_TARGET:.0%} | {growth_met} |",
        "",
    ]
    if s["error_kinds"]:
        lines += [
            "Errors by kind: " + ", ".join(f"{k}: {v}" for k, v in s["error_kinds"].items()),
            "",
        ]
    lines += [
        "## Over time",
        "",
        "Latency from each request's scheduled send time to its complete answer (so a backlog "
        "shows), by window of send time; memory is the server's VmRSS at the window's end.",
        "",
        "| window | requests | errors | p50 ms | p99 ms | max ms | RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in s["windows"]:
        lines.append(
            f"| {w['window']} | {w['requests']} | {w['errors']} | {_f(w['p50_ms'])} | "
            f"{_f(w['p99_ms'])} | {_f(w['max_ms'])} | {_f(w['rss_mib'])} |"
        )
    lines.append("")
    if report.get("batch_sizes"):
        lines += [
            "## Batch sizes run",
            "",
            "Model calls by batch size (items, before padding) over the whole run, from the "
            "server's `/v2/models/{name}/stats`.",
            "",
            "| model | calls by batch size |",
            "| --- | --- |",
        ]
        for model, sizes in report["batch_sizes"].items():
            cells = ", ".join(f"{size}: {count}" for size, count in sizes.items())
            lines.append(f"| {model} | {cells or 'none'} |")
        lines.append("")
    return "\n".join(lines)


def write_results(report: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"soak-{report['date'][:10]}-{report['commit']}.md"
    path.write_text(render_markdown(report), encoding="utf-8")
    return path


def _serving(model_dir: Path, models: Sequence[str]) -> str:
    """The server's batching and padding, from the service's settings as the server's
    environment gives them (`our_server` sets none of these: the defaults)."""
    from service.settings import Settings

    settings = Settings(model_dir=model_dir, expected_models=tuple(models))
    parts = []
    for model in models:
        enabled, size, wait_s = settings.batching_for(model)
        pads = settings.pad_sizes_for(model)
        parts.append(
            f"{model}: batching {'on' if enabled else 'off'} (max {size} items, wait "
            f"{wait_s * 1e3:g} ms), padded to {list(pads) if pads else 'no padding'}"
        )
    return "; ".join(parts)


def _batch_sizes(server: Server, model: str) -> dict[int, int]:
    """Model calls by batch size over the run (the Triton-style statistics of every version)."""
    status, body = http_get(server.url + f"/v2/models/{model}/stats")
    if status != 200:
        return {}
    counts: dict[int, int] = {}
    for version in json.loads(body).get("model_stats", []):
        for batch in version.get("batch_stats", []):
            size = int(batch["batch_size"])
            counts[size] = counts.get(size, 0) + int(batch["compute_infer"]["count"])
    return dict(sorted(counts.items()))


# Main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument(
        "--tiny", action="store_true", help="serve the tiny test models (built in a temp dir)"
    )
    parser.add_argument("--duration-s", type=float, default=60.0, help="soak length (default 60)")
    parser.add_argument("--window-s", type=float, default=5.0, help="report window (default 5)")
    parser.add_argument(
        "--warmup-s",
        type=float,
        help="memory growth is measured from this point of the soak (default: a sixth of it)",
    )
    parser.add_argument(
        "--burst", type=int, default=1, help="requests of one kind sent at once (default 1)"
    )
    parser.add_argument("--calibrate-s", type=float, default=10.0, help="closed-loop calibration")
    parser.add_argument("--concurrency", type=int, default=8, help="calibration connections")
    parser.add_argument(
        "--utilisation", type=float, default=0.8, help="soak rate / calibrated rate (default 0.8)"
    )
    parser.add_argument("--rate", type=float, help="soak at this rate instead (requests/s)")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--drain-s", type=float, default=30.0)
    parser.add_argument("--allow-training", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    training = training_running()
    if training and not args.allow_training:
        print("refusing to soak while model training runs (--allow-training to force):")
        print("\n".join(training))
        return 3
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        log_dir = Path(tmp)
        if args.tiny:
            from tests.service.conftest import build_tiny_models

            model_dir, source = build_tiny_models(log_dir / "models"), "tiny test models"
        else:
            model_dir, source = args.model_dir.resolve(), f"committed models ({args.model_dir})"
        models = [m for m in MODELS if any((model_dir / m).glob("*/saved_model.pb"))]
        if not models:
            print(f"no SavedModels under {model_dir}; train them or pass --tiny")
            return 2
        server = our_server(model_dir, models, 1, log_dir, 1)
        with running(server):
            pid = server.pids()[0]

            def rss() -> int:
                return memory_kib(pid).get("rss", 0)

            rss_after_start = rss()
            code = _first_code(server) if "digit_encoder" in models else None
            pairs = workload(models, code)
            requests = [request for _, request in pairs]
            calibration = asyncio.run(
                run_load(
                    "127.0.0.1",
                    server.port,
                    requests,
                    args.concurrency,
                    10**9,
                    args.calibrate_s,
                )
            ).summary()
            rate = args.rate or max(1.0, calibration["rps"] * args.utilisation)
            print(
                f"calibration: {calibration['rps']:.1f} req/s at {args.concurrency} connections; "
                f"soaking at {rate:.1f} req/s for {args.duration_s:g} s",
                flush=True,
            )
            run = asyncio.run(
                soak(
                    server.port,
                    pairs,
                    rate,
                    args.duration_s,
                    args.max_connections,
                    args.drain_s,
                    rss,
                    1.0,
                    args.burst,
                )
            )
            status, _ = http_get(server.url + "/v2/health/ready")
            batch_sizes = {model: _batch_sizes(server, model) for model in models}
        commit, dirty = git_commit()
        warmup_s = args.duration_s * WARMUP_FRACTION if args.warmup_s is None else args.warmup_s
        summary = summarise(run, args.window_s, warmup_s)
        report = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": commit,
            "dirty": dirty,
            "argv": argv or [],
            "machine": machine_info(),
            "training": bool(training),
            "models_source": source,
            "models": models,
            "workload": [name for name, _ in pairs],
            "utilisation": args.utilisation if args.rate is None else rate / calibration["rps"],
            "calibration": {"concurrency": args.concurrency, **calibration},
            "rss_after_start_mib": rss_after_start / 1024,
            "burst": args.burst,
            "serving": _serving(model_dir, models),
            "batch_sizes": batch_sizes,
            "ready_after": status,
            "soak": summary,
        }
    path = write_results(report, args.out)
    print(render_markdown(report))
    print(f"written to {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    met = (
        summary["errors"] <= ERROR_TARGET and summary["rss_growth_after_warmup"] < RSS_GROWTH_TARGET
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
