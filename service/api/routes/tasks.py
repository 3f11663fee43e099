"""Task endpoints: classify, compress, decompress digits; energies; the exact solution."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service import codec, imaging
from service.api.body import json_body, media_type, read_json
from service.api.deps import ServiceDep, require_api_key
from service.api.responses import JSONBody
from service.errors import InvalidInput, MalformedRequest, UnsupportedMediaType, describe
from service.inference import Classification, EnergyPrediction
from service.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    CompressRequest,
    CompressResponse,
    DecompressRequest,
    DecompressResponse,
    DensityEnergyRequest,
    EnergyResponse,
    ErrorResponse,
    ExactRequest,
    ExactResponse,
    PotentialEnergyRequest,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed body (not JSON, not multipart)",
        401: "Missing or wrong API key (when one is configured)",
        404: "Unknown model or version",
        413: "Body (or image) over the configured limit",
        415: "Unsupported content type",
        422: "Invalid values: shape, range, NaN, batch size, codes...",
        503: "The model is not loaded",
        504: "Inference took longer than the configured timeout",
    }.items()
}

router = APIRouter(prefix="/api/v1", responses=ERRORS, dependencies=[Depends(require_api_key)])


def _model(result: Classification | EnergyPrediction) -> dict[str, Any]:
    return {"name": result.model.name, "version": result.model.version}


def _classification(result: Classification) -> Response:
    return JSONBody(
        {
            "model": _model(result),
            "predictions": [
                {"digit": int(digit), "probabilities": probabilities}
                for digit, probabilities in zip(result.digits, result.probabilities, strict=True)
            ],
        }
    )


def _energies(result: EnergyPrediction) -> Response:
    body: dict[str, Any] = {
        "model": _model(result),
        "grid": {"start": -15.0, "stop": 15.0, "points": 64, "unit": "bohr"},
        "unit": "hartree",
        "energies": result.energies,
    }
    if result.exact is not None:
        body["exact_energies"] = result.exact
        body["errors"] = result.errors
    return JSONBody(body)


@router.post(
    "/digits/classify",
    tags=["digits"],
    response_model=ClassifyResponse,
    openapi_extra=json_body(ClassifyRequest),
)
async def classify_digits(request: Request, service: ServiceDep) -> Response:
    """Classify 28x28 digit images: the digit and the ten probabilities of each."""
    body = await read_json(request, ClassifyRequest)
    return _classification(await service.classify(body.images, body.scale))


_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A PNG or JPEG of one digit, any size, any colours.",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/digits/classify/image",
    tags=["digits"],
    response_model=ClassifyResponse,
    openapi_extra=_UPLOAD_DOC,
)
async def classify_digit_image(request: Request, service: ServiceDep) -> Response:
    """Classify an uploaded PNG/JPEG photo or drawing of one digit (MNIST-style preprocessing)."""
    kind = media_type(request)
    if kind != "multipart/form-data":
        raise UnsupportedMediaType(
            f"content type {kind!r} is not accepted here; send multipart/form-data with a "
            "'file' part",
            field="Content-Type",
            expected="multipart/form-data",
            received=kind,
        )
    try:
        form = await request.form(max_files=1, max_fields=4)
    except StarletteHTTPException as exc:  # Starlette's wrapper of multipart parse errors
        raise MalformedRequest(
            f"body is not valid multipart/form-data: {exc.detail}",
            field="body",
            expected="multipart/form-data with a 'file' part",
            received=describe(str(exc.detail)),
        ) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput.for_field(
            "file", "a file part named 'file'", describe(upload) if upload else "no 'file' part"
        )
    data = await upload.read()
    await form.close()
    return _classification(await service.classify_upload(data))


@router.post(
    "/digits/compress",
    tags=["digits"],
    response_model=CompressResponse,
    openapi_extra=json_body(CompressRequest),
)
async def compress_digits(request: Request, service: ServiceDep) -> Response:
    """Compress images into self-describing codes (header + the encoder's latent bytes)."""
    body = await read_json(request, CompressRequest)
    result = await service.compress(body.images, body.scale)
    return JSONBody(
        {
            "model": {"name": result.model.name, "version": result.model.version},
            "format": codec.FORMAT_V1,
            "bytes_per_image": result.bytes_per_image,
            "codes": [codec.b64encode(code) for code in result.codes],
        }
    )


@router.post(
    "/digits/decompress",
    tags=["digits"],
    response_model=DecompressResponse,
    response_model_exclude_none=True,
    openapi_extra=json_body(DecompressRequest),
)
async def decompress_digits(request: Request, service: ServiceDep) -> Response:
    """Decode codes back to 28x28 images, each with the decoder version named in its header."""
    body = await read_json(request, DecompressRequest)
    result = await service.decompress(body.codes)
    content: dict[str, Any] = {"versions": result.versions}
    if body.output == "png":
        content["png"] = [codec.b64encode(imaging.to_png(image)) for image in result.images]
    else:
        content["images"] = result.images
    return JSONBody(content)


@router.post(
    "/energy/from-potential",
    tags=["energy"],
    response_model=EnergyResponse,
    response_model_exclude_none=True,
    openapi_extra=json_body(PotentialEnergyRequest),
)
async def energy_from_potential(request: Request, service: ServiceDep) -> Response:
    """Predict ground-state energies (Hartree) from potentials V(x) (Hartree) on the grid."""
    body = await read_json(request, PotentialEnergyRequest)
    return _energies(await service.energy_from_potential(body.potentials, body.include_exact))


@router.post(
    "/energy/from-density",
    tags=["energy"],
    response_model=EnergyResponse,
    response_model_exclude_none=True,
    openapi_extra=json_body(DensityEnergyRequest),
)
async def energy_from_density(request: Request, service: ServiceDep) -> Response:
    """Predict ground-state energies (Hartree) from densities n(x) (1/bohr) on the grid."""
    body = await read_json(request, DensityEnergyRequest)
    return _energies(await service.energy_from_density(body.densities, body.potentials))


@router.post(
    "/energy/exact",
    tags=["energy"],
    response_model=ExactResponse,
    openapi_extra=json_body(ExactRequest),
)
async def exact_solution(request: Request, service: ServiceDep) -> Response:
    """Solve the Schrodinger equation exactly: ground-state energy and density of each potential."""
    body = await read_json(request, ExactRequest)
    result = await service.exact_solution(body.potentials)
    return JSONBody(
        {
            "grid": {"start": -15.0, "stop": 15.0, "points": 64, "unit": "bohr"},
            "unit": "hartree",
            "energies": result.energies,
            "densities": result.densities,
        }
    )
