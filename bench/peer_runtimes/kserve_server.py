"""KServe custom predictor: a `kserve.Model` per SavedModel, served by `kserve.ModelServer`.

As KServe's "custom Python serving runtime" guide: `load` reads the artifact, `predict` takes the
V2 `InferRequest`, calls the signature on the event loop and returns an `InferResponse`. Options
are KServe's own parser's. KServe's REST server binds 0.0.0.0 with no option to change it: the
benchmark keeps every server on loopback, so `uvicorn.Config` gets 127.0.0.1 here.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import tensorflow as tf
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.protocol.rest import server as rest_server


class SignatureModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.function: Any = None
        self.load()

    def load(self) -> bool:
        self.function = tf.saved_model.load(self.path).signatures["serving_default"]
        self.ready = True
        return self.ready

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        inputs = {i.name: tf.constant(i.as_numpy()) for i in payload.inputs}
        outputs = self.function(**inputs)
        binary = bool(payload.parameters and payload.parameters.get("binary_data_output"))
        infer_outputs = []
        for name, value in outputs.items():
            array = value.numpy()
            output = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            output.set_data_from_numpy(array, binary_data=binary)
            infer_outputs.append(output)
        return InferResponse(
            # KServe's response model needs an id; its own predictors make one up likewise.
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=infer_outputs,
        )


class _LoopbackConfig(uvicorn.Config):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


if __name__ == "__main__":
    rest_server.uvicorn.Config = _LoopbackConfig  # type: ignore[misc]
    args, _ = model_server.parser.parse_known_args()
    paths: dict[str, str] = json.loads(os.environ["MLDM_PEER_MODELS"])
    models = [SignatureModel(name, path) for name, path in paths.items()]
    ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=False,
        workers=args.workers,
        enable_latency_logging=args.enable_latency_logging,
    ).start(models)
