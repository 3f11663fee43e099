"""The `tensorflow` backend: the SavedModel's `serving_default` signature (the reference)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class TensorFlowBackend:
    """Calls a loaded signature; keeps its SavedModel object alive (the variables live there)."""

    name = "tensorflow"

    def __init__(self, signature: Callable[..., Mapping[str, Any]], keepalive: Any = None) -> None:
        self._signature = signature
        self._keepalive = keepalive

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        tensors = {key: tf.convert_to_tensor(value) for key, value in inputs.items()}
        result = self._signature(**tensors)
        return {key: value.numpy() for key, value in result.items()}
