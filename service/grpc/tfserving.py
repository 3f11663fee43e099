"""TensorFlow Serving's gRPC API: `PredictionService` (Predict, Classify, Regress,
GetModelMetadata) and `ModelService.GetModelStatus`, as `tensorflow-serving-api`'s stubs call it.

`Predict` decodes each `TensorProto` (its `tensor_content` bytes, or the typed `*_val` list with
TF's one-value splat) into numpy and calls the data plane; outputs come back as `tensor_content`,
which `tf.make_ndarray` reads. The models' signatures are predict signatures, so `Classify` and
`Regress` answer INVALID_ARGUMENT with TF Serving's own message for that case.
`GetModelMetadata` and `GetModelStatus` are the REST documents (`service.codecs.tfserving`)
parsed into their messages. `MultiInference` and `HandleReloadConfigRequest` answer
UNIMPLEMENTED.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from grpc_gen.tensorflow.core.framework.tensor_pb2 import TensorProto
from grpc_gen.tensorflow_serving.apis import get_model_metadata_pb2 as metadata_pb2
from grpc_gen.tensorflow_serving.apis import get_model_status_pb2 as status_pb2
from grpc_gen.tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2
from grpc_gen.tensorflow_serving.apis import prediction_service_pb2_grpc as service_grpc
from service.codecs import dtypes, tfserving
from service.dataplane import DataPlane
from service.errors import InvalidInput, NotFound
from service.grpc.errors import rpc
from service.registry import SIGNATURE_NAME, ModelVersion
from service.settings import Settings
from service.types import InferenceRequest

_DATATYPE = TensorProto.DESCRIPTOR.fields_by_name["dtype"].enum_type
#: The typed value field of a `TensorProto` by TF dtype name.
VALUES = {
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
    "DT_INT8": "int_val",
    "DT_INT16": "int_val",
    "DT_INT32": "int_val",
    "DT_UINT8": "int_val",
    "DT_UINT16": "int_val",
    "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val",
}
_BY_TF = {d.tf: d for d in dtypes.TABLE}


def to_numpy(tensor: Any, field: str) -> np.ndarray:
    """A `TensorProto` as a numpy array (shape from `tensor_shape`), or a 4xx naming `field`."""
    known = _DATATYPE.values_by_number.get(tensor.dtype)
    name = known.name if known is not None else str(tensor.dtype)
    if name not in VALUES:
        raise InvalidInput.for_field(f"{field}.dtype", f"one of {sorted(VALUES)}", name)
    dtype = np.dtype(_BY_TF[name].numpy)
    shape = [d.size for d in tensor.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise InvalidInput.for_field(f"{field}.tensor_shape", "non-negative sizes", str(shape))
    count = math.prod(shape)
    if tensor.tensor_content:
        if len(tensor.tensor_content) != count * dtype.itemsize:
            raise InvalidInput.for_field(
                f"{field}.tensor_content",
                f"{count * dtype.itemsize} bytes for {name} shape {shape}",
                f"{len(tensor.tensor_content)} bytes",
                what="tensor_content does not match shape",
            )
        return np.frombuffer(tensor.tensor_content, dtype=dtype.newbyteorder("<")).reshape(shape)
    values = getattr(tensor, VALUES[name])
    if len(values) == count:
        return np.asarray(values, dtype=dtype).reshape(shape)
    if len(values) == 1:  # TF's splat: one value fills the shape
        return np.full(shape, values[0], dtype=dtype)
    raise InvalidInput.for_field(
        f"{field}.{VALUES[name]}",
        f"{count} values for shape {shape}",
        f"{len(values)} values",
        what="values do not match shape",
    )


def to_proto(array: np.ndarray, tensor: Any) -> None:
    """Fill `tensor` with `array` (little-endian `tensor_content`)."""
    tensor.dtype = _DATATYPE.values_by_name[dtypes.of(array.dtype).tf].number
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    tensor.tensor_content = little.tobytes()


class _Base:
    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.settings = settings

    def version_of(self, spec: Any) -> int | None:
        """The `ModelSpec`'s version: none (latest), a number or a label."""
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            if spec.version.value <= 0:
                raise NotFound(
                    f"version must be a positive integer, received {spec.version.value}",
                    field="model_spec.version",
                    expected="a positive integer",
                    received=str(spec.version.value),
                )
            return int(spec.version.value)
        if choice == "version_label":
            self.registry.entry(spec.name)  # an unknown model before its labels
            labels = self.settings.version_labels.get(spec.name, {})
            if spec.version_label not in labels:
                known = ", ".join(sorted(labels)) or "none"
                raise NotFound(
                    f"model {spec.name!r} has no version label {spec.version_label!r}; "
                    f"labels: {known}",
                    field="model_spec.version_label",
                    expected=" | ".join(sorted(labels)) or "no labels are configured",
                    received=repr(spec.version_label),
                )
            return labels[spec.version_label]
        return None

    def model_of(self, spec: Any) -> ModelVersion:
        return self.dataplane.resolve(spec.name, self.version_of(spec))


