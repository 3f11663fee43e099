"""KServe custom predictor (its "custom Python serving runtime" guide): a `kserve.Model` per
SavedModel, served by `kserve.ModelServer` with KServe's own options. KServe's REST server binds
0.0.0.0 with no option to change it: `uvicorn.Config` gets 127.0.0.1 here, as every server here."""

from __future__ import annotations

import uuid
from typing import Any

import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.protocol.rest import server as rest_server
from peer_common import MODELS, V2_TYPES, call, signature


class SignatureModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.function, self.ready = signature(path), True

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        outputs = call(self.function, {i.name: i.as_numpy() for i in payload.inputs})
        binary = bool(payload.parameters and payload.parameters.get("binary_data_output"))
        infer_outputs = []
        for name, array in outputs.items():
            output = InferOutput(name, list(array.shape), V2_TYPES[array.dtype.name])
            output.set_data_from_numpy(array, binary_data=binary)
            infer_outputs.append(output)
        # KServe's response model needs an id; its own predictors make one up likewise.
        response_id = payload.id or str(uuid.uuid4())
        return InferResponse(response_id, self.name, infer_outputs)


class _LoopbackConfig(uvicorn.Config):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "host": "127.0.0.1"})


if __name__ == "__main__":
    rest_server.uvicorn.Config = _LoopbackConfig
    args, _ = model_server.parser.parse_known_args()
    options = ("http_port", "grpc_port", "workers", "enable_latency_logging")
    server = ModelServer(enable_grpc=False, **{k: getattr(args, k) for k in options})
    server.start([SignatureModel(name, path) for name, path in MODELS.items()])
