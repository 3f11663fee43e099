"""A/B of the service's per-request cost: two checkouts, interleaved, in-process ASGI calls.

``python -m bench ab --base DIR`` times batch-1 requests through the whole ASGI app (every
middleware, routing, the route, the data plane, the batcher, encoding), called in-process (no
network), for the checkout in DIR (A, e.g. ``git archive main | tar -x -C DIR``) and for this
checkout (B). A and B run in separate processes (the two versions of `service` cannot share
one), alternated round by round (A B, B A, A B, ...) so that a machine shared with other jobs
weighs on both alike; each process times blocks of calls round-robin over the routes. Reported:
per route, the median and p25 over all calls of each side, and B/A. With `--stub` the model
call is replaced by zeros of the output shapes, so that only the Python stack is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: (label, model case, encoder kind): the hot routes.
ROUTES = (
    ("classify V2 JSON", "classify", "v2"),
    ("classify task JSON", "classify", "task"),
    ("energy V2 JSON", "energy", "v2"),
    ("energy task JSON", "energy", "task"),
    ("energy TF Serving", "energy", "tfserving"),
    ("energy .npy", "energy", "npy"),
)


async def _worker(model_dir: Path, calls: int, block: int, stub: bool) -> dict[str, list[float]]:
    """Run in the checkout being measured: times of each route's calls, in seconds."""
    import numpy as np

    from bench import bodies as wire
    from bench.overhead import AsgiCall
    from service import registry as registry_module
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(
        model_dir=model_dir,
        expected_models=tuple(c.model for c in wire.CASES.values()),
        log_level="warning",
    )
    app = create_app(settings)
    times: dict[str, list[float]] = {label: [] for label, _, _ in ROUTES}
    async with app.router.lifespan_context(app):
        if stub:

            def stub_predict(self: Any, inputs: Any) -> dict[str, Any]:
                count = next(iter(inputs.values())).shape[0]
                return {
                    key: np.zeros([count, *spec.shape[1:]], spec.dtype)
                    for key, spec in self.outputs.items()
                }

            registry_module.ModelVersion.predict = stub_predict  # type: ignore[method-assign]
        requests = {}
        for label, key, kind in ROUTES:
            case = wire.CASES[key]
            call = AsgiCall(app, wire.ENCODERS[kind](case, case.inputs(1, 0)))
            for _ in range(30):  # warm-up, and a check that the route answers
                status = await call()
            if status != 200:
                raise SystemExit(f"{label} answered {status}")
            requests[label] = call
        done = 0
        while done < calls:
            for label, call in requests.items():
                for _ in range(block):
                    start = time.perf_counter()
                    await call()
                    times[label].append(time.perf_counter() - start)
            done += block
    return times


async def _batchers(base: Path, head: Path, calls: int, block: int) -> list[str]:
    """In one process, interleaved: `AdaptiveBatcher.submit` of both checkouts (their
    `service/batching.py` loaded by path: it imports nothing of the service) on an idle queue
    with a no-op model, each as the runner calls it (`wait_for` in A, `asyncio.timeout` in B)."""
    import importlib.util
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def load(root: Path, name: str) -> Any:
        spec = importlib.util.spec_from_file_location(name, root / "service" / "batching.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module

    executor = ThreadPoolExecutor(max_workers=2)
    x = np.zeros((1, 64), np.float32)
    a = load(base, "batching_a").AdaptiveBatcher(lambda v: {"y": v}, executor, 256, 0.0)
    b = load(head, "batching_b").AdaptiveBatcher(lambda v: {"y": v}, executor, 256, 0.0)

    async def in_a() -> Any:
        return await asyncio.wait_for(a.submit(x), 30)

    async def in_b() -> Any:
        async with asyncio.timeout(30):
            return await b.submit(x)

    times: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(50):
        await in_a()
        await in_b()
    for _ in range(0, calls, block):
        for side, call in (("A", in_a), ("B", in_b)):
            for _ in range(block):
                start = time.perf_counter()
                await call()
                times[side].append(time.perf_counter() - start)
    await a.close()
    await b.close()
    executor.shutdown()
    am, bm = statistics.median(times["A"]) * 1e6, statistics.median(times["B"]) * 1e6
    ap, bp = _quantile(times["A"], 0.25) * 1e6, _quantile(times["B"], 0.25) * 1e6
    return [
        f"batcher submit + time limit, idle queue, no-op model, {len(times['A'])} calls each",
        "| A median us | B median us | B/A median | A p25 us | B p25 us | B/A p25 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {am:,.0f} | {bm:,.0f} | {bm / am:.3f} | {ap:,.0f} | {bp:,.0f} | {bp / ap:.3f} |",
    ]


def _run_side(root: Path, model_dir: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        # `-c` from the side's root: its `service` and `bench` are the ones imported; this file
        # is loaded by path (checkout A may not have it).
        here = str(Path(__file__).resolve())
        loader = (
            "import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('bench_ab', {here!r}); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
            "sys.exit(module.main(sys.argv[1:]))"
        )
        command = [
            sys.executable,
            "-c",
            loader,
            "--worker",
            out.name,
            "--model-dir",
            str(model_dir),
            "--calls",
            str(args.calls),
            "--block",
            str(args.block),
        ] + (["--stub"] if args.stub else [])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run(command, cwd=root, env=env, check=True)
        result: dict[str, list[float]] = json.load(out)
        return result


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ab", description=__doc__)
    parser.add_argument("--base", type=Path, help="checkout A")
    parser.add_argument("--head", type=Path, default=REPO, help="checkout B (default: this one)")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per route and round")
    parser.add_argument("--block", type=int, default=30, help="calls per route before the next")
    parser.add_argument("--rounds", type=int, default=4, help="processes per side")
    parser.add_argument("--stub", action="store_true", help="zeros instead of the model call")
    parser.add_argument(
        "--batcher", action="store_true", help="A/B of the batcher alone, in one process"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import gc

        gc.collect()
        gc.freeze()
        times = asyncio.run(_worker(args.model_dir, args.calls, args.block, args.stub))
        Path(args.worker).write_text(json.dumps(times))
        return 0
    if args.base is None:  # `python -m bench` (all) has no checkout to compare with
        print("bench ab: skipped, needs --base DIR (checkout A)")
        return 0
    if args.batcher:
        lines = asyncio.run(_batchers(args.base, args.head, args.calls, args.block))
        print(f"A = {args.base}, B = {args.head}")
        print("\n".join(lines))
        return 0
    from bench.peers import model_folder

    sides = {"A": args.base.resolve(), "B": args.head.resolve()}
    collected: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        model_folder(Path(tmp), args.model_dir.resolve(), 1)
        for round_ in range(args.rounds):
            for side in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                print(f"round {round_ + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
                for label, values in _run_side(sides[side], Path(tmp), args).items():
                    collected[side].setdefault(label, []).extend(values)
    kind = "stub model" if args.stub else "real model"
    print(f"A = {sides['A']}, B = {sides['B']}; {kind}; {args.rounds} rounds x {args.calls} calls")
    print("| route | A median us | B median us | B/A median | A p25 us | B p25 us | B/A p25 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, _, _ in ROUTES:
        a, b = collected["A"][label], collected["B"][label]
        am, bm = statistics.median(a) * 1e6, statistics.median(b) * 1e6
        ap, bp = _quantile(a, 0.25) * 1e6, _quantile(b, 0.25) * 1e6
        cells = f"{am:,.0f} | {bm:,.0f} | {bm / am:.3f} | {ap:,.0f} | {bp:,.0f} | {bp / ap:.3f}"
        print(f"| {label} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
