"""MLServer custom runtime (its "custom inference runtime" guide): an `MLModel` loading the
SavedModel named by `parameters.uri` of model-settings.json, decoding and encoding with the NumPy
codec. Adaptive batching and parallel workers are MLServer's own, set in the JSON files."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from peer_common import call, signature


class SignatureModel(MLModel):
    async def load(self) -> bool:
        self._function = signature(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        outputs = call(self._function, inputs)
        encoded = [NumpyCodec.encode_output(name, value) for name, value in outputs.items()]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=encoded)
