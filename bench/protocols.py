"""Every protocol of our server on the same inputs: what each wire format costs (issue 10).

``python -m bench protocols`` starts our service on 127.0.0.1 with version 1 of the classifier
and the energy model, and drives it with `wrk`, in interleaved rounds, through each protocol:
task JSON, V2 JSON, V2 binary (Triton's binary tensor data extension), TF Serving's row format
and `.npy`, at concurrency 1 and 64 with one item per request, and at concurrency 1 with bulk
requests of 10,000 items. A protocol the server refuses (a 4xx to the first request, as V2
binary before the data plane supports it) is skipped with a note naming the answer.

It checks issue 10's targets in the same run: V2 binary bulk within 15% of `.npy` items/s, and
the V2 JSON single-item p50 within 10% of the task endpoint's; the spread between rounds of each
figure is reported as the run-to-run noise. Results: ``bench/results/protocols-<date>-<commit>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import wrk
from bench.peers import (
    measure,
    model_folder,
    probe,
    provenance,
    request_once,
    tree_rss_mib,
)
from bench.serving import (
    REPO,
    RESULTS_DIR,
    cpu_seconds,
    git_commit,
    machine_info,
    our_server,
    training_running,
)

KINDS = ("task", "v2", "v2-binary", "tfserving", "npy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench protocols", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 s per point, 1 round (~8 min)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per single point")
    parser.add_argument(
        "--bulk-requests", type=int, default=None, help="sequential bulk requests per point"
    )
    parser.add_argument(
        "--bulk-duration", type=float, default=60.0, help="time cap per bulk point (seconds)"
    )
    parser.add_argument("--bulk-items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64], metavar="N")
    parser.add_argument("--models", nargs="+", choices=list(wire.CASES), default=list(wire.CASES))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--no-bulk", action="store_true")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (5.0 if args.quick else 10.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if args.bulk_requests is None:
        args.bulk_requests = 2 if args.quick else 4
    return args


def bulk_run(
    server: Any, bodies: list[wrk.Body], count: int, cap_s: float
) -> tuple[dict[str, Any], float, float]:
    """`count` sequential bulk requests (fewer if `cap_s` runs out): a bulk request takes
    seconds, so a count bounds it better than wrk's duration, which drops the one in flight."""
    pids = server.pids()
    cpu_before = cpu_seconds(pids)
    latencies, errors, started = [], 0, time.perf_counter()
    for i in range(count):
        begin = time.perf_counter()
        try:
            status, _, _ = request_once(server.url, bodies[i % len(bodies)], timeout=300)
        except OSError:
            status = 0
        latencies.append(time.perf_counter() - begin)
        errors += status != 200
        if time.perf_counter() - started > cap_s:
            break
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pids) - cpu_before
    rss, _ = tree_rss_mib(server)
    ok = len(latencies) - errors
    ms = sorted(v * 1e3 for v in latencies)
    result = {
        "requests": len(latencies),
        "errors": errors,
        "rps": ok / elapsed if elapsed > 0 else math.nan,
        "p50_ms": statistics.median(ms) if ms else math.nan,
        "p99_ms": ms[-1] if ms else math.nan,  # with a handful of requests: the slowest
    }
    return result, cpu / max(len(latencies), 1) * 1e6, rss


