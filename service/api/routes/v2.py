"""The Open Inference Protocol (KServe V2) over REST, as MLServer and Triton implement it.

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/: server and model
health, server and model metadata, `infer` with JSON tensors and with Triton's binary tensor data
extension (both ways); Triton's model configuration (`/config`) and statistics (`/stats`)
extensions, which `perf_analyzer` reads. Each route decodes (`service.codecs.v2`), calls the data
plane and encodes.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service import __version__
from service.api.body import json_body, parse_json_offloaded
from service.api.deps import (
    DataPlaneDep,
    FastRoute,
    RegistryDep,
    SettingsDep,
    require_api_key,
)
from service.api.errors import ERRORS
from service.api.responses import JSONBody
from service.codecs import v2, v2_documents
from service.dataplane import DataPlane
from service.errors import ModelNotReady
from service.registry import ModelRegistry, ModelVersion, parse_version
from service.schemas import (
    V2InferenceRequest,
    V2InferenceResponse,
    V2ModelMetadata,
    V2ServerMetadata,
)
from service.settings import Settings

TAGS: list[str | Enum] = ["KServe V2 / Open Inference Protocol"]
health = APIRouter(prefix="/v2", tags=TAGS)
router = APIRouter(
    prefix="/v2",
    tags=TAGS,
    responses=ERRORS,
    dependencies=[Depends(require_api_key)],
    route_class=FastRoute,
)


# The inference routes first: a request is matched against the routes in order, and these
# are the ones a client calls thousands of times.
async def _decode_infer_encode(
    name: str, version: int | None, request: Request, dataplane: DataPlane
) -> Response:
    model = dataplane.resolve(name, version)
    # JSON whatever the content type (curl's default form type, text/plain), as Triton: a binary
    # body says so with its header length.
    length = request.headers.get(v2.HEADER_LENGTH)
    header, binary = v2.split_body(await request.body(), length)
    body = await parse_json_offloaded(header, V2InferenceRequest)
    response = await dataplane.infer_on(model, v2.decode_request(body, binary, model))
    content, headers = v2.encode_response(response, body)
    if headers is None:
        return Response(content, media_type=JSONBody.media_type)
    return Response(content, media_type=v2.OCTET_STREAM, headers=headers)


_INFER_DOC = json_body(V2InferenceRequest)


@router.post("/models/{name}/infer", response_model=V2InferenceResponse, openapi_extra=_INFER_DOC)
async def infer(name: str, request: Request, dataplane: DataPlaneDep) -> Response:
    """Inference on the latest version (JSON, or binary tensor data with
    `Inference-Header-Content-Length`)."""
    return await _decode_infer_encode(name, None, request, dataplane)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=V2InferenceResponse,
    openapi_extra=_INFER_DOC,
)
async def infer_version(
    name: str, version: str, request: Request, dataplane: DataPlaneDep
) -> Response:
    """Inference on one model version."""
    return await _decode_infer_encode(name, parse_version(version), request, dataplane)


@health.get("", response_model=V2ServerMetadata)
async def server_metadata() -> Response:
    """Server metadata: name, version, the protocol extensions served."""
    return JSONBody(
        {"name": "mldm-serving", "version": __version__, "extensions": list(v2.EXTENSIONS)}
    )


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


# Declared before `/models/{name}`, which would otherwise take "stats" for a model name.
@router.get("/models/stats")
async def all_model_stats(registry: RegistryDep, dataplane: DataPlaneDep) -> Response:
    """Statistics extension: inference statistics of every loaded model version."""
    return JSONBody({"model_stats": _stats(registry, dataplane, None, None)})


def _stats(
    registry: ModelRegistry, dataplane: DataPlane, name: str | None, version: int | None
) -> list[dict[str, Any]]:
    entries = registry.entries() if name is None else [registry.entry(name)]
    if version is not None and name is not None:
        registry.get(name, version)  # 404 for a version that does not exist
    found = []
    for entry in entries:
        for number in sorted(entry.versions):
            if version is None or number == version:
                found.append(v2_documents.model_stats(dataplane.stats.of(entry.name, number)))
    return found


@router.get("/models/{name}", response_model=V2ModelMetadata)
async def model_metadata(name: str, registry: RegistryDep) -> Response:
    """Model metadata (latest version) with its model card."""
    model = registry.get(name)
    return JSONBody(v2_documents.metadata(model, sorted(registry.entry(name).versions)))


@router.get("/models/{name}/versions/{version}", response_model=V2ModelMetadata)
async def model_version_metadata(name: str, version: str, registry: RegistryDep) -> Response:
    """Metadata and model card of one model version."""
    model = registry.get(name, parse_version(version))
    return JSONBody(v2_documents.metadata(model, [model.version]))


def _config(model: ModelVersion, settings: Settings) -> Response:
    enabled, size, _ = settings.batching_for(model.name)
    batch = min(settings.max_items_per_request, size) if enabled else settings.max_items_per_request
    return JSONBody(v2_documents.model_config(model, batch, enabled, settings.inference_threads))


@router.get("/models/{name}/config")
async def model_config(name: str, registry: RegistryDep, settings: SettingsDep) -> Response:
    """Model configuration extension: Triton's model configuration of the latest version."""
    return _config(registry.get(name), settings)


@router.get("/models/{name}/versions/{version}/config")
async def model_version_config(
    name: str, version: str, registry: RegistryDep, settings: SettingsDep
) -> Response:
    """Model configuration extension: one model version."""
    return _config(registry.get(name, parse_version(version)), settings)


@router.get("/models/{name}/stats")
async def model_stats(name: str, registry: RegistryDep, dataplane: DataPlaneDep) -> Response:
    """Statistics extension: every loaded version of one model."""
    return JSONBody({"model_stats": _stats(registry, dataplane, name, None)})


@router.get("/models/{name}/versions/{version}/stats")
async def model_version_stats(
    name: str, version: str, registry: RegistryDep, dataplane: DataPlaneDep
) -> Response:
    """Statistics extension: one model version."""
    return JSONBody({"model_stats": _stats(registry, dataplane, name, parse_version(version))})


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


__all__ = ["health", "router"]
