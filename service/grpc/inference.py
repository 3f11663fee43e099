"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), as Triton serves it.

Triton's `grpc_service.proto` is KServe's `grpc_predict_v2.proto` plus Triton's extensions, with
the same field numbers, so one servicer answers tritonclient.grpc and KServe's
`InferenceGRPCClient`. `ModelInfer` maps the message onto the REST body
(`V2InferenceRequest`: `raw_input_contents` as binary tensor data, typed `contents` as JSON data)
and goes through the same decoder and data plane, so a gRPC request gets the same checks and the
same error messages as a REST one. Outputs come back in `raw_output_contents` when the request
sent raw inputs (Triton always does), in typed `contents` when it sent typed ones. Model
configuration and statistics are the REST documents (`service.codecs.v2`) parsed into their
messages. The RPCs of Triton's other extensions (repository, shared memory, trace, logging)
answer UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from grpc_gen import grpc_service_pb2 as pb
from grpc_gen import grpc_service_pb2_grpc as pb_grpc
from grpc_gen import model_config_pb2
from service import __version__
from service.codecs import dtypes, v2, v2_documents
from service.dataplane import DataPlane
from service.errors import InvalidInput, ModelNotReady
from service.grpc.errors import rpc
from service.registry import ModelVersion, parse_version
from service.schemas import V2InferenceRequest
from service.settings import Settings
from service.types import InferenceResponse

#: The `InferTensorContents` field of each datatype.
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def optional_version(text: str) -> int | None:
    """A request's `model_version`: empty for the latest, else a positive integer (else 404)."""
    return None if text == "" else parse_version(text, "model_version")


def _parameter(value: pb.InferParameter) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return None if kind is None else getattr(value, kind)


def to_v2_body(request: pb.ModelInferRequest) -> tuple[V2InferenceRequest, memoryview]:
    """The REST body and binary tensor data that say what this gRPC request says."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput.for_field(
            "raw_input_contents",
            f"one entry per input ({len(request.inputs)})",
            f"{len(raw)} entries",
        )
    inputs: list[dict[str, Any]] = []
    for i, tensor in enumerate(request.inputs):
        item: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if raw:
            item["parameters"] = {"binary_data_size": len(raw[i])}
        elif tensor.HasField("contents"):
            field = CONTENTS.get(tensor.datatype)
            present = [f.name for f, _ in tensor.contents.ListFields()]
            if field is None or (present and present != [field]):
                raise InvalidInput.for_field(
                    f"inputs[{i}].contents",
                    f"{field or 'the contents field of the datatype'} for {tensor.datatype}",
                    ", ".join(present),
                )
            item["data"] = list(getattr(tensor.contents, field))
        inputs.append(item)
    outputs = [
        {"name": o.name, "parameters": {k: _parameter(v) for k, v in o.parameters.items()}}
        for o in request.outputs
    ]
    body = V2InferenceRequest.model_validate(
        {"id": request.id or None, "inputs": inputs, "outputs": outputs or None}
    )
    return body, memoryview(b"".join(raw))


def to_grpc_response(response: InferenceResponse, raw: bool) -> pb.ModelInferResponse:
    """The answer: every requested output, raw (little-endian bytes) or as typed contents."""
    message = pb.ModelInferResponse(
        model_name=response.model.name,
        model_version=str(response.model.version),
        id=response.id or "",
    )
    for name in response.requested:
        array = response.outputs[name]
        datatype = dtypes.v2_name(array.dtype)
        tensor = message.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if datatype == "BYTES":
            data = v2.encode_bytes(array)
            if raw:
                message.raw_output_contents.append(data)
            else:
                tensor.contents.bytes_contents.extend(list(array.reshape(-1)))
        elif raw:
            little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            message.raw_output_contents.append(little.tobytes())
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(array.reshape(-1).tolist())
    return message


def _tensor_metadata(specs: Any) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=s.name,
            datatype=dtypes.v2_name(s.dtype),
            shape=[-1 if d is None else d for d in s.shape],
        )
        for s in specs
    ]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` on the data plane."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.settings = settings

    @rpc(key=False)
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    @rpc(key=False)
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.registry.ready)

    @rpc(key=False)
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self.registry.get(request.name, optional_version(request.version))
        except ModelNotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @rpc(key=False)
    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(
            name="mldm-serving", version=__version__, extensions=list(v2.EXTENSIONS)
        )

    @rpc()
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        version = optional_version(request.version)
        model = self.registry.get(request.name, version)
        versions = sorted(self.registry.entry(request.name).versions) if version is None else []
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in versions or [model.version]],
            platform="tensorflow_savedmodel",
            inputs=_tensor_metadata(model.inputs.values()),
            outputs=_tensor_metadata(model.outputs.values()),
        )

    @rpc()
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.dataplane.resolve(request.model_name, optional_version(request.model_version))
        body, binary = to_v2_body(request)
        response = await self.dataplane.infer_on(model, v2.decode_request(body, binary, model))
        return to_grpc_response(response, raw=bool(request.raw_input_contents))

    @rpc()
    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.registry.get(request.name, optional_version(request.version))
        config = json_format.ParseDict(
            self._config(model), model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )
        return pb.ModelConfigResponse(config=config)

    def _config(self, model: ModelVersion) -> dict[str, Any]:
        enabled, size, _ = self.settings.batching_for(model.name)
        most = self.settings.max_items_per_request
        batch = min(most, size) if enabled else most
        return v2_documents.model_config(model, batch, enabled, self.settings.inference_threads)

    @rpc()
    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        version = optional_version(request.version)
        if request.name:
            entries = [self.registry.entry(request.name)]
            if version is not None:
                self.registry.get(request.name, version)  # NOT_FOUND for a missing version
        elif version is not None:
            raise InvalidInput.for_field("version", "no version without a model name", "a version")
        else:
            entries = self.registry.entries()
        stats = [
            v2_documents.model_stats(self.dataplane.stats.of(entry.name, number))
            for entry in entries
            for number in sorted(entry.versions)
            if version is None or number == version
        ]
        return json_format.ParseDict(
            {"model_stats": stats}, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
        )
