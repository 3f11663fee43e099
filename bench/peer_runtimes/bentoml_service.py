"""BentoML service: one class holding both SavedModels, one API per model on the V2 route.

BentoML has no Open Inference Protocol of its own, so each API is declared on the V2 path with
the V2 body's `inputs` as its parameter (the same request bytes as every other server).
`MLDM_PEER_MODELS` (JSON name -> SavedModel folder) says what to load; `MLDM_PEER_BATCHING=on`
turns on BentoML's adaptive batching, whose batch is a list of the requests' tensors.
"""

from __future__ import annotations

import json
import os
from typing import Any

import bentoml
import numpy as np
import tensorflow as tf

MODELS: dict[str, str] = json.loads(os.environ["MLDM_PEER_MODELS"])
BATCHING = os.environ.get("MLDM_PEER_BATCHING", "off") == "on"
MAX_BATCH = int(os.environ.get("MLDM_PEER_MAX_BATCH", "64"))
MAX_LATENCY_MS = int(os.environ.get("MLDM_PEER_MAX_LATENCY_MS", "10"))
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
V2_TYPES = {np.dtype(v).name: k for k, v in DTYPES.items()} | {"bool": "BOOL"}


def _load(name: str) -> Any:
    return tf.saved_model.load(MODELS[name]).signatures["serving_default"]


def _arrays(tensors: list[dict[str, Any]]) -> list[np.ndarray]:
    return [np.asarray(t["data"], DTYPES[t["datatype"]]).reshape(t["shape"]) for t in tensors]


def _v2(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"name": k, "shape": list(v.shape), "datatype": V2_TYPES[v.dtype.name]}
        | {"data": v.ravel().tolist()}
        for k, v in outputs.items()
    ]


def _call(function: Any, name: str, inputs: list[dict[str, Any]]) -> Any:
    """One call for the tensors of one request (a V2 response), or, batched, one merged call for
    the tensors of several requests (one tensor each), split back into one answer each."""
    arrays = _arrays(inputs)
    if not BATCHING:
        named = dict(zip((t["name"] for t in inputs), arrays, strict=True))
        outputs = {k: v.numpy() for k, v in function(**named).items()}
        return {"model_name": name, "outputs": _v2(outputs)}
    (input_name,) = {t["name"] for t in inputs}
    merged = {k: v.numpy() for k, v in function(**{input_name: np.concatenate(arrays)}).items()}
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    parts = {k: np.split(v, bounds) for k, v in merged.items()}
    return [{"outputs": _v2({k: p[i] for k, p in parts.items()})} for i in range(len(arrays))]


def _api(route: str) -> Any:
    if BATCHING:
        return bentoml.api(
            route=route, batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS
        )
    return bentoml.api(route=route)


@bentoml.service(workers=1)
class Peers:
    def __init__(self) -> None:
        self.functions = {name: _load(name) for name in MODELS}

    @_api("/v2/models/digit_classifier/infer")
    def digit_classifier(self, inputs: list[dict[str, Any]]) -> Any:
        return _call(self.functions["digit_classifier"], "digit_classifier", inputs)

    @_api("/v2/models/energy_from_potential/infer")
    def energy_from_potential(self, inputs: list[dict[str, Any]]) -> Any:
        return _call(self.functions["energy_from_potential"], "energy_from_potential", inputs)