def spread(values: list[float]) -> float:
    """(max - min) / median over rounds: the run-to-run noise of one figure."""
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return math.nan
    return (max(finite) - min(finite)) / statistics.median(finite)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk.executable() is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    cases = [wire.CASES[k] for k in args.models]
    points = [(case, kind, c, 1) for case in cases for kind in args.kinds for c in args.concurrency]
    if not args.no_bulk:
        points += [(case, kind, 1, args.bulk_items) for case in cases for kind in args.kinds]
    # A bulk request: ~1 s of energy, ~5-50 s of classify (JSON bodies of 10,000 images are
    # ~150 MB; measured on a loaded 2-core machine), plus building those bodies once.
    per_round = sum(
        (
            args.bulk_requests * (15 if case.key == "classify" else 1)
            if n > 1
            else args.duration + 2.5
        )
        for case, _, _, n in points
    )
    print(f"{len(points) * args.rounds} runs, about {per_round * args.rounds / 60 + 1:.0f} min")
    commit, dirty = git_commit()
    busy = training_running()
    notes: list[str] = []
    results: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    requests: dict[tuple[str, str, int], list[wrk.Body]] = {}
    for case, kind, _, items in points:
        key = (case.key, kind, items)
        if key not in requests:
            requests[key] = wire.bodies(case, kind, items, 8 if items == 1 else 2)
    largest = max(len(b.payload) for bodies in requests.values() for b in bodies)
    with (
        tempfile.TemporaryDirectory(prefix="bench-protocols-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        root = work / "models"
        model_folder(root, args.model_dir.resolve(), 1)
        server = our_server(root, [c.model for c in wire.CASES.values()], 1, work, args.bulk_items)
        # Bulk JSON bodies of 10,000 images are ~150 MB: the limit must let them in.
        server.env["MLDM_MAX_BODY_BYTES"] = str(max(largest * 2, 64 * 2**20))
        server.env["MLDM_REQUEST_TIMEOUT_S"] = "120"
        server.start(timeout_s=300)
        stack.callback(server.stop)
        usable = set()
        reference: dict[str, np.ndarray] = {}
        for (name, kind, items), bodies in requests.items():
            if items != 1:
                usable.add((name, kind, items))  # probed at one item; bulk checked by status
                continue
            note = probe(server, kind, wire.CASES[name], bodies[0], reference)
            if note:
                notes.append(f"{wire.KIND_TITLES[kind]}, {name}: {note}")
                print("skip:", notes[-1], flush=True)
            else:
                usable.add((name, kind, items))
        for r in range(args.rounds):
            shift = r % len(points)
            for case, kind, c, items in points[shift:] + points[:shift]:
                if (case.key, kind, items) not in usable or (case.key, kind, 1) not in usable:
                    continue
                if items > 1:
                    result, cpu_us, rss = bulk_run(
                        server,
                        requests[(case.key, kind, items)],
                        args.bulk_requests,
                        args.bulk_duration,
                    )
                else:
                    result, cpu_us, rss, _ = measure(
                        server,
                        requests[(case.key, kind, items)],
                        c,
                        args.duration,
                        1.0,
                        work / "wrk",
                    )
                result.update(cpu_us=cpu_us, rss=rss, items_per_s=result["rps"] * items)
                results.setdefault((case.key, kind, c, items), []).append(result)
                print(
                    f"round {r} {case.key} {wire.KIND_TITLES[kind]:14s} c={c:<3d} "
                    f"items={items:<6d} "
                    f"{result['items_per_s']:10,.0f} items/s p50 {result['p50_ms']:8.2f} ms "
                    f"p99 {result['p99_ms']:8.1f} ms errors {result['errors']}",
                    flush=True,
                )
        rss_after, _ = tree_rss_mib(server)
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "command": "python -m bench protocols " + " ".join(argv or []),
        "machine": machine_info(),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "bulk_requests": args.bulk_requests,
        "contended": "; ".join(busy or training_running()),
        "wall_s": time.monotonic() - started,
        "rss_after": rss_after,
        "notes": notes,
    }
    text = render(report, results, args.bulk_items)
    print("\n" + text)
    if not args.no_write:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        label = "-quick" if args.quick else ""
        path = args.results_dir / f"protocols{label}-{report['date'][:10]}-{commit}.md"
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _num(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _med(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if not math.isnan(r[key])]
    return statistics.median(values) if values else math.nan


def render(
    report: dict[str, Any],
    results: dict[tuple[str, str, int, int], list[dict[str, Any]]],
    bulk: int,
) -> str:
    m = report["machine"]
    out = [
        f"# Protocols benchmark, {report['date']}",
        "",
        provenance(report) + f" Machine: {m['cores']} cores ({m['cpu']}), "
        f"TensorFlow {m['tensorflow']}, load average before {m['load_before']}. wrk, "
        f"{report['duration_s']:g} s per single-item point, {report['bulk_requests']} sequential "
        "requests per bulk point (its p99 column: the slowest), "
        f"{report['rounds']} interleaved round(s); medians over rounds, "
        "noise = (max - min) / median over rounds.",
        "",
    ]
    if report["contended"]:
        out += [
            f"**Contended run** ({report['contended']}): only ratios within the run mean anything.",
            "",
        ]
    out += [
        "| model | protocol | conc. | items/req | items/s | req/s | p50 ms | p99 ms | errors "
        "| server CPU us/req | noise (req/s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (key, kind, c, items), runs in sorted(
        results.items(), key=lambda kv: (kv[0][0], kv[0][3], kv[0][2], KINDS.index(kv[0][1]))
    ):
        out.append(
            f"| {key} | {wire.KIND_TITLES[kind]} | {c} | {items:,} "
            f"| {_num(_med(runs, 'items_per_s'), ',.0f')} "
            f"| {_num(_med(runs, 'rps'), ',.1f')} | {_num(_med(runs, 'p50_ms'), '.2f')} "
            f"| {_num(_med(runs, 'p99_ms'), '.1f')} "
            f"| {sum(r['errors'] for r in runs)} | {_num(_med(runs, 'cpu_us'), ',.0f')} "
            f"| {spread([r['rps'] for r in runs]) * 100:.0f}% |".replace("nan%", "-")
        )
    out += ["", "## Targets (issue 10, item 7)", ""]
    for key in wire.CASES:
        binary, npy = results.get((key, "v2-binary", 1, bulk)), results.get((key, "npy", 1, bulk))
        if binary and npy:
            r = _med(binary, "items_per_s") / _med(npy, "items_per_s")
            out.append(
                f"- {'met' if r >= 0.85 else 'NOT met'}: {key} V2 binary bulk "
                f"{_med(binary, 'items_per_s'):,.0f} items/s = {r:.2f}x the .npy path's "
                f"(target >= 0.85x)"
            )
        else:
            out.append(f"- not measured: {key} V2 binary bulk vs .npy (a protocol was skipped)")
        v2, task = results.get((key, "v2", 1, 1)), results.get((key, "task", 1, 1))
        if v2 and task:
            r = _med(v2, "p50_ms") / _med(task, "p50_ms")
            out.append(
                f"- {'met' if r <= 1.10 else 'NOT met'}: {key} V2 JSON single-item p50 "
                f"{_med(v2, 'p50_ms'):.2f} ms = {r:.2f}x the task route's (target <= 1.10x)"
            )
    out += ["", f"Resident memory of the server after the run: {report['rss_after']:.0f} MiB."]
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
