"""Runs model calls off the event loop, through an adaptive batcher per model version, with a
time limit.

Inference is CPU work in TensorFlow (which releases the GIL), so it runs in a small thread pool
and the event loop stays free to accept and parse other requests meanwhile. With batching on
(the default, per model in the settings), concurrent calls to one model version are merged.

Admission control (issue 23): each model version holds a bounded number of requests, and a
request whose expected wait (the items queued before it times the model's measured seconds per
item) is too long is refused at once with 503 + `Retry-After` (`Overloaded`), before any work,
instead of queueing for seconds. Blocking work other than the models runs in named lanes, each
with its own threads and bound: the exact solver (`lane="solver"`) never waits in front of, or
holds up, the models.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import numpy as np

from service.batching import (
    AdaptiveBatcher,
    ComputeTime,
    chunks,
    concat,
    pad_rows,
    padded_size,
)
from service.errors import InferenceTimeout, Overloaded
from service.metrics import InferenceStats
from service.registry import ModelVersion
from service.settings import Settings

T = TypeVar("T")

#: Model calls whose seconds per item make the estimate (their median: a first call that
#: traces a new shape, or a stall of the machine, does not refuse requests for long).
_SAMPLES = 15


@dataclass(eq=False)
class Admission:
    """The bounded queue of one model version (or lane): requests counted in while queued or
    running, and the measured service time that predicts how long a new one would wait."""

    name: str
    #: The `model` label of `mldm_requests_rejected_total` (a model name or a lane).
    label: str
    max_requests: int
    max_wait_s: float
    stats: InferenceStats
    requests: int = field(default=0, init=False)
    items: int = field(default=0, init=False)
    #: Median seconds per item of the last model calls (0 until the first call).
    seconds_per_item: float = field(default=0.0, init=False)
    _samples: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES), init=False)

    def observe(self, items: int, seconds: float) -> None:
        """One model call on `items` items took `seconds`."""
        if items <= 0:
            return
        self._samples.append(seconds / items)
        self.seconds_per_item = sorted(self._samples)[len(self._samples) // 2]

    def expected_wait_s(self) -> float:
        """How long a request arriving now would wait for the items queued before it."""
        return self.items * self.seconds_per_item

    @contextmanager
    def admit(self, items: int) -> Iterator[None]:
        """Count a request of `items` in for the block, or raise `Overloaded` (503) at once."""
        self.enter(items)
        try:
            yield
        finally:
            self.leave(items)

    def enter(self, items: int, what: str = "requests", parallel: int = 1) -> None:
        """Count a request of `items` in (`leave` counts it out), or raise `Overloaded` (503) at
        once; `parallel` calls run at a time, which divides the expected wait."""
        wait = self.expected_wait_s() / parallel
        if self.requests >= self.max_requests:
            self.refuse("queue", f"{self.requests} {what} are queued or running", wait)
        if wait > self.max_wait_s:
            self.refuse("wait", f"the expected wait is {wait:.3f} s", wait)
        self.requests += 1
        self.items += items

    def leave(self, items: int) -> None:
        self.requests -= 1
        self.items -= items

    def refuse(self, reason: str, why: str, wait: float) -> NoReturn:
        """Count the refusal and raise the 503, with a `Retry-After` of about the wait."""
        self.stats.rejected.labels(self.label, reason).inc()
        limit = f"at most {self.max_requests} requests"
        if self.max_wait_s != float("inf"):
            limit += f", {self.max_wait_s * 1000:g} ms of expected wait"
            wait = max(wait, self.max_wait_s)
        raise Overloaded(
            f"{self.name} is overloaded: {why} ({limit}); retry later", retry_after_s=wait
        )


class Lane:
    """Its own threads and bound for one kind of blocking work (the exact solver): calls past
    the bound are refused at once; a call whose caller left before it started never runs."""

    def __init__(self, name: str, threads: int, max_calls: int, stats: InferenceStats) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self.threads = threads
        self.admission = Admission(f"the {name} lane", name, max_calls, float("inf"), stats)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        admission = self.admission
        admission.enter(1, what="calls", parallel=self.threads)
        took = [0.0]

        def timed() -> T:
            begin = time.perf_counter()
            try:
                return function(*args)
            finally:
                took[0] = time.perf_counter() - begin

        def count_out() -> None:
            admission.leave(1)
            if took[0]:
                admission.observe(1, took[0])

        # Counted out when the thread is done (or the call cancelled before it started), not
        # when the caller leaves: a running solver call cannot be stopped and holds its thread.
        future = self.executor.submit(timed)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(count_out))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class ModelRunner:
    """One per app: the thread pool and the batchers; closed in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(
            max_workers=settings.inference_threads, thread_name_prefix="inference"
        )
        self._batchers: dict[int, AdaptiveBatcher] = {}
        self._admissions: dict[int, tuple[ModelVersion, Admission]] = {}
        self._policies: dict[str, tuple[bool, int, float]] = {}
        self._pads: dict[str, tuple[int, ...]] = {}
        #: What every model call of this runner adds up to (`/metrics`, `/v2/models/stats`).
        self.stats = InferenceStats()
        #: Blocking work with threads and bounds of its own (`call(..., lane=...)`).
        self.lanes = {
            "solver": Lane(
                "solver", settings.solver_threads, settings.solver_max_queue, self.stats
            ),
        }

    def batcher(self, model: ModelVersion) -> AdaptiveBatcher | None:
        """The batcher of a one-input model version, if batching is on for it."""
        policy = self._policies.get(model.name)
        if policy is None:  # settings are frozen for the app's life: resolve once per model
            policy = self._policies[model.name] = self.settings.batching_for(model.name)
        enabled, size, wait = policy
        if not enabled or len(model.inputs) != 1:
            return None
        # One queue per model object: a version folder replaced on disk and reloaded is a new
        # object, and requests still holding the old one keep using the old queue. The batcher's
        # `call` holds its model, so the id cannot be reused while the entry exists.
        key = id(model)
        batcher = self._batchers.get(key)
        if batcher is None:
            input_name = model.input.name
            sizes = self._pad_sizes(model)

            def call(array: np.ndarray) -> Mapping[str, np.ndarray]:
                return predict_padded(model, {input_name: array}, sizes)

            admission = self.admission(model)

            def record(items: int, queue_s: float, compute_s: float) -> None:
                admission.observe(items, compute_s)
                self.stats.record_execution(model.name, model.version, items, queue_s, compute_s)

            batcher = AdaptiveBatcher(
                call,
                self._executor,
                size,
                wait,
                name=f"{model.name}/{model.version}",
                on_batch=record,
                inline=lambda items: self.inline(model, items),
            )
            self._batchers[key] = batcher
        return batcher

    def inline(self, model: ModelVersion, items: int) -> bool:
        """Whether a call of `items` runs on the event loop (`Settings.inline_max_ms`): a
        compiled runtime's call measured short; TensorFlow's always goes to a thread."""
        budget = self.settings.inline_max_ms / 1000
        if budget <= 0 or model.backend_for(items) == "tensorflow":
            return False
        per_item = self.admission(model).seconds_per_item  # 0 until a call was measured
        return 0 < items * per_item <= budget

    def admission(self, model: ModelVersion) -> Admission:
        """The bounded queue of one model version object (kept with the object, as its batcher)."""
        entry = self._admissions.get(id(model))
        if entry is None:
            max_requests, max_wait_s = self.settings.admission_for(model.name)
            name = f"model {model.name!r} version {model.version}"
            admission = Admission(name, model.name, max_requests, max_wait_s, self.stats)
            entry = self._admissions[id(model)] = (model, admission)
        return entry[1]

    async def execute(
        self,
        model: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        compute: ComputeTime | None = None,
    ) -> dict[str, np.ndarray]:
        """All outputs of the model for `inputs` (already of the inputs' dtypes and shapes),
        through the batcher or in chunks; no time limit of its own (the caller's `limit`).
        `compute` adds up the model time of the calls this request took part in. Refused at once
        (503 `Overloaded`) when the model version's queue is full."""
        size = int(next(iter(inputs.values())).shape[0])
        admission = self.admission(model)
        with admission.admit(size):
            batcher = self.batcher(model)
            if batcher is not None:
                (array,) = inputs.values()
                return await batcher.submit(array, compute)
            loop = asyncio.get_running_loop()
            queued = time.perf_counter()
            work = (model, inputs, self._chunk(model), self._pad_sizes(model))
            if self.inline(model, size):
                outputs, started, timings = _predict_in_chunks(*work)
            else:
                outputs, started, timings = await loop.run_in_executor(
                    self._executor, _predict_in_chunks, *work
                )
            for items, seconds in timings:
                queue_s = started - queued
                admission.observe(items, seconds)
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

    async def call(
        self, what: str, function: Callable[..., T], *args: Any, lane: str | None = None
    ) -> T:
        """Any blocking call, limited to `request_timeout_s`: in the inference threads, or in
        the named `lane`'s own threads under its bound (503 `Overloaded` past it)."""
        if lane is not None:
            return await self.limit(what, self.lanes[lane].run(function, *args))
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
        for lane in self.lanes.values():
            lane.close()
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
