"""The Open Inference Protocol (KServe V2), as MLServer and Triton implement it over REST.

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/: server and model
health, server and model metadata, and `infer` with JSON tensors (`name`, `shape`, `datatype`,
`data` flat or nested).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service import __version__
from service.api.body import json_body, read_json
from service.api.deps import RegistryDep, ServiceDep, require_api_key
from service.api.responses import JSONBody
from service.api.routes.tasks import ERRORS
from service.api.routes.tfserving import parse_version
from service.arrays import to_numeric_array
from service.errors import InvalidInput, ModelNotReady, describe
from service.registry import ModelRegistry, ModelVersion
from service.schemas import (
    V2InferenceRequest,
    V2InferenceResponse,
    V2ModelMetadata,
    V2ServerMetadata,
)

DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}

health = APIRouter(prefix="/v2", tags=["KServe V2 / Open Inference Protocol"])
router = APIRouter(
    prefix="/v2",
    tags=["KServe V2 / Open Inference Protocol"],
    responses=ERRORS,
    dependencies=[Depends(require_api_key)],
)


@health.get("", response_model=V2ServerMetadata)
async def server_metadata() -> Response:
    """Server metadata: name, version, protocol extensions."""
    return JSONBody({"name": "mldm-serving", "version": __version__, "extensions": []})


@health.get("/health/live")
async def live() -> Response:
    """Liveness: the process answers."""
    return JSONBody({"live": True})


@health.get(
    "/health/ready",
    responses={503: {"description": "An expected model is not loaded (yet, or it failed)"}},
)
async def ready(registry: RegistryDep) -> Response:
    """Readiness: 200 when every expected model is loaded, else 503 naming the missing ones."""
    if registry.ready:
        return JSONBody({"ready": True})
    missing = registry.not_ready()
    return JSONBody(
        {"ready": False, "error": f"models not ready: {', '.join(missing)}"}, status_code=503
    )


def _metadata(registry: ModelRegistry, model: ModelVersion, all_versions: bool) -> dict[str, Any]:
    versions = sorted(registry.entry(model.name).versions) if all_versions else [model.version]
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "tensorflow_savedmodel",
        "inputs": [
            {
                "name": s.name,
                "datatype": DATATYPES.get(s.dtype.name, "BYTES"),
                "shape": [-1 if d is None else d for d in s.shape],
            }
            for s in model.inputs.values()
        ],
        "outputs": [
            {
                "name": s.name,
                "datatype": DATATYPES.get(s.dtype.name, "BYTES"),
                "shape": [-1 if d is None else d for d in s.shape],
            }
            for s in model.outputs.values()
        ],
        "parameters": {"model_card": model.card, "version": model.version},
    }


@router.get("/models/{name}", response_model=V2ModelMetadata)
async def model_metadata(name: str, registry: RegistryDep) -> Response:
    """Model metadata (latest version) with its model card."""
    return JSONBody(_metadata(registry, registry.get(name), all_versions=True))


@router.get("/models/{name}/versions/{version}", response_model=V2ModelMetadata)
async def model_version_metadata(name: str, version: str, registry: RegistryDep) -> Response:
    """Metadata and model card of one model version."""
    model = registry.get(name, parse_version(version))
    return JSONBody(_metadata(registry, model, all_versions=False))


def _ready(registry: ModelRegistry, name: str, version: int | None) -> Response:
    try:
        registry.get(name, version)
    except ModelNotReady as exc:
        return JSONBody({"name": name, "ready": False, "error": exc.message}, status_code=503)
    return JSONBody({"name": name, "ready": True})


@router.get("/models/{name}/ready")
async def model_ready(name: str, registry: RegistryDep) -> Response:
    """Model readiness: 200 when loaded, 503 when not (404 when unknown)."""
    return _ready(registry, name, None)


@router.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(name: str, version: str, registry: RegistryDep) -> Response:
    """Readiness of one model version."""
    return _ready(registry, name, parse_version(version))


def _tensor(model: ModelVersion, index: int, item: Any) -> tuple[str, np.ndarray]:
    field = f"inputs[{index}]"
    spec = model.inputs.get(item.name)
    if spec is None:
        raise InvalidInput.for_field(
            f"{field}.name",
            f"one of {sorted(model.inputs)}",
            repr(item.name),
            what="unknown input name",
        )
    expected_type = DATATYPES.get(spec.dtype.name, "BYTES")
    if item.datatype != expected_type:
        raise InvalidInput.for_field(f"{field}.datatype", expected_type, repr(item.datatype))
    if any(d < 0 for d in item.shape):
        raise InvalidInput.for_field(f"{field}.shape", "non-negative sizes", str(item.shape))
    array = to_numeric_array(item.data, f"{field}.data")
    size = math.prod(item.shape)  # exact: np.prod wraps around int64 for huge shapes
    if array.size != size:
        raise InvalidInput.for_field(
            f"{field}.data",
            f"{size} values for shape {item.shape}",
            f"{array.size} values",
            what="data does not match shape",
        )
    return spec.name, array.reshape(item.shape)


async def _infer(
    name: str, version: int | None, request: Request, service: ServiceDep, registry: ModelRegistry
) -> Response:
    model = registry.get(name, version)
    body = await read_json(request, V2InferenceRequest)
    inputs = dict(_tensor(model, i, item) for i, item in enumerate(body.inputs))
    if len(inputs) != len(body.inputs):
        raise InvalidInput.for_field("inputs", "each input once", "an input named twice")
    wanted = [o.name for o in body.outputs] if body.outputs else list(model.outputs)
    for i, output in enumerate(wanted):
        if output not in model.outputs:
            raise InvalidInput.for_field(
                f"outputs[{i}].name",
                f"one of {sorted(model.outputs)}",
                describe(output),
                what="unknown output name",
            )
    model, outputs = await service.predict(name, model.version, inputs, "inputs")
    response: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
        "outputs": [
            {
                "name": key,
                "shape": list(outputs[key].shape),
                "datatype": DATATYPES.get(outputs[key].dtype.name, "BYTES"),
                "data": outputs[key].reshape(-1),
            }
            for key in wanted
        ],
    }
    if body.id is not None:
        response["id"] = body.id
    return JSONBody(response)


_INFER_DOC = json_body(V2InferenceRequest)


@router.post("/models/{name}/infer", response_model=V2InferenceResponse, openapi_extra=_INFER_DOC)
async def infer(
    name: str, request: Request, service: ServiceDep, registry: RegistryDep
) -> Response:
    """Inference on the latest version."""
    return await _infer(name, None, request, service, registry)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=V2InferenceResponse,
    openapi_extra=_INFER_DOC,
)
async def infer_version(
    name: str, version: str, request: Request, service: ServiceDep, registry: RegistryDep
) -> Response:
    """Inference on one model version."""
    return await _infer(name, parse_version(version), request, service, registry)


__all__ = ["health", "router"]
