"""The `onnxruntime` backend: the `model.onnx` compiled from the SavedModel at export time."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


class OnnxRuntimeBackend:
    """One ONNX Runtime session on the CPU; `run` returns every output by name."""

    name = "onnxruntime"

    def __init__(self, session: Any) -> None:
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]

    @classmethod
    def load(cls, path: Path, threads: int) -> OnnxRuntimeBackend:
        """The session over the compiled model at `path` (a version's `model.onnx`, which the
        registry checks is there); ImportError without the onnxruntime package."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        # A model call is a few hundred microseconds at small batches: more threads than the
        # setting asks for only adds wake-up cost, and the server runs several calls at once.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's CPU arena keeps the largest batch's buffers for good: the eight
        # committed versions grew from 91 to 346 MiB after batches of up to 256, and to 141 MiB
        # without it, for 306 vs 319 us per classifier call at batch 1 (docs/runtimes.md).
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(session)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, dict(inputs))
        return dict(zip(self._outputs, values, strict=True))
