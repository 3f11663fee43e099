"""Where one request's time goes, timed in-process (no network): the signature call, the pool
hop, the batcher, the metric calls, the whole ASGI app per protocol (``python -m bench overhead``).
``--only metrics``: the metric calls of one served request alone (best of 5 x 20,000, in a child
process each with in-memory values and with `PROMETHEUS_MULTIPROC_DIR` set, as with workers > 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import harness
from bench.matrix import model_folder


async def median_us(call: Callable[[], Any], calls: int) -> float:
    """Median microseconds of `calls` calls (awaited if they return an awaitable), after up to
    50 unmeasured ones."""
    times = []
    for i in range(calls + min(50, calls)):
        start = time.perf_counter()
        if inspect.isawaitable(result := call()):
            await result
        if i >= min(50, calls):
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


class AsgiCall:
    """One request through an ASGI app, in-process: scope and body in, status out."""

    def __init__(self, app: Any, body: wire.Body) -> None:
        path, _, query = body.path.partition("?")
        headers = [(k.lower().encode(), v.encode()) for k, v in body.headers]
        headers += [(b"content-length", str(len(body.payload)).encode()), (b"host", b"bench")]
        self.app, self.payload, self.status = app, body.payload, 0
        self.scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}, "scheme": "http"}
        self.scope |= dict(method=body.method, path=path, raw_path=path.encode(), root_path="")
        self.scope |= dict(query_string=query.encode(), headers=headers, http_version="1.1")
        self.scope |= dict(client=("127.0.0.1", 1), server=("127.0.0.1", 80))

    async def __call__(self) -> int:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.payload, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        await self.app(dict(self.scope), receive, send)
        return self.status


def stub_predict(self: Any, inputs: Any) -> dict[str, np.ndarray]:
    """Zeros of the output shapes: the service stack without TensorFlow."""
    count = next(iter(inputs.values())).shape[0]
    return {k: np.zeros([count, *spec.shape[1:]], spec.dtype) for k, spec in self.outputs.items()}


@contextlib.asynccontextmanager
async def served_app(model_dir: Path, stub: bool, **settings: Any) -> AsyncIterator[Any]:
    """The service's app with its models loaded (lifespan run), the model stubbed if asked."""
    from service import registry
    from service.app import create_app
    from service.settings import Settings

    models = tuple(c.model for c in wire.CASES.values())
    app = create_app(
        Settings(model_dir=model_dir, expected_models=models, log_level="warning", **settings)
    )
    real = registry.ModelVersion.predict
    async with app.router.lifespan_context(app):
        if stub:
            registry.ModelVersion.predict = stub_predict  # type: ignore[method-assign]
        try:
            yield app
        finally:
            registry.ModelVersion.predict = real  # type: ignore[method-assign]


async def app_routes(app: Any) -> dict[str, AsgiCall]:
    """One checked `AsgiCall` per (model, protocol); a route that does not answer 200 fails."""
    calls = {}
    for case in wire.CASES.values():
        for kind in ("v2", "task", "npy"):
            call = AsgiCall(app, wire.ENCODERS[kind](case, case.inputs(1, 0)))
            if (status := await call()) != 200:
                raise RuntimeError(f"{case.key} {kind} answered {status}")
            calls[f"{case.key} {wire.KIND_TITLES[kind]}"] = call
    return calls


async def measure(model_dir: Path, calls: int) -> list[tuple[str, float]]:
    """(step, median us) for every step."""
    rows = []
    for case in wire.CASES.values():
        timing = harness.signature_timing(model_dir / case.model / "1", 1, 2.0)
        rows.append((f"{case.key}: signature call, batch 1", timing["median_ms"] * 1e3))
    from concurrent.futures import ThreadPoolExecutor

    from service.batching import AdaptiveBatcher

    executor, loop = ThreadPoolExecutor(max_workers=2), asyncio.get_running_loop()
    hop = await median_us(lambda: loop.run_in_executor(executor, int), calls)
    rows.append(("run_in_executor round trip (idle pool, no-op)", hop))
    batcher = AdaptiveBatcher(lambda a: {"y": a}, executor, 256, 0.0, name="noop")
    x1 = np.zeros((1, 64), np.float32)
    batched = await median_us(lambda: batcher.submit(x1), calls)
    rows.append(("AdaptiveBatcher.submit round trip (empty queue, no-op)", batched))
    await batcher.close()
    executor.shutdown()
    for batching in (True, False):
        for stub in (False, True):
            label = f"batching {'on' if batching else 'off'}{', stub model' if stub else ''}"
            async with served_app(model_dir, stub, batching_enabled=batching) as app:
                live = AsgiCall(app, wire.Body("GET", "/v2/health/live"))
                routes = {"GET /v2/health/live": live, **(await app_routes(app))}
                for name, route in routes.items():
                    rows.append((f"ASGI app, {name} ({label})", await median_us(route, calls)))
    return rows


def metric_calls_us() -> float:
    """Microseconds of the metric calls one served request makes (best of 5 x 20,000)."""
    from service.metrics import InferenceStats, Metrics

    stats = InferenceStats()
    metrics, calls = Metrics(stats=stats), 20_000
    model, route = "energy_from_potential", "/api/v1/energy/from-potential"

    def one() -> None:
        metrics.in_flight.inc()
        stats.record_execution(model, 1, 1, 0.0001, 0.001)
        stats.record_request(model, 1, 1, 0.002, ok=True)
        metrics.in_flight.dec()
        metrics.observe_request("POST", route, model, 200, 0.003)

    return min(timeit.repeat(one, number=calls, repeat=5)) / calls * 1e6


def metric_rows() -> list[tuple[str, float]]:
    """`metric_calls_us` in a child process with one process's metrics, then multiprocess."""
    rows, env = [], {k: v for k, v in harness.base_env().items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    command = [sys.executable, "-m", "bench.overhead", "--metrics-child"]
    with tempfile.TemporaryDirectory() as folder:
        for label, extra in (
            ("one process", {}),
            ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": folder}),
        ):
            done = subprocess.run(command, env={**env, **extra}, capture_output=True, check=True)
            rows.append((f"metric calls of one request, {label}", float(done.stdout.split()[-1])))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("overhead", __doc__, results=False)
    p.add_argument("--calls", type=int, default=1000, help="timed calls per step")
    p.add_argument("--only", choices=["metrics"], help="the metric calls alone")
    p.add_argument("--metrics-child", action="store_true", help=argparse.SUPPRESS)
    args = harness.parse(p, argv)
    if args.metrics_child:
        print(f"{metric_calls_us():.2f}")
        return 0
    rows = metric_rows()
    if args.only is None:
        gc.collect()
        gc.freeze()
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
            model_folder(Path(tmp), args.model_dir.resolve(), 1)  # version 1 only, as the peers run
            rows += asyncio.run(measure(Path(tmp), args.calls))
    print("| step | us (median; metric calls: best of 5) |\n| --- | ---: |")
    print("\n".join(f"| {step} | {us:,.2f} |" for step, us in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
