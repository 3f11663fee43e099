"""`auto`: which backend serves which batch sizes, measured at load.

Each usable backend is timed on the verification batch's inputs tiled to each measured batch
size (median of a few calls, the backends interleaved so that a busy machine slows them alike);
the fastest at a size serves the batches up to that size (and every larger one, for the largest
size measured). The gain of a compiled runtime is at small batches, where TensorFlow's per-call
cost dominates; at 64 TensorFlow's threads can win again, hence per size.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MEASURE_SIZES = (1, 8, 64)


@dataclass(frozen=True)
class Plan:
    """`steps`: (largest batch size, backend name), ascending; the last step also serves every
    larger batch."""

    steps: tuple[tuple[int, str], ...]

    @classmethod
    def single(cls, backend: str) -> Plan:
        return cls(steps=((1, backend),))

    def for_size(self, items: int) -> str:
        for size, backend in self.steps:
            if items <= size:
                return backend
        return self.steps[-1][1]

    @property
    def backends(self) -> list[str]:
        """The backends this plan uses, in order of first use."""
        return list(dict.fromkeys(backend for _, backend in self.steps))

    def describe(self) -> dict[str, str]:
        """`{"1-8": "onnxruntime", "9+": "tensorflow"}`: for the model card and the docs."""
        out: dict[str, str] = {}
        low = 1
        for index, (size, backend) in enumerate(self.steps):
            last = index == len(self.steps) - 1
            out[f"{low}+" if last else f"{low}-{size}" if size > low else str(low)] = backend
            low = size + 1
        return out


def tile(inputs: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """The inputs repeated (or cut) along the batch axis to `size` items."""
    out = {}
    for name, array in inputs.items():
        index = np.arange(size) % len(array)
        out[name] = np.ascontiguousarray(array[index])
    return out


def measure(
    run: Mapping[str, Callable[[Mapping[str, np.ndarray]], object]],
    inputs: Mapping[str, np.ndarray],
    sizes: Sequence[int] = MEASURE_SIZES,
    repeats: int = 9,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[int, float]]:
    """Median seconds per call of each backend at each batch size."""
    timings: dict[str, dict[int, list[float]]] = {name: {s: [] for s in sizes} for name in run}
    for size in sizes:
        batch = tile(inputs, size)
        for call in run.values():
            call(batch)  # warm-up: per-shape set-up is not the steady cost
        for _ in range(repeats):
            for name, call in run.items():
                start = clock()
                call(batch)
                timings[name][size].append(clock() - start)
    return {
        name: {size: statistics.median(values) for size, values in per_size.items()}
        for name, per_size in timings.items()
    }


def choose(timings: Mapping[str, Mapping[int, float]]) -> Plan:
    """The fastest backend per measured size, adjacent sizes with the same winner merged."""
    sizes = sorted({size for per_size in timings.values() for size in per_size})
    steps: list[tuple[int, str]] = []
    for size in sizes:
        winner = min(timings, key=lambda name: timings[name].get(size, float("inf")))
        if steps and steps[-1][1] == winner:
            steps[-1] = (size, winner)
        else:
            steps.append((size, winner))
    return Plan(steps=tuple(steps))
