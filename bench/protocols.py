"""Every protocol of our server on the same inputs: what each wire format costs.

``python -m bench protocols`` serves version 1 of the classifier and the energy model and drives
them, in interleaved rounds, through task JSON, V2 JSON, V2 binary (Triton's binary tensor
extension), TF Serving's row format and `.npy`: at concurrency 1 and 64 with one item per
request, and with ``--bulk-requests`` sequential bulk requests of ``--bulk-items`` items. A
protocol the server refuses is skipped with a note. Targets: V2 binary bulk >= 0.85x the `.npy`
items/s; V2 JSON single-item p50 <= 1.10x the task route's. The spread between rounds of each
figure is its noise. Results: ``bench/results/protocols-<date>-<commit>.md``.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import harness
from bench.peers import model_folder, probe

KINDS = ("task", "v2", "v2-binary", "tfserving", "npy")


def spread(values: list[float]) -> float:
    """(max - min) / median over rounds: the run-to-run noise of one figure."""
    finite = [v for v in values if not math.isnan(v)]
    return (max(finite) - min(finite)) / harness.median(finite) if len(finite) > 1 else math.nan


def render(
    report: dict[str, Any],
    results: dict[tuple[str, str, int, int], list[dict[str, Any]]],
    bulk: int,
) -> str:
    def med(runs: list[dict[str, Any]], key: str) -> float:
        return harness.median([r[key] for r in runs])

    out = [
        *harness.header(report, "Protocols benchmark"),
        f"{report['duration_s']:g} s per single-item point, {report['bulk_requests']} sequential requests "
        f"per bulk point (its p99: the slowest), {report['rounds']} interleaved round(s); medians over "
        "rounds, noise = (max - min) / median over rounds.",
        "",
        "| model | protocol | conc. | items/req | items/s | req/s | p50 ms | p99 ms | errors "
        "| server CPU us/req | noise (req/s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (key, kind, c, items), runs in sorted(
        results.items(), key=lambda kv: (kv[0][0], kv[0][3], kv[0][2], KINDS.index(kv[0][1]))
    ):
        noise = spread([r["rps"] for r in runs])
        out.append(
            f"| {key} | {wire.KIND_TITLES[kind]} | {c} | {items:,} | {med(runs, 'items_per_s'):,.0f} "
            f"| {med(runs, 'rps'):,.1f} | {med(runs, 'p50_ms'):.2f} | {med(runs, 'p99_ms'):.1f} "
            f"| {sum(r['errors'] for r in runs)} | {harness.fmt(med(runs, 'server_cpu_us_per_req'), 0)} "
            f"| {'-' if math.isnan(noise) else f'{noise:.0%}'} |"
        )
    out += ["", "## Targets", ""]
    for key in wire.CASES:
        binary, npy = results.get((key, "v2-binary", 1, bulk)), results.get((key, "npy", 1, bulk))
        if binary and npy:
            r = med(binary, "items_per_s") / med(npy, "items_per_s")
            out.append(
                f"- {'met' if r >= 0.85 else 'NOT met'}: {key} V2 binary bulk {med(binary, 'items_per_s'):,.0f} "
                f"items/s = {r:.2f}x the .npy path's (target >= 0.85x)"
            )
        else:
            out.append(f"- not measured: {key} V2 binary bulk vs .npy (a protocol was skipped)")
        v2, task = results.get((key, "v2", 1, 1)), results.get((key, "task", 1, 1))
        if v2 and task:
            r = med(v2, "p50_ms") / med(task, "p50_ms")
            out.append(
                f"- {'met' if r <= 1.10 else 'NOT met'}: {key} V2 JSON single-item p50 "
                f"{med(v2, 'p50_ms'):.2f} ms = {r:.2f}x the task route's (target <= 1.10x)"
            )
    out += ["", f"Resident memory of the server after the run: {report['rss_after']:.0f} MiB."]
    if report["notes"]:
        out += ["", "## Notes", "", *(f"- {n}" for n in report["notes"])]
    return "\n".join(out) + "\n"


def bulk_run(
    server: harness.Server, bodies: list[wire.Body], count: int, cap_s: float, items: int
) -> dict[str, Any]:
    """`count` sequential bulk requests (fewer if `cap_s` runs out): a bulk request takes
    seconds, so a count bounds it better than a duration, which drops the one in flight."""
    pids, latencies, errors = server.pids(), [], 0
    cpu, started = harness.cpu_seconds(pids), time.perf_counter()
    for i in range(count):
        begin = time.perf_counter()
        try:
            status = harness.request_once(server.url, bodies[i % len(bodies)], timeout=300)[0]
        except OSError:
            status = 0
        if status == 200:
            latencies.append(time.perf_counter() - begin)
        errors += status != 200
        if time.perf_counter() - started > cap_s:
            break
    result = harness.driver.summary(1, items, latencies, errors, time.perf_counter() - started, 0.0)
    result["p99_ms"] = result["max_ms"]  # with a handful of requests: the slowest
    result["server_cpu_us_per_req"] = (
        (harness.cpu_seconds(pids) - cpu) / max(result["requests"], 1) * 1e6
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(
        "protocols", __doc__, duration=(5.0, 10.0), rounds=(1, 3), concurrency=(1, 64)
    )
    p.add_argument("--bulk-requests", type=int, default=None, help="per bulk point (2 quick, 4)")
    p.add_argument("--bulk-duration", type=float, default=60.0, help="time cap per bulk point")
    p.add_argument("--bulk-items", type=int, default=10_000)
    p.add_argument("--no-bulk", action="store_true")
    p.add_argument("--models", nargs="+", choices=list(wire.CASES), default=list(wire.CASES))
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = harness.parse(p, argv)
    args.bulk_requests = args.bulk_requests or (2 if args.quick else 4)
    if harness.refuse_while_training(args):
        return 3
    started, cases = time.monotonic(), [wire.CASES[k] for k in args.models]
    points = [(case, kind, c, 1) for case in cases for kind in args.kinds for c in args.concurrency]
    if not args.no_bulk:
        points += [(case, kind, 1, args.bulk_items) for case in cases for kind in args.kinds]
    bodies = {
        (case.key, kind, n): wire.bodies(case, kind, n, 8 if n == 1 else 2)
        for case, kind, _, n in points
    }
    largest = max(len(b.payload) for group in bodies.values() for b in group)
    report = harness.new_report(
        "protocols",
        args.argv,
        rounds=args.rounds,
        duration_s=args.duration,
        bulk_requests=args.bulk_requests,
    )
    results: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-protocols-") as tmp:
        work = Path(tmp)
        model_folder(work / "models", args.model_dir.resolve(), 1)
        server = harness.our_server(
            work / "models", [c.model for c in cases], 1, work, args.bulk_items
        )
        # Bulk JSON bodies of 10,000 images are ~150 MB: the limits must let them in.
        server.env.update(
            MLDM_MAX_BODY_BYTES=str(max(largest * 2, 64 * 2**20)), MLDM_REQUEST_TIMEOUT_S="120"
        )
        with harness.running(server):
            usable: set[tuple[str, str]] = set()
            reference: dict[str, np.ndarray] = {}
            for (key, kind, n), group in bodies.items():
                if n > 1:
                    continue  # bulk bodies are checked by their status
                if note := probe(server, kind, wire.CASES[key], group[0], reference):
                    report["notes"].append(f"{wire.KIND_TITLES[kind]}, {key}: {note}")
                    print("skip:", report["notes"][-1], flush=True)
                else:
                    usable.add((key, kind))
            for r in range(args.rounds):
                shift = r % len(points)
                for case, kind, c, n in points[shift:] + points[:shift]:
                    if (case.key, kind) not in usable:
                        continue
                    group = bodies[(case.key, kind, n)]
                    if n > 1:
                        res = bulk_run(server, group, args.bulk_requests, args.bulk_duration, n)
                    else:
                        res = harness.measure(server, group, c, args.duration, 1.0, work)
                    results.setdefault((case.key, kind, c, n), []).append(res)
                    print(
                        f"round {r} {case.key} {wire.KIND_TITLES[kind]:14s} c={c:<3d} items={n:<6d} "
                        f"{res['items_per_s']:10,.0f} items/s p50 {res['p50_ms']:8.2f} ms errors {res['errors']}",
                        flush=True,
                    )
            report["rss_after"] = server.memory_mib()[0]
    report["wall_s"] = time.monotonic() - started
    text = render(report, results, args.bulk_items)
    print("\n" + text)
    if not args.no_write:
        harness.write(report, text, args.results_dir, "-quick" if args.quick else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
