"""Where a single request's time goes, piece by piece, in this process (no network, no load).

``python -m bench overhead`` times, as medians of many calls on an idle event loop, each step a
batch-1 request of the classifier and of the energy model takes through our service, so that
the gap between the in-process signature call and the served p50 at concurrency 1 can be put
down to named steps:

- the `serving_default` call itself, and through `ModelVersion.predict`;
- the hop to the inference thread pool and back when nothing else is queued;
- the adaptive batcher's round trip on an empty queue (task wake-up, future, executor hop);
- the runner's whole `predict` (batcher + time limit + model) with batching on and off;
- parsing the V2 and task JSON bodies with pydantic (strict) against orjson + numpy;
- encoding the answer with `JSONBody`;
- the whole ASGI app called in-process for each route (every middleware, routing, dependencies,
  parsing, the model, encoding), and for a trivial route (`GET /v2/health/live`).

The service's internals are imported where they are today; a step whose module moved is reported
as not measured rather than failing the run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench.serving import REPO


def median_us(function: Callable[..., Any], calls: int) -> float:
    for _ in range(min(50, calls)):
        function()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


async def amedian_us(function: Callable[..., Awaitable[Any]], calls: int) -> float:
    for _ in range(min(50, calls)):
        await function()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


class AsgiCall:
    """One request through an ASGI app, in-process: scope, body in, status and body out."""

    def __init__(self, app: Any, body: wire.Body) -> None:
        self.app = app
        path, _, query = body.path.partition("?")
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": body.method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in body.headers]
            + [(b"content-length", str(len(body.payload)).encode()), (b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        self.payload = body.payload
        self.status = 0

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


async def measure(model_dir: Path, calls: int) -> list[tuple[str, str, float]]:
    """(model, step, median us) for every step that could be measured."""
    import orjson
    import tensorflow as tf

    rows: list[tuple[str, str, float]] = []
    for case in wire.CASES.values():
        path = model_dir / case.model / "1"
        function = tf.saved_model.load(str(path)).signatures["serving_default"]
        x = case.inputs(1, 0)

        def direct(function: Any = function, x: np.ndarray = x, case: Any = case) -> None:
            next(iter(function(**{case.input_name: tf.constant(x)}).values())).numpy()

        rows.append(
            (case.key, "signature call (tf.constant in, .numpy() out)", median_us(direct, calls))
        )
        v2 = wire.v2_json(case, x).payload
        task = wire.task_json(case, x).payload
        rows.append(
            (
                case.key,
                "orjson.loads + np.asarray (V2 body)",
                median_us(
                    lambda v2=v2: np.asarray(
                        orjson.loads(v2)["inputs"][0]["data"], dtype=np.float32
                    ),
                    calls,
                ),
            )
        )
        try:
            from service.api.body import parse_json
            from service.arrays import to_numeric_array
            from service.schemas import V2InferenceRequest
            from service.tasks.digits import ClassifyRequest
            from service.tasks.energy import PotentialEnergyRequest

            rows.append(
                (
                    case.key,
                    "pydantic strict parse (V2 body)",
                    median_us(lambda v2=v2: parse_json(v2, V2InferenceRequest), calls),
                )
            )
            parsed = parse_json(v2, V2InferenceRequest)
            rows.append(
                (
                    case.key,
                    "to_numeric_array of the parsed V2 data",
                    median_us(
                        lambda parsed=parsed: to_numeric_array(
                            parsed.inputs[0].data, "inputs[0].data"
                        ),
                        calls,
                    ),
                )
            )
            model = ClassifyRequest if case.key == "classify" else PotentialEnergyRequest
            rows.append(
                (
                    case.key,
                    "pydantic strict parse (task body)",
                    median_us(lambda task=task, model=model: parse_json(task, model), calls),
                )
            )
        except ImportError as exc:
            rows.append((case.key, f"pydantic parse: not measured ({exc})", float("nan")))

    try:
        from service.api.responses import JSONBody

        out = {
            "model_name": "m",
            "model_version": "1",
            "outputs": [
                {
                    "name": "probabilities",
                    "shape": [1, 10],
                    "datatype": "FP32",
                    "data": np.random.default_rng(0).random(10, dtype=np.float32),
                }
            ],
        }
        rows.append(("classify", "JSONBody(V2 answer)", median_us(lambda: JSONBody(out), calls)))
    except ImportError as exc:
        rows.append(("-", f"JSONBody: not measured ({exc})", float("nan")))

    # Executor hop and batcher round trip with a function that does nothing.
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=2)
    loop = asyncio.get_running_loop()
    rows.append(
        (
            "-",
            "run_in_executor round trip (idle pool, no-op)",
            await amedian_us(lambda: loop.run_in_executor(executor, int), calls),
        )
    )
    rows.append(
        (
            "-",
            "asyncio.wait_for around that",
            await amedian_us(
                lambda: asyncio.wait_for(loop.run_in_executor(executor, int), 30), calls
            ),
        )
    )
    try:
        from service.batching import AdaptiveBatcher

        batcher = AdaptiveBatcher(lambda a: {"y": a}, executor, 256, 0.0, name="noop")
        x1 = np.zeros((1, 64), np.float32)
        rows.append(
            (
                "-",
                "AdaptiveBatcher.submit round trip (empty queue, no-op)",
                await amedian_us(lambda: batcher.submit(x1), calls),
            )
        )
        await batcher.close()
    except ImportError as exc:
        rows.append(("-", f"batcher: not measured ({exc})", float("nan")))

    # The whole app in-process, batching on and off.
    from service.app import create_app
    from service.settings import Settings

    registry_module: Any
    try:
        registry_module = importlib.import_module("service.registry")
    except ImportError as exc:  # moved by a restructuring: measure the real model only
        rows.append(("-", f"stub-model runs: not measured ({exc})", float("nan")))
        registry_module = None

    real_predict: Any = registry_module.ModelVersion.predict if registry_module else None

    def stub_predict(self: Any, inputs: Any) -> dict[str, np.ndarray]:
        """Zeros of the output shapes: the service stack without TensorFlow (nor its GIL use)."""
        count = next(iter(inputs.values())).shape[0]
        return {
            key: np.zeros([count, *spec.shape[1:]], spec.dtype)
            for key, spec in self.outputs.items()
        }

    variants = [(True, False), (False, False)]
    if registry_module is not None:
        variants += [(True, True), (False, True)]
    for batching, stub in variants:
        if registry_module is not None:
            registry_module.ModelVersion.predict = real_predict
        settings = Settings(
            model_dir=model_dir,
            expected_models=tuple(c.model for c in wire.CASES.values()),
            batching_enabled=batching,
            log_level="warning",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            if stub and registry_module is not None:
                registry_module.ModelVersion.predict = stub_predict
            label = ("on" if batching else "off") + (", stub model" if stub else "")
            live = AsgiCall(app, wire.Body("GET", "/v2/health/live", b""))
            rows.append(
                (
                    "-",
                    f"ASGI app, GET /v2/health/live (batching {label})",
                    await amedian_us(live, calls),
                )
            )
            for case in wire.CASES.values():
                x = case.inputs(1, 0)
                for kind in ("v2", "task", "npy"):
                    call = AsgiCall(app, wire.ENCODERS[kind](case, x))
                    status = await call()
                    if status != 200:
                        rows.append(
                            (case.key, f"ASGI app, {kind}: answered {status}", float("nan"))
                        )
                        continue
                    rows.append(
                        (
                            case.key,
                            f"ASGI app, {wire.KIND_TITLES[kind]} (batching {label})",
                            await amedian_us(call, calls),
                        )
                    )
            try:
                service = app.state.dataplane
                for case in wire.CASES.values():
                    model = app.state.registry.get(case.model)
                    inputs = {case.input_name: case.inputs(1, 0)}
                    rows.append(
                        (
                            case.key,
                            f"ModelRunner.predict (batching {label})",
                            await amedian_us(
                                lambda m=model, i=inputs, s=service: s.runner.predict(m, i), calls
                            ),
                        )
                    )
                    if batching and not stub:
                        rows.append(
                            (
                                case.key,
                                "ModelVersion.predict (no event loop)",
                                median_us(lambda m=model, i=inputs: m.predict(i), calls),
                            )
                        )
            except (AttributeError, TypeError) as exc:
                rows.append(("-", f"runner: not measured ({exc})", float("nan")))
    if registry_module is not None:
        registry_module.ModelVersion.predict = real_predict
    executor.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench overhead", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per step")
    args = parser.parse_args(argv)
    import gc

    gc.collect()
    gc.freeze()
    import tempfile

    from bench.peers import model_folder

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        # Only version 1 of the two models, as the peers benchmark serves them.
        model_folder(Path(tmp), args.model_dir.resolve(), 1)
        rows = asyncio.run(measure(Path(tmp), args.calls))
    print("| model | step | median us |\n| --- | --- | ---: |")
    for model, step, us in rows:
        print(f"| {model} | {step} | {us:,.0f} |" if us == us else f"| {model} | {step} | - |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
