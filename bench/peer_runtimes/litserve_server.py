"""LitServe: one `LitAPI` per SavedModel on its V2 route, served by one `LitServer`.

As LitServe's docs write an API: `setup` loads the model (TensorFlow's `serving_default`
signature, as its users would call their framework), `decode_request` turns the V2 JSON body into
the input tensor, `predict` calls the signature, `encode_response` writes every output back in V2
form. LitServe runs `predict` in its own inference worker process. `MLDM_PEER_MODELS` (JSON
name -> SavedModel folder) says what to load; the port is the first argument.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import litserve as ls
import numpy as np

MODELS: dict[str, str] = json.loads(os.environ["MLDM_PEER_MODELS"])
V2_TYPES = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64"}
V2_TYPES |= {"bool": "BOOL", "uint8": "UINT8"}


class SignatureAPI(ls.LitAPI):
    def __init__(self, name: str) -> None:
        super().__init__(api_path=f"/v2/models/{name}/infer")
        self.name = name

    def setup(self, device: str) -> None:
        import tensorflow as tf

        self.function = tf.saved_model.load(MODELS[self.name]).signatures["serving_default"]

    # Unannotated on purpose: LitServe then hands over the request's parsed JSON body.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return {
            t["name"]: np.asarray(t["data"], np.float32).reshape(t["shape"])
            for t in request["inputs"]
        }

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.function(**inputs).items()}

    def encode_response(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        tensors = [
            {"name": k, "shape": list(v.shape), "datatype": V2_TYPES[v.dtype.name]}
            | {"data": v.ravel().tolist()}
            for k, v in outputs.items()
        ]
        return {"model_name": self.name, "outputs": tensors}


if __name__ == "__main__":
    server = ls.LitServer([SignatureAPI(name) for name in MODELS], accelerator="cpu")
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False)
