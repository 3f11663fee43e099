"""Server CPU per request on each inference route, in process: the whole ASGI app (middleware,
routing, decoding, the data plane, the model call, encoding), no network and no uvicorn, on the
committed models with `MLDM_BACKEND` (default onnxruntime here), batching on as served.

CPU time of the process (every thread: a model call in a pool thread counts too) over `--calls`
requests of one route, best of `--rounds` rounds with the routes interleaved; the lowest round is
the least disturbed by other work on a shared machine. Run from the root of the tree to measure
(`python tests/service/request_cpu.py`, or with another checkout as the working directory to
compare two trees under the same load); `--inline-ms X` sets `inline_max_ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROUTES = ("v2", "v2-binary", "task", "tfserving")


async def measure(calls: int, rounds: int, inline: float | None) -> dict[str, float]:
    from bench import bodies as wire
    from bench.overhead import AsgiCall, served_app

    settings: dict[str, Any] = {"backend": os.environ.get("MLDM_BACKEND", "onnxruntime")}
    if inline is not None:
        settings["inline_max_ms"] = inline
    best: dict[str, float] = {}
    async with served_app(Path("models"), False, **settings) as app:
        routes = {}
        for case in wire.CASES.values():
            for kind in ROUTES:
                call = AsgiCall(app, wire.ENCODERS[kind](case, case.inputs(1, 0)))
                if (status := await call()) != 200:
                    raise RuntimeError(f"{case.key} {kind} answered {status}")
                routes[f"{case.model} {wire.KIND_TITLES[kind]}"] = call
        for _ in range(rounds):
            for name, call in routes.items():
                for _ in range(20):
                    await call()
                start = time.process_time()
                for _ in range(calls):
                    await call()
                us = (time.process_time() - start) / calls * 1e6
                best[name] = min(best.get(name, float("inf")), us)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inline-ms", type=float, default=None, help="inline_max_ms")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # the tree to measure: the working directory's
    for name, us in asyncio.run(measure(args.calls, args.rounds, args.inline_ms)).items():
        print(f"{name}\t{us:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
