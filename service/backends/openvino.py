"""The `openvino` backend: the same `model.onnx` as ONNX Runtime's, compiled by OpenVINO for the
CPU at load. Optional: the package is not in the server image (docs/runtimes.md)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def compile_config(threads: int) -> dict[str, Any]:
    """OpenVINO's CPU plugin settings. Without the f32 hint it runs bf16 on a CPU that has it
    (3 to 15 mHa off on the energy models: verification would refuse it); ACCURACY keeps it
    from any other precision trade; one stream of `threads` threads, not pinned, as the server
    already runs several calls side by side on a shared machine."""
    return {
        "INFERENCE_PRECISION_HINT": "f32",
        "EXECUTION_MODE_HINT": "ACCURACY",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoBackend:
    """One compiled model on the CPU, one infer request per calling thread (a request holds its
    buffers and is not safe to share); `run` returns every output by its ONNX name."""

    name = "openvino"

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self._outputs = [(o.get_any_name(), o) for o in compiled.outputs]
        self._local = threading.local()

    @classmethod
    def load(cls, path: Path, threads: int) -> OpenVinoBackend:
        """The compiled model at `path` (a version's `model.onnx`, which the registry checks is
        there) compiled for the CPU; ImportError without the openvino package."""
        # Only the Core API is used: OpenVINO's telemetry lives in its model converter
        # (`convert_model`, `ovc`), which is never called, so nothing is sent.
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_config(threads))
        return cls(compiled)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        # share_outputs=False (the default): copies, so the next call cannot overwrite them.
        results = request.infer(dict(inputs))
        return {name: np.asarray(results[port]) for name, port in self._outputs}
