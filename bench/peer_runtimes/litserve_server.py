"""LitServe: one `LitAPI` per SavedModel on its V2 route, served by one `LitServer` (the port is
the first argument); `predict` runs in LitServe's own inference worker process."""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls
import numpy as np
from peer_common import MODELS, arrays, call, signature, v2_outputs


class SignatureAPI(ls.LitAPI):
    def __init__(self, name: str) -> None:
        super().__init__(api_path=f"/v2/models/{name}/infer")
        self.name = name

    def setup(self, device: str) -> None:
        self.function = signature(MODELS[self.name])

    # Unannotated on purpose: LitServe then hands over the request's parsed JSON body.
    def decode_request(self, request):
        return arrays(request["inputs"])

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return call(self.function, inputs)

    def encode_response(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"model_name": self.name, "outputs": v2_outputs(outputs)}


if __name__ == "__main__":
    server = ls.LitServer([SignatureAPI(name) for name in MODELS], accelerator="cpu")
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False)
