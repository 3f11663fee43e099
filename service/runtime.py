"""Runs model calls off the event loop, through an adaptive batcher per model version, with a
time limit.

Inference is CPU work in TensorFlow (which releases the GIL), so it runs in a small thread pool
and the event loop stays free to accept and parse other requests meanwhile. With batching on
(the default, per model in the settings), concurrent calls to one model version are merged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from service.batching import (
    AdaptiveBatcher,
    ComputeTime,
    chunks,
    concat,
    pad_rows,
    padded_size,
)
from service.errors import InferenceTimeout
from service.metrics import InferenceStats
from service.registry import ModelVersion
from service.settings import Settings

T = TypeVar("T")


class ModelRunner:
    """One per app: the thread pool and the batchers; closed in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(
            max_workers=settings.inference_threads, thread_name_prefix="inference"
        )
        self._batchers: dict[int, AdaptiveBatcher] = {}
        self._policies: dict[str, tuple[bool, int, float]] = {}
        self._pads: dict[str, tuple[int, ...]] = {}
        #: What every model call of this runner adds up to (`/metrics`, `/v2/models/stats`).
        self.stats = InferenceStats()

    def batcher(self, model: ModelVersion) -> AdaptiveBatcher | None:
        """The batcher of a one-input model version, if batching is on for it."""
        policy = self._policies.get(model.name)
        if policy is None:  # settings are frozen for the app's life: resolve once per model
            policy = self._policies[model.name] = self.settings.batching_for(model.name)
        enabled, size, wait = policy
        if not enabled or len(model.inputs) != 1:
            return None
        # One queue per model object: a version folder replaced on disk and reloaded is a new
        # object, and requests still holding the old one keep using the old queue. The batcher
        # holds its model (`owner`), so the id cannot be reused while the entry exists.
        key = id(model)
        batcher = self._batchers.get(key)
        if batcher is None:
            input_name = model.input.name
            sizes = self._pad_sizes(model)

            def call(array: np.ndarray) -> Mapping[str, np.ndarray]:
                return predict_padded(model, {input_name: array}, sizes)

            def record(items: int, queue_s: float, compute_s: float) -> None:
                self.stats.record_execution(model.name, model.version, items, queue_s, compute_s)

            batcher = AdaptiveBatcher(
                call,
                self._executor,
                size,
                wait,
                name=f"{model.name}/{model.version}",
                on_batch=record,
            )
            batcher.owner = model
            self._batchers[key] = batcher
        return batcher

    async def execute(
        self,
        model: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        compute: ComputeTime | None = None,
    ) -> dict[str, np.ndarray]:
        """All outputs of the model for `inputs` (already of the inputs' dtypes and shapes),
        through the batcher or in chunks; no time limit of its own (the caller's `limit`).
        `compute` adds up the model time of the calls this request took part in."""
        batcher = self.batcher(model)
        if batcher is not None:
            (array,) = inputs.values()
            return await batcher.submit(array, compute)
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()
        outputs, started, timings = await loop.run_in_executor(
            self._executor,
            _predict_in_chunks,
            model,
            inputs,
            self._chunk(model),
            self._pad_sizes(model),
        )
        for items, seconds in timings:
            queue_s = started - queued
            self.stats.record_execution(model.name, model.version, items, queue_s, seconds)
            if compute is not None:
                compute.add(seconds)
        return outputs

    async def predict(
        self, model: ModelVersion, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """`execute` limited to `request_timeout_s`."""
        return await self.limit(f"model {model.name!r}", self.execute(model, inputs))

    def _pad_sizes(self, model: ModelVersion) -> tuple[int, ...]:
        sizes = self._pads.get(model.name)
        if sizes is None:
            sizes = self._pads[model.name] = self.settings.pad_sizes_for(model.name)
        return sizes

    def _chunk(self, model: ModelVersion) -> int:
        """Largest number of items per model call (the batch size of batching, even when off)."""
        policy = self._policies.get(model.name) or self.settings.batching_for(model.name)
        return policy[1]

    async def run(self, model: ModelVersion, array: np.ndarray) -> np.ndarray:
        """The model's single output for `array`."""
        outputs = await self.predict(model, {model.input.name: array})
        return outputs[model.output.name]

    async def call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """Any blocking call in the pool, limited to `request_timeout_s`."""
        loop = asyncio.get_running_loop()
        return await self.limit(what, loop.run_in_executor(self._executor, function, *args))

    async def limit(self, what: str, awaitable: Awaitable[T]) -> T:
        """`awaitable` within `request_timeout_s`, else a 504 naming `what`."""
        try:
            # A deadline on the current task (`loop.call_at`), not `wait_for`'s extra task per
            # request.
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await awaitable
        except TimeoutError:
            raise InferenceTimeout(
                f"{what} did not answer within {self.settings.request_timeout_s:g} s"
            ) from None

    async def aclose(self) -> None:
        """Stop the batchers, then the threads."""
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def predict_padded(
    model: ModelVersion, inputs: Mapping[str, np.ndarray], sizes: tuple[int, ...]
) -> Mapping[str, np.ndarray]:
    """`model.predict` on `inputs` padded up to the next allowed batch size (`sizes`), outputs
    cut back to the real rows: the model sees a bounded set of shapes, so TensorFlow's and
    oneDNN's per-shape state stays bounded too (`Settings.batch_pad_sizes`)."""
    count = next(iter(inputs.values())).shape[0]
    size = padded_size(count, sizes)
    if size == count:
        return model.predict(inputs)
    outputs = model.predict({key: pad_rows(value, size) for key, value in inputs.items()})
    return {key: value[:count] for key, value in outputs.items()}


def _predict_in_chunks(
    model: ModelVersion, inputs: Mapping[str, np.ndarray], chunk: int, sizes: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], float, list[tuple[int, float]]]:
    """`model.predict` in calls of at most `chunk` items, concatenated: bounded memory. Also
    when the work started and (items, seconds) of each call, for the statistics."""
    started = time.perf_counter()
    count = next(iter(inputs.values())).shape[0]
    parts, timings = [], []
    for part in chunks(count, chunk):
        begin = time.perf_counter()
        parts.append(
            predict_padded(model, {key: value[part] for key, value in inputs.items()}, sizes)
        )
        timings.append((part.stop - part.start, time.perf_counter() - begin))
    return concat(parts), started, timings
