"""Serving: our service against a naive `model.predict` server, raw throughput, the client's
ceiling and memory by workers, with targets (``make bench``; bench/README.md)."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bodies as wire
from bench import harness, matrix
from bench import profile as profiling
from bench.harness import fmt

RAW_BATCH = 256
PARTS = ("raw", "ceiling", "service", "naive", "memory")


def evaluate_targets(
    stats: dict[matrix.Key, dict[str, float]], raw: dict[str, dict[int, Any]]
) -> list[str]:
    """The serving targets against the measured figures, each met or not."""
    lines = []
    for key, model in ((k, c.model) for k, c in wire.CASES.items()):
        if one := stats.get(("service", "task", model, 1, 1)):
            met, p50 = one["p50_ms"] <= 2 and not one["errors"], one["p50_ms"]
            what = f"{key}, 1 item, concurrency 1: p50 {p50:.2f} ms (target <= 2 ms)"
            lines.append(harness.verdict(met, what))
        ours, naive = (stats.get((s, "task", model, 64, 1)) for s in ("service", "naive"))
        if ours and naive:
            r, p99 = harness.ratio(ours["rps"], naive["rps"]), ours["p99_ms"]
            met = r >= 20 and p99 <= 50 and not ours["errors"]
            what = f"{key}, 1 item, concurrency 64: {r:.1f}x naive req/s, p99 {p99:.1f} ms"
            lines.append(harness.verdict(met, what + " (target >= 20x, <= 50 ms)"))
    for (server, kind, model, c, items), s in stats.items():
        if server == "service" and items > 1 and (of := raw.get(model, {}).get(RAW_BATCH)):
            f = s["items_per_s"] / of["items_per_s"]
            what = (
                f"{model}, {items} items, {kind}, concurrency {c}: {f:.0%} of the raw "
                f"batch-{RAW_BATCH} throughput ({fmt(s['items_per_s'])} of "
                f"{fmt(of['items_per_s'])} items/s; target >= 50%)"
            )
            lines.append(harness.verdict(f >= 0.5 and not s["errors"], what))
    return lines


def ratios(stats: dict[matrix.Key, dict[str, float]], raw: dict[str, Any]) -> list[list[Any]]:
    """Per measured point of the service: its req/s over the naive server's, items/s over raw."""
    rows = []
    for (server, kind, model, c, items), s in stats.items():
        naive = stats.get(("naive", kind, model, c, items), {}).get("rps", math.nan)
        of = raw.get(model, {}).get(RAW_BATCH, {}).get("items_per_s", math.nan)
        versus, share = harness.ratio(s["rps"], naive), harness.ratio(s["items_per_s"], of)
        versus_text = "-" if math.isnan(versus) else f"{versus:.1f}x"
        share_text = "-" if math.isnan(share) or items == 1 else f"{share:.0%}"  # raw: batches
        if server == "service":
            rows.append([model, wire.KIND_TITLES[kind], items, c, versus_text, share_text])
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    stats, raw = report["stats"], report["raw"]
    models = ", ".join(f"{k} v{v}" for k, v in report["models"].items()) or "none"
    raw_rows = (
        [m, b, s["items_per_s"], fmt(s["ms_per_call"], 2)]
        for m, by in raw.items()
        for b, s in sorted(by.items())
    )
    out = [
        *harness.header(report, "Serving benchmark"),
        f"Models: {models}. Service workers: {report['workers']}. Client: {report['client']}, "
        f"each run {report['duration_s']:g} s (bulk at most {report['bulk_max_requests']} "
        f"requests) after a {report['warmup_s']:g} s warm-up.",
        "",
        "## Load",
        "",
        *matrix.table(stats, ["service", "naive"]),
        "",
        *harness.table(
            "model | route | items/req: | conc.: | ours / naive: | of raw:", ratios(stats, raw)
        ),
        "",
        "*ours / naive*: req/s over the naive server's at the same point. *of raw*: served "
        f"items/s over the raw in-process batch-{RAW_BATCH} throughput of the same model.",
        "",
        "## Raw in-process throughput (one pre-built tensor)",
        "",
        *harness.table("model | batch: | items/s: | ms per call:", raw_rows),
        "",
        "## Load client ceiling (canned-response server)",
        "",
        *harness.ceiling_table(report["ceiling"]),
        "",
        "## Targets",
        "",
        *(f"- {line}" for line in report["targets"]),
    ]
    if report["memory"]:
        out += ["", "## Memory by uvicorn workers (idle, after start-up)", ""]
        out += harness.table(
            "workers: | process | VmRSS MiB: | Pss MiB:",
            (
                [e["workers"], p["role"], f"{p['rss'] / 1024:.0f}", f"{p.get('pss', 0) / 1024:.0f}"]
                for e in report["memory"]
                for p in [*e["processes"], {**e, "role": "**total**"}]
            ),
        )
    for title, lines in report["profiles"]:
        out += ["", f"## Profile of the service (py-spy, unmeasured run): {title}", "", *lines]
    return "\n".join([*out, *harness.notes(report)]) + "\n"


