"""Runs model calls off the event loop, with a time limit.

Inference is CPU work in TensorFlow (which releases the GIL), so it runs in a small thread pool
and the event loop stays free to accept and parse other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from service.errors import InferenceTimeout
from service.registry import ModelVersion
from service.settings import Settings

T = TypeVar("T")


class ModelRunner:
    """Calls `ModelVersion.predict_one` in worker threads; one per app, closed in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(
            max_workers=settings.inference_threads, thread_name_prefix="inference"
        )

    async def run(self, model: ModelVersion, array: np.ndarray) -> np.ndarray:
        """The model's single output for `array` (already of the input's dtype and shape)."""
        return await self.call(f"model {model.name!r}", model.predict_one, array)

    async def call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """Any blocking call in the pool, limited to `request_timeout_s`."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, function, *args)
        try:
            return await asyncio.wait_for(future, timeout=self.settings.request_timeout_s)
        except TimeoutError:
            raise InferenceTimeout(
                f"{what} did not answer within {self.settings.request_timeout_s:g} s"
            ) from None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
