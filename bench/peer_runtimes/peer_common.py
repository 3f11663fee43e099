"""What the TensorFlow peers share: the models to load (`MLDM_PEER_MODELS`, JSON name ->
SavedModel folder), the `serving_default` call, and V2 tensors in and out."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

MODELS: dict[str, str] = json.loads(os.environ.get("MLDM_PEER_MODELS", "{}"))
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}
V2_TYPES = {np.dtype(v).name: k for k, v in DTYPES.items()} | {"bool": "BOOL", "uint8": "UINT8"}


def signature(path: str) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(path).signatures["serving_default"]


def call(function: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in function(**inputs).items()}


def arrays(tensors: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The V2 JSON `inputs` as named arrays of their datatype and shape."""
    return {
        t["name"]: np.asarray(t["data"], DTYPES[t["datatype"]]).reshape(t["shape"]) for t in tensors
    }


def v2_outputs(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"name": k, "shape": list(v.shape), "datatype": V2_TYPES[v.dtype.name]}
        | {"data": v.ravel().tolist()}
        for k, v in outputs.items()
    ]
