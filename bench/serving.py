"""Serving: our FastAPI model server against a naive `model.predict` server (``make bench``).

``python -m bench serving`` measures, in one invocation: (1) the raw in-process throughput of
each committed SavedModel's `serving_default` at batch 256 and at the bulk size; (2) the load
client's own ceiling against a canned-response server; (3) our service (1 worker unless
``--workers``) at concurrency 1, 8 and 64 with one image or one potential per request (JSON) and
bulk ``.npy`` requests; (4) the naive server (`bench/naive_server.py`) on the JSON scenarios;
(5) the service's resident memory with 1 and 2 workers. It prints one table with ours / naive
and served / raw ratios, checks the targets and writes ``bench/results/serving-<date>-<commit>.md``.
Servers run one at a time; the load client shares the machine and its CPU per request is shown.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import harness
from bench import profile as profiling
from bench.harness import fmt

RAW_BATCH = 256
PARTS = ("raw", "ceiling", "service", "naive", "memory")


def scenarios(bulk_images: int, bulk_arrays: int) -> list[dict[str, Any]]:
    """name, model case, protocol, items per request; JSON ones also run on the naive server."""
    c, e = wire.CLASSIFY, wire.ENERGY
    return [
        {"name": "classify, 1 image, JSON", "case": c, "kind": "task", "items": 1},
        {"name": "energy, 1 potential, JSON", "case": e, "kind": "task", "items": 1},
        {
            "name": f"classify, {bulk_images} images, npy",
            "case": c,
            "kind": "npy",
            "items": bulk_images,
        },
        {
            "name": f"energy, {bulk_arrays} potentials, npy",
            "case": e,
            "kind": "npy",
            "items": bulk_arrays,
        },
    ]


def raw_throughput(path: Path, batch: int, seconds: float = 3.0) -> dict[str, Any]:
    """Items/s of the signature called in a loop on one pre-built tensor of `batch` items."""
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    (name, spec), *_ = function.structured_input_signature[1].items()
    shape = [batch, *(int(d) for d in spec.shape[1:])]
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, shape) if spec.dtype == tf.uint8 else rng.random(shape)
    tensor = tf.constant(array, dtype=spec.dtype)
    for _ in range(3):
        function(**{name: tensor})
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 5:
        outputs = function(**{name: tensor})
        calls += 1
    for value in outputs.values():
        value.numpy()
    return {
        "batch": batch,
        "items_per_s": calls * batch / elapsed,
        "ms_per_call": elapsed / calls * 1e3,
    }


def check(scenario: dict[str, Any], server: harness.Server) -> str | None:
    """None if the server's answer to the first body has the right number of values."""
    case, kind, items = scenario["case"], scenario["kind"], scenario["items"]
    status, headers, payload = harness.request_once(server.url, scenario["bodies"][0], 300)
    if status != 200:
        return f"answered {status}: {payload[:120]!r}"
    try:
        got = wire.values(kind, case, payload, headers)
    except ValueError as exc:
        return str(exc)
    want = items * case.values_per_item
    return None if got.size == want else f"expected {want} values, got {got.size}"


def evaluate_targets(
    rows: Sequence[dict[str, Any]], raw: dict[str, dict[int, Any]]
) -> list[dict[str, Any]]:
    """The serving targets against the measured rows: what was asked, what we saw, met or not."""

    def find(prefix: str, server: str, c: int) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in rows
                if r["scenario"].startswith(prefix)
                and r["server"] == server
                and r["concurrency"] == c
            ),
            None,
        )

    targets = []
    for task, prefix in (("classify", "classify, 1 "), ("energy", "energy, 1 ")):
        if (one := find(prefix, "service", 1)) is not None:
            targets.append(
                {
                    "target": f"{task}, 1 item, concurrency 1: p50 <= 2 ms",
                    "measured": f"p50 {one['p50_ms']:.2f} ms",
                    "met": one["p50_ms"] <= 2.0 and one["errors"] == 0,
                }
            )
        ours, naive = find(prefix, "service", 64), find(prefix, "naive", 64)
        if ours is not None and naive is not None:
            r = ours["rps"] / naive["rps"] if naive["rps"] else 0
            targets.append(
                {
                    "target": f"{task}, 1 item, concurrency 64: >= 20x naive req/s, p99 <= 50 ms",
                    "measured": f"{r:.1f}x naive, p99 {ours['p99_ms']:.1f} ms",
                    "met": r >= 20 and ours["p99_ms"] <= 50 and ours["errors"] == 0,
                }
            )
    for row in rows:
        model_raw = raw.get(row["model"], {}).get(RAW_BATCH)
        if row["bulk"] and row["server"] == "service" and model_raw:
            f = row["items_per_s"] / model_raw["items_per_s"]
            targets.append(
                {
                    "target": f"{row['scenario']}, concurrency {row['concurrency']}: "
                    f">= 50% of raw batch-{RAW_BATCH} throughput",
                    "measured": f"{f:.0%} ({fmt(row['items_per_s'])} of {fmt(model_raw['items_per_s'])} items/s)",
                    "met": f >= 0.5 and row["errors"] == 0 and row["check"] is None,
                }
            )
    return targets


