"""Every protocol of our server on the same inputs: what each wire format costs, single items
and bulk, with targets (``python -m bench protocols``; bench/README.md)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bodies as wire
from bench import harness, matrix

KINDS = ("task", "v2", "v2-binary", "tfserving", "npy")


def verdicts(stats: dict[matrix.Key, dict[str, float]], bulk: int) -> list[str]:
    """Each target with its measured ratio, met or not."""
    lines = []
    for key, model in ((k, c.model) for k, c in wire.CASES.items()):
        binary, npy = (stats.get(("ours", k, model, 1, bulk)) for k in ("v2-binary", "npy"))
        if binary and npy:
            r = binary["items_per_s"] / npy["items_per_s"]
            lines.append(
                f"{'met' if r >= 0.85 else 'NOT met'}: {key} V2 binary bulk "
                f"{binary['items_per_s']:,.0f} items/s = {r:.2f}x the .npy path's (target >= 0.85x)"
            )
        else:
            lines.append(f"not measured: {key} V2 binary bulk vs .npy (a protocol was skipped)")
        v2, task = (stats.get(("ours", k, model, 1, 1)) for k in ("v2", "task"))
        if v2 and task:
            r = v2["p50_ms"] / task["p50_ms"]
            lines.append(
                f"{'met' if r <= 1.10 else 'NOT met'}: {key} V2 JSON single-item p50 "
                f"{v2['p50_ms']:.2f} ms = {r:.2f}x the task route's (target <= 1.10x)"
            )
    return lines


def render(report: dict[str, Any]) -> str:
    out = [
        *harness.header(report, "Protocols benchmark"),
        f"{report['duration_s']:g} s per single-item point, {report['bulk_requests']} sequential "
        f"requests per bulk point, {report['rounds']} interleaved round(s); medians over rounds, "
        "noise = (max - min) / median of req/s over rounds.",
        "",
        *matrix.table(report["stats"]),
        "",
        "## Targets",
        "",
        *(f"- {line}" for line in verdicts(report["stats"], report["bulk_items"])),
        "",
        f"Resident memory of the server after the run: {report['rss_after']:.0f} MiB.",
    ]
    out += ["", "## Notes", "", *(f"- {n}" for n in report["notes"])] if report["notes"] else []
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("protocols", __doc__, duration=(5, 10), warmup=(1, 1), rounds=(1, 3))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
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
    started = time.monotonic()
    groups = [(key, 1, c) for key in args.models for c in args.concurrency]
    groups += [] if args.no_bulk else [(key, args.bulk_items, 1) for key in args.models]
    report = harness.new_report(
        "protocols",
        args.argv,
        rounds=args.rounds,
        duration_s=args.duration,
        bulk_requests=args.bulk_requests,
        bulk_items=args.bulk_items,
    )
    with tempfile.TemporaryDirectory(prefix="bench-protocols-") as tmp:
        work = Path(tmp)
        matrix.model_folder(work / "models", args.model_dir.resolve(), 1)
        names = [wire.CASES[k].model for k in args.models]
        server = harness.our_server(work / "models", names, 1, work, args.bulk_items)
        # Bulk JSON bodies of 10,000 images are ~150 MB: the limits must let them in.
        server.env.update(MLDM_MAX_BODY_BYTES=str(2**30), MLDM_REQUEST_TIMEOUT_S="120")
        with harness.running(server):
            routes = [("ours", kind) for kind in args.kinds]
            bulk = (args.bulk_requests, args.bulk_duration, 0.0)
            points = matrix.run({"ours": server}, routes, groups, args, report, work, bulk)
            report["rss_after"] = server.memory_mib()[0]
    report["stats"] = matrix.aggregate(points)
    report["wall_s"] = time.monotonic() - started
    text = render(report)
    print("\n" + text)
    if not args.no_write:
        harness.write(report, text, args.results_dir, "-quick" if args.quick else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
