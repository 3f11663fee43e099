"""The one interface every backend implements, and the names a setting may choose."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

import numpy as np

BackendName = Literal["tensorflow", "onnxruntime", "openvino"]
#: The reference, always available: what serves a version when nothing else may.
REFERENCE: BackendName = "tensorflow"
#: The compiled runtimes, all reading the same `model.onnx`, in the order `measure` tries them.
COMPILED: tuple[BackendName, ...] = ("onnxruntime", "openvino")
#: Compiled runtimes whose package the server image leaves out: missing, they are skipped by
#: `measure` (no refusal); asked for by name, their absence is a refusal with its reason.
OPTIONAL: frozenset[BackendName] = frozenset({"openvino"})
#: The compiled model every compiled runtime reads, beside `saved_model.pb` (`make compile-models`).
ONNX_FILE = "model.onnx"


class Backend(Protocol):
    """Runs one model version: named numpy arrays in (the signature's dtypes and shapes), every
    named output out as numpy arrays. Blocking; safe to call from several threads."""

    name: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
