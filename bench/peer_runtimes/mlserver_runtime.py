"""MLServer custom runtime: an `MLModel` calling a SavedModel's `serving_default` signature.

As in MLServer's "custom inference runtime" guide: `load` reads the artifact named by
`parameters.uri` of model-settings.json, `predict` decodes the V2 request with the NumPy codec
(`decode_request` honours each input's datatype and shape) and encodes every output back.
Adaptive batching and parallel workers are MLServer's own, set in the JSON files, not here.
"""

from __future__ import annotations

import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SignatureModel(MLModel):
    async def load(self) -> bool:
        self._loaded = tf.saved_model.load(self.settings.parameters.uri)
        self._function = self._loaded.signatures["serving_default"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {
            request_input.name: NumpyCodec.decode_input(request_input)
            for request_input in payload.inputs
        }
        outputs = self._function(**{name: tf.constant(value) for name, value in inputs.items()})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, value.numpy()) for name, value in outputs.items()
            ],
        )
