"""A/B of the per-request cost of two checkouts (``python -m bench ab --base DIR``): the in-process
ASGI timings of `bench.overhead`, each side in its own processes, alternated (A B, B A, ...) so
that a shared machine weighs on both alike; per route the median and p25 of each side and B/A.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import harness
from bench.matrix import model_folder

ROUTES = ("v2", "task", "npy", "tfserving")


async def _worker(model_dir: Path, calls: int, block: int, stub: bool) -> dict[str, list[float]]:
    """In the checkout being measured: the times of each route's calls, in seconds."""
    from bench.overhead import app_routes, served_app

    async with served_app(model_dir, stub) as app:
        routes = await app_routes(app, ROUTES)
        times: dict[str, list[float]] = {name: [] for name in routes}
        for call in routes.values():
            for _ in range(30):
                await call()
        for _ in range(0, calls, block):
            for name, call in routes.items():
                for _ in range(block):
                    start = time.perf_counter()
                    await call()
                    times[name].append(time.perf_counter() - start)
    return times


def _side(root: Path, model_dir: Path, args: list[str]) -> dict[str, list[float]]:
    """One worker process in checkout `root`: its own `service` and `bench` are imported."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        command = [
            sys.executable,
            "-m",
            "bench",
            "ab",
            "--worker",
            out.name,
            "--model-dir",
            str(model_dir),
            *args,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(root)}
        subprocess.run(command, cwd=root, env=env, check=True)
        result: dict[str, list[float]] = json.load(out)
        return result


def _p25(values: list[float]) -> float:
    return statistics.quantiles(values, n=4)[0] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("ab", __doc__, results=False)
    p.add_argument("--base", type=Path, help="checkout A (it must have bench/ab.py too)")
    p.add_argument("--head", type=Path, default=harness.REPO, help="checkout B (default: this one)")
    p.add_argument("--calls", type=int, default=300, help="timed calls per route and round")
    p.add_argument("--block", type=int, default=30, help="calls per route before the next")
    p.add_argument("--rounds", type=int, default=4, help="processes per side")
    p.add_argument("--stub", action="store_true", help="zeros instead of the model call")
    p.add_argument("--worker", help="(internal) write this side's times to this file")
    args = harness.parse(p, argv)
    passed = ["--calls", str(args.calls), "--block", str(args.block)] + (
        ["--stub"] if args.stub else []
    )
    if args.worker:
        gc.collect()
        gc.freeze()
        times = asyncio.run(_worker(args.model_dir, args.calls, args.block, args.stub))
        Path(args.worker).write_text(json.dumps(times))
        return 0
    if args.base is None:  # `python -m bench` (all) has no checkout to compare with
        print("bench ab: skipped, needs --base DIR (checkout A)")
        return 0
    sides = {"A": args.base.resolve(), "B": args.head.resolve()}
    collected: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        model_folder(Path(tmp), args.model_dir.resolve(), 1)
        for r in range(args.rounds):
            for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                print(f"round {r + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
                for name, values in _side(sides[side], Path(tmp), passed).items():
                    collected[side].setdefault(name, []).extend(values)
    print(
        f"A = {sides['A']}, B = {sides['B']}; {'stub' if args.stub else 'real'} model; "
        f"{args.rounds} rounds x {args.calls} calls"
    )
    print("| route | A median us | B median us | B/A median | A p25 us | B p25 us | B/A p25 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in collected["B"]:
        a, b = collected["A"].get(name), collected["B"][name]
        if not a:
            continue
        am, bm, ap, bp = (
            v * 1e6 for v in (statistics.median(a), statistics.median(b), _p25(a), _p25(b))
        )
        print(
            f"| {name} | {am:,.0f} | {bm:,.0f} | {bm / am:.3f} | {ap:,.0f} | {bp:,.0f} "
            f"| {bp / ap:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