def render_markdown(report: dict[str, Any]) -> str:
    rows, raw = report["rows"], report["raw"]
    naive = {(r["scenario"], r["concurrency"]): r["rps"] for r in rows if r["server"] == "naive"}
    out = [
        *harness.header(report, "Serving benchmark"),
        f"Models: {', '.join(f'{k} v{v}' for k, v in report['models'].items()) or 'none'}. "
        f"Service workers: {report['workers']}. Client: {report['client']}, each run "
        f"{report['duration_s']:g} s (bulk at most {report['bulk_max_requests']} requests) "
        f"after a {report['warmup_s']:g} s warm-up.",
        "",
        "## Load",
        "",
        "| scenario | server | conc. | requests | errors | p50 ms | p99 ms | req/s | items/s "
        "| ours / naive | of raw | client CPU us/req | server CPU us/req |",
        "| --- | --- " + "| ---: " * 11 + "|",
    ]
    for r in rows:
        versus = harness.ratio(r["rps"], naive.get((r["scenario"], r["concurrency"]), math.nan))
        model_raw = raw.get(r["model"], {}).get(RAW_BATCH)
        of_raw = (
            f"{r['items_per_s'] / model_raw['items_per_s']:.0%}" if r["bulk"] and model_raw else "-"
        )
        wrong = "" if r["check"] is None else " (**wrong answer**)"
        out.append(
            f"| {r['scenario']}{wrong} | {r['server']} | {r['concurrency']} | {fmt(r['requests'])} "
            f"| {fmt(r['errors'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {fmt(r['rps'])} "
            f"| {fmt(r['items_per_s'])} | {'-' if math.isnan(versus) else f'{versus:.1f}x'} | {of_raw} "
            f"| {fmt(r['client_cpu_us_per_req'], 0)} | {fmt(r['server_cpu_us_per_req'], 0)} |"
        )
    out += [
        "",
        "*ours / naive*: req/s over the naive server's at the same concurrency. *of raw*: "
        f"served items/s over the raw in-process batch-{RAW_BATCH} throughput of the model.",
    ]
    out += [f"- {r['scenario']} ({r['server']}): {r['check']}" for r in rows if r["check"]]
    out += [
        "",
        "## Raw in-process throughput (one pre-built tensor)",
        "",
        "| model | batch | items/s | ms per call |",
        "| --- | ---: | ---: | ---: |",
    ]
    for model, by_batch in raw.items():
        for batch, s in sorted(by_batch.items()):
            out.append(
                f"| {model} | {batch:,} | {fmt(s['items_per_s'])} | {s['ms_per_call']:.2f} |"
            )
    if report["ceiling"]:
        out += [
            "",
            "## Load client ceiling (canned-response server)",
            "",
            "| client | conc. | requests | req/s | p50 ms | p99 ms | client CPU us/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for client, s in report["ceiling"]:
            out.append(
                f"| {client} | {s['concurrency']} | {fmt(s['requests'])} | {fmt(s['rps'])} "
                f"| {fmt(s['p50_ms'], 3)} | {fmt(s['p99_ms'], 3)} | {fmt(s['client_cpu_us_per_req'], 0)} |"
            )
    out += ["", "## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    out += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
        for t in report["targets"]
    ]
    if report["memory"]:
        out += [
            "",
            "## Memory by uvicorn workers (idle, after start-up)",
            "",
            "| workers | process | VmRSS MiB | Pss MiB |",
            "| ---: | --- | ---: | ---: |",
        ]
        for entry in report["memory"]:
            for p in [*entry["processes"], {"role": "**total**", **entry}]:
                out.append(
                    f"| {entry['workers']} | {p['role']} | {p['rss'] / 1024:.0f} | {p.get('pss', 0) / 1024:.0f} |"
                )
    for title, lines in report.get("profiles", []):
        out += [
            "",
            f"## Profile of the service (py-spy, separate unmeasured run): {title}",
            "",
            *lines,
        ]
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"


def measure_memory(
    model_dir: Path, names: Sequence[str], workers: int, log_dir: Path
) -> dict[str, Any]:
    """RSS and PSS of every process of the service with `workers` workers, once ready."""
    with harness.running(harness.our_server(model_dir, names, workers, log_dir)) as server:
        time.sleep(3.0)
        pids, processes = server.pids(), []
        for pid in pids:
            if mem := harness.memory_kib(pid):
                cmd = (
                    Path(f"/proc/{pid}/cmdline").read_bytes()
                    if Path(f"/proc/{pid}").exists()
                    else b""
                )
                role = (
                    ("uvicorn (serves)" if workers == 1 else "uvicorn supervisor")
                    if pid == pids[0]
                    else "resource tracker"
                    if b"resource_tracker" in cmd
                    else "worker"
                )
                processes.append({"pid": pid, "role": role, **mem})
    return {
        "workers": workers,
        "processes": processes,
        "rss": sum(p.get("rss", 0) for p in processes),
        "pss": sum(p.get("pss", 0) for p in processes),
    }


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(
        "serving", __doc__, duration=(5.0, 10.0), warmup=(1.0, 1.0), concurrency=(1, 8, 64)
    )
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers of our service")
    p.add_argument("--bulk-max-requests", type=int, default=300, help="per bulk run")
    p.add_argument("--bulk-images", type=int, default=10_000)
    p.add_argument("--bulk-arrays", type=int, default=10_000)
    p.add_argument("--client", choices=["auto", "wrk", "raw", "httpx"], default="auto")
    p.add_argument("--scenarios", nargs="+", choices=["single", "bulk"], default=["single", "bulk"])
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run")
    p.add_argument("--profile", action="store_true", help="py-spy the service (extra runs)")
    p.add_argument("--profile-concurrency", type=int, nargs="+", default=[1, 64], metavar="N")
    p.add_argument("--wait-for-training", type=float, default=0.0, metavar="SECONDS")
    args = harness.parse(p, argv)
    if harness.refuse_while_training(args, args.wait_for_training):
        return 3
    model_dir = args.model_dir.resolve()
    present = {n: v for n in harness.models() if (v := harness.latest_version(model_dir, n))}
    chosen = [
        s
        for s in scenarios(args.bulk_images, args.bulk_arrays)
        if s["case"].model in present and ("bulk" if s["items"] > 1 else "single") in args.scenarios
    ]
    if not chosen:
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
        rows=[],
        raw={},
        ceiling=[],
        memory=[],
        profiles=[],
    )
    print(f"machine: {report['machine']}", flush=True)
    if "raw" in args.only:
        for name, path in present.items():
            sizes = {
                RAW_BATCH,
                *(s["items"] for s in chosen if s["case"].model == name and s["items"] > 1),
            }
            report["raw"][name] = {b: raw_throughput(path, b) for b in sorted(sizes)}
            for b, s in report["raw"][name].items():
                print(f"raw {name} batch {b}: {s['items_per_s']:,.0f} items/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        if "ceiling" in args.only:
            body = [wire.Body("POST", "/", b"{}", (("Content-Type", wire.JSON),))]
            clients = ["raw", "httpx"] + (["wrk"] if harness.driver.shutil.which("wrk") else [])
            with harness.running(harness.canned_server(work)) as canned:
                for client in clients:
                    for c in (1, 64):
                        s = harness.driver.run(
                            canned.url, body, c, min(args.duration, 5.0), work, client=client
                        )
                        report["ceiling"].append((client, s))
                        print(f"ceiling {client} c={c}: {s['rps']:,.0f} req/s", flush=True)
        for s in chosen:
            s["bodies"] = wire.bodies(
                s["case"], s["kind"], s["items"], 16 if s["items"] == 1 else 1
            )
        max_items = max(s["items"] for s in chosen)
        servers = {
            "service": lambda: harness.our_server(
                model_dir, list(present), args.workers, work, max_items
            ),
            "naive": lambda: harness.python_server(
                "naive", "bench.naive_server", ["--model-dir", str(model_dir)], work
            ),
        }
        for name, make in servers.items():
            if name not in args.only:
                continue
            with harness.running(make()) as server:
                for s in chosen:
                    if name == "naive" and s["items"] > 1:
                        continue
                    wrong = check(s, server)
                    for c in args.concurrency:
                        cap = args.bulk_max_requests if s["items"] > 1 else None
                        row = harness.measure(
                            server,
                            s["bodies"],
                            c,
                            args.duration,
                            args.warmup,
                            work,
                            s["items"],
                            cap,
                            args.client,
                        )
                        row.update(
                            scenario=s["name"],
                            server=name,
                            model=s["case"].model,
                            bulk=s["items"] > 1,
                            check=wrong,
                        )
                        report["rows"].append(row)
                        print(
                            f"{name:8s} {s['name']:34s} c={c:<3d} {row['rps']:9,.1f} req/s "
                            f"p50 {row['p50_ms']:8.2f} ms p99 {row['p99_ms']:8.2f} ms errors {row['errors']}"
                            + (f"  CHECK: {wrong}" if wrong else ""),
                            flush=True,
                        )
                        if args.profile and name == "service" and c in args.profile_concurrency:
                            stacks = work / f"profile-{len(report['profiles'])}.txt"
                            lines = profiling.during(
                                server,
                                stacks,
                                lambda s=s, c=c: harness.driver.run(
                                    server.url,
                                    s["bodies"],
                                    c,
                                    6.5,
                                    work,
                                    s["items"],
                                    client=args.client,
                                ),
                            )
                            report["profiles"].append((f"{s['name']}, concurrency {c}", lines))
        if "memory" in args.only:
            for workers in (1, 2):
                report["memory"].append(measure_memory(model_dir, list(present), workers, work))
                print(
                    f"memory, {workers} worker(s): {report['memory'][-1]['rss'] / 1024:.0f} MiB",
                    flush=True,
                )
    report["targets"] = evaluate_targets(report["rows"], report["raw"])
    text = render_markdown(report)
    print("\n" + text)
    if not args.no_write:
        harness.write(report, text, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
