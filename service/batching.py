"""Adaptive batching: concurrent requests to one model merged into one call, then split back.

As in TensorFlow Serving, Triton and MLServer: each model version has a queue and one worker task.
The worker takes the first waiting request, lets others join until the batch holds
`max_batch_size` items or `max_wait` has passed, concatenates them, runs the model once in a
thread and hands each request its own rows, in order (a lone request with nothing else waiting
skips the worker; if the `inline` policy accepts its size, it runs on the event loop itself).
Requests that arrive while a batch runs form the next one, so under load batches grow by
themselves even with no wait at all. A request cancelled while it waits is dropped from its
batch; if a merged call fails, each request of the batch is retried alone, so one bad input
never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
BatchFunction = Callable[[np.ndarray], Mapping[str, np.ndarray]]
#: Told of each model call: (items, queue wait of its oldest request s, compute s).
BatchListener = Callable[[int, float, float], None]
#: Whether a call of this many items is short enough to run on the event loop itself.
InlinePolicy = Callable[[int], bool]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (none: nothing to do) and wait until it has ended. Here because
    the batcher imports nothing of the service; the reloader and the gRPC server stop their
    pollers with it too."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def chunks(count: int, size: int) -> list[slice]:
    """`count` items as consecutive slices of at most `size`: the one chunking of bulk requests
    (queued chunk by chunk with batching on, called chunk by chunk with it off)."""
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]


def concat(parts: Sequence[Mapping[str, np.ndarray]]) -> Outputs:
    """The named outputs of consecutive chunks joined back into one batch."""
    if len(parts) == 1:
        return dict(parts[0])
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def padded_size(count: int, sizes: Sequence[int]) -> int:
    """The smallest of the ascending allowed `sizes` that holds `count` rows (`count` itself
    when there is none)."""
    for size in sizes:
        if size >= count:
            return size
    return count


def pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    """`array` `[n, ...]` grown to `[size, ...]` by repeating its last row: a real input, so
    the padding rows cannot hit a numeric edge (zeros, NaN) the model was never given."""
    extra = size - array.shape[0]
    if extra <= 0 or array.shape[0] == 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)])


def _timed(function: BatchFunction, array: np.ndarray) -> tuple[Mapping[str, np.ndarray], float]:
    start = time.perf_counter()
    return function(array), time.perf_counter() - start


@dataclass
class ComputeTime:
    """The model time of every call one request took part in (its per-request statistics: a
    merged batch's time counts for each request in it, as in Triton)."""

    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.seconds += seconds


@dataclass
class _Request:
    array: np.ndarray
    future: asyncio.Future[Outputs]
    queued_at: float = field(default_factory=time.perf_counter)
    compute: ComputeTime | None = None

    @property
    def size(self) -> int:
        return int(self.array.shape[0])


@dataclass
class BatchStats:
    """Counters of one batcher, for tests (the metrics come from the runner's `on_batch`)."""

    batches: int = 0
    requests: int = 0
    items: int = 0
    fallbacks: int = 0

    def record(self, requests: int, items: int) -> None:
        self.batches += 1
        self.requests += requests
        self.items += items


class AdaptiveBatcher:
    """Merges concurrent calls of `function` on arrays `[n, ...]` into calls on `[sum n, ...]`."""

    def __init__(
        self,
        function: BatchFunction,
        executor: Executor,
        max_batch_size: int,
        max_wait_s: float,
        name: str = "model",
        on_batch: BatchListener | None = None,
        inline: InlinePolicy | None = None,
    ) -> None:
        self.function = function
        self.on_batch = on_batch
        #: A direct call (nothing queued or running) whose size this accepts runs on the event
        #: loop: a compiled batch-1 call is shorter than the hop to a pool thread and back.
        self.inline = inline
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.name = name
        self.stats = BatchStats()
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        #: A model call of this batcher is in the pool (the worker's batch or a direct call).
        self._busy = False

    async def submit(self, array: np.ndarray, compute: ComputeTime | None = None) -> Outputs:
        """The function's outputs for `array` alone, computed as part of a merged batch.

        An array of more than `max_batch_size` items is queued as consecutive chunks, so one
        bulk request neither holds the model for long nor needs the memory of one huge call.
        `compute`, when given, adds up the model time of the calls the request took part in.
        """
        if array.shape[0] > self.max_batch_size:
            parts = await asyncio.gather(
                *(
                    self._submit(array[s], compute)
                    for s in chunks(array.shape[0], self.max_batch_size)
                )
            )
            return concat(parts)
        return await self._submit(array, compute)

    async def _submit(self, array: np.ndarray, compute: ComputeTime | None = None) -> Outputs:
        if not self._busy and not self._queue and self.max_wait_s == 0:
            return await self._direct(array, compute)
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(array, future, compute=compute))
        self._wake()
        # A cancelled await cancels `future` too; the worker then skips or drops the request.
        return await future

    async def _direct(self, array: np.ndarray, compute: ComputeTime | None = None) -> Outputs:
        """Nothing queued, nothing running, no wait: the call goes to the pool from the caller's
        task, which saves the worker's hand-offs (a loop iteration and a future each way), or,
        for a size `inline` accepts, runs right here on the event loop (no hop at all).

        Requests that arrive in the same loop iteration (a burst) must still merge: the caller
        lets them queue first (one `sleep(0)`, the iteration the worker's wake-up took), and
        if any did, it joins them at the head of the queue for the worker. Requests arriving
        while the call runs queue and form the next batch once it is done, as behind the worker.
        """
        self._busy = True
        try:
            await asyncio.sleep(0)
        except BaseException:
            self._busy = False
            raise
        if self._queue:  # a burst: the worker merges it, this request first
            self._busy = False
            future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
            self._queue.appendleft(_Request(array, future, compute=compute))
            self._wake()
            return await future
        self.stats.record(1, int(array.shape[0]))
        if self.inline is not None and self.inline(int(array.shape[0])):
            try:
                outputs, seconds = _timed(self.function, array)
            finally:
                self._busy = False
        else:
            outputs, seconds = await self._in_pool(array)
        if compute is not None:
            compute.add(seconds)
        if self.on_batch is not None:
            self.on_batch(int(array.shape[0]), 0.0, seconds)
        return dict(outputs)

    async def _in_pool(self, array: np.ndarray) -> tuple[Mapping[str, np.ndarray], float]:
        call = asyncio.get_running_loop().run_in_executor(
            self.executor, _timed, self.function, array
        )
        # Busy until the thread is done, even if the caller gives up before (shield).
        call.add_done_callback(self._direct_done)
        return await asyncio.shield(call)

    def _direct_done(self, future: asyncio.Future[Any]) -> None:
        self._busy = False
        if not future.cancelled():
            future.exception()  # retrieved: a caller that gave up must not leave it unlogged
        if self._queue:
            self._wake()

    def _wake(self) -> None:
        """Requests are queued: start the worker if it is not running, and wake it."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name=f"batcher-{self.name}")
        self._wakeup.set()

    async def close(self) -> None:
        """Stop the worker; requests still queued are cancelled."""
        await cancel_and_wait(self._worker)
        self._worker = None
        while self._queue:
            self._queue.popleft().future.cancel()

    def _queued_items(self) -> int:
        return sum(r.size for r in self._queue if not r.future.done())

    async def _collect(self) -> list[_Request]:
        """Wait for a first request, then for more until the batch is full or the wait is over."""
        while not self._queue or self._busy:  # busy: a direct call; its end wakes us
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.max_wait_s > 0 and self._queued_items() < self.max_batch_size:
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while self._queued_items() < self.max_batch_size:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
                except TimeoutError:
                    break
        batch: list[_Request] = []
        items = 0
        while self._queue:
            request = self._queue[0]
            if request.future.done():  # cancelled while waiting: never runs
                self._queue.popleft()
                continue
            if batch and items + request.size > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            items += request.size
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            sizes = [r.size for r in batch]
            merged = batch[0].array if len(batch) == 1 else np.concatenate([r.array for r in batch])
            self.stats.record(len(batch), int(merged.shape[0]))
            waited = time.perf_counter() - batch[0].queued_at
            self._busy = True
            try:
                outputs, seconds = await loop.run_in_executor(
                    self.executor, _timed, self.function, merged
                )
            except Exception as exc:
                if len(batch) == 1:
                    _resolve(batch[0], error=exc)
                else:
                    await self._retry_alone(batch, exc)
                continue
            finally:
                self._busy = False
            for request in batch:
                if request.compute is not None:
                    request.compute.add(seconds)
            if self.on_batch is not None:
                self.on_batch(int(merged.shape[0]), waited, seconds)
            if len(batch) == 1:
                _resolve(batch[0], outputs=dict(outputs))
                continue
            bounds = np.cumsum(sizes)[:-1]
            split = {key: np.split(value, bounds) for key, value in outputs.items()}
            for i, request in enumerate(batch):
                _resolve(request, outputs={key: parts[i] for key, parts in split.items()})

    async def _retry_alone(self, batch: list[_Request], exc: Exception) -> None:
        """One bad request must not fail the others of its batch: run each alone."""
        loop = asyncio.get_running_loop()
        self.stats.fallbacks += 1
        logger.warning("batch of %d on %s failed (%s); retrying alone", len(batch), self.name, exc)
        for request in batch:
            if request.future.done():
                continue
            try:
                alone, seconds = await loop.run_in_executor(
                    self.executor, _timed, self.function, request.array
                )
            except Exception as single:
                _resolve(request, error=single)
            else:
                if request.compute is not None:
                    request.compute.add(seconds)
                _resolve(request, outputs=dict(alone))


def _resolve(
    request: _Request, outputs: Outputs | None = None, error: Exception | None = None
) -> None:
    if request.future.done():  # cancelled (client gone or timed out) while the batch ran
        return
    if error is not None:
        request.future.set_exception(error)
    else:
        assert outputs is not None
        request.future.set_result(outputs)
