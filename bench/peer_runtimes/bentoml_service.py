"""BentoML service: one class holding both SavedModels, one API per model on the V2 route (BentoML
has no V2 protocol: the V2 body's `inputs` is the API's parameter). `MLDM_PEER_BATCHING=on` turns
on BentoML's adaptive batching, whose batch is a list of the requests' tensors."""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
from peer_common import MODELS, arrays, call, signature, v2_outputs

BATCHING = os.environ.get("MLDM_PEER_BATCHING", "off") == "on"
MAX_BATCH = int(os.environ.get("MLDM_PEER_MAX_BATCH", "64"))
MAX_LATENCY_MS = int(os.environ.get("MLDM_PEER_MAX_LATENCY_MS", "10"))


def _call(function: Any, name: str, inputs: list[dict[str, Any]]) -> Any:
    """One call for the tensors of one request (a V2 response), or, batched, one merged call for
    the tensors of several requests (one tensor each), split back into one answer each."""
    if not BATCHING:
        return {"model_name": name, "outputs": v2_outputs(call(function, arrays(inputs)))}
    parts = [arrays([t]) for t in inputs]
    (input_name,) = {t["name"] for t in inputs}
    merged = call(function, {input_name: np.concatenate([p[input_name] for p in parts])})
    bounds = np.cumsum([len(p[input_name]) for p in parts])[:-1]
    split = {k: np.split(v, bounds) for k, v in merged.items()}
    return [{"outputs": v2_outputs({k: s[i] for k, s in split.items()})} for i in range(len(parts))]


def _api(route: str) -> Any:
    batching = {"batchable": True, "max_batch_size": MAX_BATCH, "max_latency_ms": MAX_LATENCY_MS}
    return bentoml.api(route=route, **(batching if BATCHING else {}))


@bentoml.service(workers=1)
class Peers:
    def __init__(self) -> None:
        self.functions = {name: signature(path) for name, path in MODELS.items()}

    @_api("/v2/models/digit_classifier/infer")
    def digit_classifier(self, inputs: list[dict[str, Any]]) -> Any:
        return _call(self.functions["digit_classifier"], "digit_classifier", inputs)

    @_api("/v2/models/energy_from_potential/infer")
    def energy_from_potential(self, inputs: list[dict[str, Any]]) -> Any:
        return _call(self.functions["energy_from_potential"], "energy_from_potential", inputs)
