"""Server CPU per request on each inference route, in process: the whole ASGI app (middleware,
routing, decoding, the data plane, the model call, encoding), no network and no uvicorn, on the
committed models with `MLDM_BACKEND` (default onnxruntime here), batching on as served.

CPU time of the process (every thread: a model call in a pool thread counts too) over `--calls`
requests of one route, best of `--rounds` rounds with the routes interleaved; the lowest round is
the least disturbed by other work on a shared machine. Run from the root of the tree to measure
(`python tests/service/request_cpu.py`, or with another checkout as the working directory to
compare two trees under the same load); `--inline-ms X` sets `inline_max_ms`. `--hop`: one
batch-1 model call per model, on the event loop against through a pool thread (the hop that
`inline_max_ms` saves), interleaved, CPU and wall microseconds. `--profile`: cProfile over one
round of each route instead, printing the Python function calls per request (a count that does not
depend on the machine's load) and the share of the event-loop thread's profiled time by
component (`COMPONENTS`; a model call in a pool thread is not in it).
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

#: `--profile`'s components: the first whose marker is in a function's file (or name) owns its
#: own time.
COMPONENTS = (
    ("model call", ("onnxruntime", "service/backends/", "registry.py")),
    ("not-a-digit rule", ("digit_shape",)),
    ("metrics", ("prometheus_client", "service/metrics.py")),
    ("JSON parse, pydantic", ("pydantic", "api/body.py", "json", "orjson")),
    ("codecs, routes, answers", ("service/codecs/", "service/tasks/", "api/routes/", "responses")),
    ("validation (arrays, data plane)", ("service/arrays.py", "service/dataplane.py", "numpy")),
    (
        "runner, batcher, thread hop",
        ("batching.py", "runtime.py", "concurrent/", "thread", "Queue"),
    ),
    ("our middleware", ("api/middleware.py", "api/limits.py", "api/compression.py", "gzip")),
    ("context, logging", ("service/context.py", "logging", "uuid")),
    ("dispatch, routing, request objects", ("dispatch.py", "routing.py", "deps.py", "requests.py")),
    ("FastAPI/Starlette layers", ("fastapi", "starlette", "contextlib")),
    ("event loop", ("asyncio", "selectors", "select.epoll", "_contextvars", "_socket", "heapq")),
    ("this script's ASGI driver", ("bench/asgi.py", "request_cpu.py")),
)


def component(where: str) -> str:
    return next((name for name, keys in COMPONENTS if any(k in where for k in keys)), "other")


async def measure(
    calls: int, rounds: int, inline: float | None, profile: bool = False
) -> dict[str, float]:
    from bench import bodies as wire
    from bench.asgi import AsgiCall, served_app

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
        if profile:
            return await _profile(routes, calls)
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


async def _profile(routes: dict[str, Any], calls: int) -> dict[str, float]:
    """Per route: Python function calls per request, then each component's share (%)."""
    import cProfile
    import pstats

    out: dict[str, float] = {}
    for name, call in routes.items():
        for _ in range(20):
            await call()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            await call()
        profiler.disable()
        stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        shares: dict[str, float] = {}
        total_calls = 0
        for (path, _line, function), (_cc, count, own, _cum, _callers) in stats.items():
            total_calls += count
            key = component(f"{path}:{function}")
            shares[key] = shares.get(key, 0.0) + own
        out[f"{name}: Python function calls per request"] = total_calls / calls
        idle = sum(own for (p, _l, f), (_c, _n, own, _u, _r) in stats.items() if "poll" in f)
        busy = sum(shares.values()) - idle
        shares["event loop"] = shares.get("event loop", 0.0) - idle
        for key, own in sorted(shares.items(), key=lambda kv: -kv[1]):
            out[f"{name}: % {key}"] = 100 * own / busy
    return out


async def hop(calls: int, rounds: int) -> dict[str, float]:
    """CPU and wall us of one batch-1 call inline and through a thread, per served model."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from bench import bodies as wire
    from service.registry import ModelRegistry
    from service.settings import Settings

    choice: dict[str, Any] = {"backend": os.environ.get("MLDM_BACKEND", "onnxruntime")}
    settings = Settings(model_dir=Path("models"), **choice)
    names = [case.model for case in wire.CASES.values()]
    registry = ModelRegistry(Path("models"), names, settings.backend_policy())
    registry.load(warm_up=True)
    loop, pool = asyncio.get_running_loop(), ThreadPoolExecutor(max_workers=2)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for case in wire.CASES.values():
            model = registry.get(case.model)
            inputs = {model.input.name: np.ascontiguousarray(case.inputs(1, 0), model.input.dtype)}
            for where in ("inline", "thread"):
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    if where == "inline":
                        model.predict(inputs)
                    else:
                        await loop.run_in_executor(pool, model.predict, inputs)
                for what, took in (
                    ("CPU", time.process_time() - cpu),
                    ("wall", time.perf_counter() - wall),
                ):
                    key = f"{case.model} v{model.version} ({model.backend_for(1)}) {where} {what}"
                    best[key] = min(best.get(key, float("inf")), took / calls * 1e6)
    pool.shutdown()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inline-ms", type=float, default=None, help="inline_max_ms")
    parser.add_argument("--hop", action="store_true", help="the model call inline vs in a thread")
    parser.add_argument("--profile", action="store_true", help="calls and time by component")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # the tree to measure: the working directory's
    run = (
        hop(args.calls, args.rounds)
        if args.hop
        else measure(args.calls, args.rounds, args.inline_ms, args.profile)
    )
    for name, us in asyncio.run(run).items():
        print(f"{name}\t{us:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