def measure_memory(model_dir: Path, names: list[str], workers: int, work: Path) -> dict[str, Any]:
    """RSS and PSS of every process of the service with `workers` workers, once ready."""
    with harness.running(harness.our_server(model_dir, names, workers, work)) as server:
        time.sleep(3.0)
        pids, processes = server.pids(), list[dict[str, Any]]()
        for pid in pids:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            role = "resource tracker" if b"resource_tracker" in cmd else "worker"
            if pid == pids[0]:
                role = "uvicorn (serves)" if workers == 1 else "uvicorn supervisor"
            processes += (
                [{"pid": pid, "role": role, **mem}] if (mem := harness.memory_kib(pid)) else []
            )
    total = {k: sum(int(p.get(k, 0)) for p in processes) for k in ("rss", "pss")}
    return {"workers": workers, "processes": processes, **total}


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("serving", __doc__, duration=(5, 10), warmup=(1, 1), concurrency=(1, 8, 64))
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers of our service")
    p.add_argument("--bulk-max-requests", type=int, default=300, help="per bulk run")
    p.add_argument("--bulk-items", type=int, default=10_000, help="items per bulk request")
    p.add_argument("--client", choices=["auto", "wrk", "raw"], default="auto")
    p.add_argument("--scenarios", nargs="+", choices=["single", "bulk"], default=["single", "bulk"])
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run")
    p.add_argument("--profile", action="store_true", help="py-spy the service (extra runs)")
    args = harness.parse(p, argv)
    if harness.refuse_while_training(args):
        return 3
    model_dir = args.model_dir.resolve()
    present = {n: v for n in harness.models() if (v := harness.latest_version(model_dir, n))}
    if not any(case.model in present for case in wire.CASES.values()):
        print(f"no SavedModels of the benchmarked models under {model_dir}")
        return 2
    report = harness.new_report(
        "serving",
        args.argv,
        workers=args.workers,
        client=args.client,
        models={n: int(v.name) for n, v in present.items()},
        duration_s=args.duration,
        warmup_s=args.warmup,
        bulk_max_requests=args.bulk_max_requests,
        rounds=1,
        raw={},
        ceiling=[],
        memory=[],
        profiles=[],
    )
    for name, path in present.items() if "raw" in args.only else ():
        bulk = [args.bulk_items] if name in (c.model for c in wire.CASES.values()) else []
        report["raw"][name] = {b: harness.signature_timing(path, b) for b in {RAW_BATCH, *bulk}}
        print(f"raw {name}: {report['raw'][name]}", flush=True)
    args.rounds, points, names = 1, [], list(present)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        if "ceiling" in args.only:
            clients = ["raw"] + (["wrk"] if shutil.which("wrk") else [])
            report["ceiling"] = harness.ceiling(work, min(args.duration, 5), clients)
        keys = [k for k, case in wire.CASES.items() if case.model in present]
        runs = {
            "single": ("task", [(k, 1, c) for k in keys for c in args.concurrency]),
            "bulk": ("npy", [(k, args.bulk_items, c) for k in keys for c in args.concurrency]),
        }
        naive = ["--model-dir", str(model_dir)]
        servers = {
            "service": lambda: harness.our_server(
                model_dir, names, args.workers, work, args.bulk_items
            ),
            "naive": lambda: harness.python_server("naive", "bench.naive_server", naive, work),
        }
        cap = (args.bulk_max_requests, args.duration, args.warmup)
        for name in (n for n in servers if n in args.only):
            with harness.running(servers[name]()) as server:
                for kind, groups in (runs[s] for s in args.scenarios):
                    if name == "service" or kind == "task":  # the naive server has task routes
                        routes = [(name, kind)]
                        points += matrix.run(
                            {name: server}, routes, groups, args, report, work, cap, args.client
                        )
                    if args.profile and name == "service":
                        at = {min(args.concurrency), max(args.concurrency)}
                        profile(report, server, kind, [g for g in groups if g[2] in at], work)
        for workers in (1, 2) if "memory" in args.only else ():
            report["memory"].append(measure_memory(model_dir, names, workers, work))
            print(f"memory, {workers} worker(s): {report['memory'][-1]['rss']} KiB", flush=True)
    report["stats"] = matrix.aggregate(points)
    report["targets"] = evaluate_targets(report["stats"], report["raw"])
    print("\n" + (text := render_markdown(report)))
    if not args.no_write:
        harness.write(report, text, args.results_dir)
    return 0


def profile(
    report: dict[str, Any], server: harness.Server, kind: str, groups: list, work: Path
) -> None:
    """py-spy samples the service during an extra, unmeasured run of each profiled point."""
    for key, items, c in groups:
        bodies = wire.bodies(wire.CASES[key], kind, items, matrix.VARIANTS if items == 1 else 1)
        title = f"{key}, {items} item(s), {wire.KIND_TITLES[kind]}, concurrency {c}"
        report["profiles"].append((title, profiling.point(server, bodies, c, items, work)))


if __name__ == "__main__":
    raise SystemExit(main())