def _check_signature(name: str) -> None:
    if name not in ("", SIGNATURE_NAME):
        raise InvalidInput.for_field(
            "model_spec.signature_name",
            repr(SIGNATURE_NAME),
            repr(name),
            what=f"serving signature name {name!r} not found",
        )


class PredictionServicer(_Base, service_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` on the data plane."""

    @rpc()
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.model_of(request.model_spec)
        _check_signature(request.model_spec.signature_name)
        inputs = {key: to_numpy(value, f"inputs.{key}") for key, value in request.inputs.items()}
        inference = InferenceRequest(
            model.name,
            inputs,
            model.version,
            outputs=list(request.output_filter) or None,
            fields={key: f"inputs.{key}" for key in inputs},
            field="inputs",
        )
        response = await self.dataplane.infer_on(model, inference)
        message = predict_pb2.PredictResponse()
        message.model_spec.name = model.name
        message.model_spec.version.value = model.version
        message.model_spec.signature_name = SIGNATURE_NAME
        for name in response.requested:
            to_proto(response.outputs[name], message.outputs[name])
        return message

    @rpc()
    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.model_of(request.model_spec)
        raise tfserving.wrong_method("classify")

    @rpc()
    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.model_of(request.model_spec)
        raise tfserving.wrong_method("regress")

    @rpc()
    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.registry.get(request.model_spec.name, self.version_of(request.model_spec))
        fields = list(request.metadata_field)
        if not fields:  # TF Serving's own messages
            raise InvalidInput(
                "GetModelMetadataRequest must specify at least one metadata_field",
                field="metadata_field",
                expected="['signature_def']",
                received="[]",
            )
        for field in fields:
            if field != "signature_def":
                raise InvalidInput(
                    f"Metadata field {field} is not supported",
                    field="metadata_field",
                    expected="signature_def",
                    received=repr(field),
                )
        document = tfserving.metadata(model)["metadata"]["signature_def"]
        signatures = json_format.ParseDict(document, metadata_pb2.SignatureDefMap())
        message = metadata_pb2.GetModelMetadataResponse()
        message.model_spec.name = model.name
        message.model_spec.version.value = model.version
        message.metadata["signature_def"].Pack(signatures)
        return message


class ModelServicer(_Base, model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService.GetModelStatus` (its reload RPC: UNIMPLEMENTED)."""

    @rpc()
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = request.model_spec
        entry = self.registry.entry(spec.name)
        number = self.version_of(spec)
        if number is not None and number not in entry.versions and number not in entry.failed:
            self.registry.get(spec.name, number)  # NOT_FOUND (or UNAVAILABLE while loading)
        document = tfserving.status(entry, only=number)
        return json_format.ParseDict(document, status_pb2.GetModelStatusResponse())
