"""The codec task: compress digit images into self-describing codes with `digit_encoder`, and
decode them back with the `digit_decoder` of the version that made each.

A code is `header || latent`: byte 0 is the format (0x01), bytes 1-2 the encoder version
(uint16, big-endian), then the K latent bytes exactly as `digit_encoder` produced them
(docs/ARCHITECTURE.md). The header lets a code be decoded by the decoder of the version that
made it, after newer versions are deployed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.responses import Response

from service import imaging
from service.api.deps import DataPlaneDep
from service.api.negotiation import NPY, npy_response
from service.api.responses import JSONBody
from service.codecs.b64 import b64decode, b64encode
from service.contracts import UINT8_RANGE, InputContract, ModelSpec
from service.dataplane import DataPlane
from service.errors import InvalidInput, ModelNotReady, describe
from service.registry import ModelVersion
from service.schemas import ModelRef, RequestSchema
from service.tasks import base
from service.tasks.digits import (
    IMAGES,
    ONE_DIGIT,
    SCALE_QUERY,
    Images,
    PixelScale,
    PixelScaleField,
    pixel_contract,
)

ENCODER = "digit_encoder"
DECODER = "digit_decoder"

MODELS = (
    ModelSpec(
        ENCODER,
        "compress digit images into latent codes",
        ("/api/v1/digits/compress",),
        "code",
        (IMAGES,),
    ),
    ModelSpec(
        DECODER,
        "decode latent codes back into images",
        ("/api/v1/digits/decompress",),
        "images",
        # The code length differs per version: the signature gives it (item shape () here).
        (InputContract("code", (), UINT8_RANGE, integers=True),),
    ),
)

# The code format ------------------------------------------------------------------------------

FORMAT_V1 = 0x01
HEADER = struct.Struct(">BH")
HEADER_BYTES = HEADER.size


def pack(version: int, latent: np.ndarray) -> bytes:
    """One code: the header for `version`, then the uint8 latent bytes."""
    if not 0 < version < 2**16:
        raise ValueError(f"encoder version {version} does not fit the 2-byte header")
    return HEADER.pack(FORMAT_V1, version) + np.ascontiguousarray(latent, dtype=np.uint8).tobytes()


def unpack(code: bytes, field: str) -> tuple[int, np.ndarray]:
    """(encoder version, latent uint8 array) of one code; a malformed code is a 422."""
    if len(code) <= HEADER_BYTES:
        raise InvalidInput.for_field(
            field,
            f"more than {HEADER_BYTES} bytes (header + latent)",
            f"{len(code)} bytes",
            what="truncated code",
        )
    fmt, version = HEADER.unpack_from(code)
    if fmt != FORMAT_V1:
        raise InvalidInput.for_field(
            field, f"format byte 0x{FORMAT_V1:02x}", f"0x{fmt:02x}", what="unknown code format"
        )
    return version, np.frombuffer(code, dtype=np.uint8, offset=HEADER_BYTES)


# Wire schemas ---------------------------------------------------------------------------------


class CompressRequest(RequestSchema):
    """Images to compress."""

    images: Images
    scale: PixelScaleField

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": ONE_DIGIT, "scale": "unit"}]}
    )


class CompressResponse(BaseModel):
    """One code per image: base64 of `0x01 || encoder version (uint16 BE) || latent bytes`."""

    model: ModelRef = Field(description="The encoder that made the codes.")
    format: int = Field(1, description="The code format byte.")
    bytes_per_image: int = Field(description="Length of each code in bytes, header included.")
    codes: list[str] = Field(description="Standard base64, one per image.")


class DecompressRequest(RequestSchema):
    """Codes made by the compress endpoint (by any encoder version still deployed)."""

    codes: Annotated[
        Any,
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "string", "format": "byte"},
                "description": "Base64 codes, each decoded by the decoder of the version in "
                "its header.",
            }
        ),
    ]
    output: Literal["array", "png"] = Field(
        "array", description="'array': 28x28 numbers in [0, 1]; 'png': base64 8-bit PNG files."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"codes": ["AQABAAAAAAAAAAAAAAAAAAAAAA=="], "output": "array"}]
        }
    )


class DecompressResponse(BaseModel):
    """Images in request order, with the decoder version that made each."""

    versions: list[int] = Field(description="Decoder (= encoder) version of each code.")
    images: list[list[list[float]]] | None = Field(None, description="[N, 28, 28] in [0, 1].")
    png: list[str] | None = Field(None, description="Base64 PNG files, 28x28 grayscale.")


# Energies -------------------------------------------------------------------------------------


# Pre-steps and post-steps -------------------------------------------------------------------


@dataclass(frozen=True)
class Compression:
    model: ModelVersion
    codes: list[bytes]
    bytes_per_image: int
    extras: base.Extras = field(default_factory=dict)


@dataclass(frozen=True)
class Decompression:
    images: np.ndarray  # float32 [N, 28, 28]
    versions: list[int]  # decoder version used for each image


def encoder_for_compression(dataplane: DataPlane) -> ModelVersion:
    """The newest encoder version whose decoder of the same version is loaded too."""
    encoders = dataplane.registry.entry(ENCODER)
    decoders = dataplane.registry.entry(DECODER)
    usable = sorted(set(encoders.versions) & set(decoders.versions))
    if not usable:
        if not encoders.ready:
            raise ModelNotReady(encoders.status_message())
        if not decoders.ready:
            raise ModelNotReady(decoders.status_message())
        raise ModelNotReady(
            f"no encoder version has a loaded decoder of the same version "
            f"(encoders {sorted(encoders.versions)}, decoders {sorted(decoders.versions)})"
        )
    return encoders.versions[usable[-1]]


async def compress(dataplane: DataPlane, images: Any, scale: PixelScale = "unit") -> Compression:
    """Each image as a self-describing code: header + the encoder's latent bytes."""
    model = encoder_for_compression(dataplane)
    contract = pixel_contract(scale)
    response = await base.infer_one(dataplane, model, "images", images, "images", contract)
    latent, extras = base.primary(dataplane, response)
    latent = np.asarray(latent, dtype=np.uint8).reshape(latent.shape[0], -1)
    codes = [pack(model.version, row) for row in latent]
    return Compression(model, codes, HEADER_BYTES + latent.shape[1], extras)


async def decompress(
    dataplane: DataPlane, codes: Sequence[bytes | str], field: str = "codes"
) -> Decompression:
    """28x28 images in [0, 1] from codes, each decoded by the version that made it."""
    if not isinstance(codes, Sequence) or isinstance(codes, str | bytes):
        raise InvalidInput.for_field(field, "a list of base64 codes", describe(codes))
    if not codes:
        raise InvalidInput.for_field(field, "at least one code", "an empty list", "empty batch")
    limit = dataplane.settings.max_items_per_request
    if len(codes) > limit:
        raise InvalidInput.for_field(
            field,
            f"at most {limit} items",
            f"{len(codes)} items",
            what=f"batch too large: at most {limit} items per request",
        )
    entry = dataplane.registry.entry(DECODER)
    groups: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, code in enumerate(codes):
        where = f"{field}[{i}]"
        raw = code if isinstance(code, bytes) else b64decode(code, where)
        version, latent = unpack(raw, where)
        if version not in entry.versions:
            if version in entry.failed:
                raise ModelNotReady(
                    f"{where}: decoder version {version} failed to load: {entry.failed[version]}"
                )
            loaded = ", ".join(map(str, sorted(entry.versions))) or "none"
            raise InvalidInput.for_field(
                where,
                f"a code from a loaded encoder version ({loaded})",
                f"a code from version {version}",
                what=f"unknown model version {version}",
            )
        expected = entry.versions[version].input.item_shape
        size = int(np.prod([d for d in expected if d is not None]))
        if latent.size != size:
            raise InvalidInput.for_field(
                where,
                f"{HEADER_BYTES + size} bytes for version {version}",
                f"{HEADER_BYTES + latent.size} bytes",
                what="corrupt code: wrong length",
            )
        groups.setdefault(version, []).append((i, latent))
    images = np.zeros((len(codes), 28, 28), dtype=np.float32)
    versions = [0] * len(codes)
    for version, items in sorted(groups.items()):
        model = entry.versions[version]
        batch = np.stack([latent for _, latent in items])
        out, _ = base.primary(
            dataplane, await base.infer_one(dataplane, model, model.input.name, batch, field)
        )
        out = np.asarray(out, dtype=np.float32).reshape(len(items), 28, 28)
        for (i, _), image in zip(items, out, strict=True):
            images[i] = image
            versions[i] = version
    return Decompression(images, versions)


# Routes ---------------------------------------------------------------------------------------

router = base.task_router()


def _code_rows(codes: np.ndarray) -> list[bytes]:
    """A uint8 `[N, L]` array of codes as N byte strings."""
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise InvalidInput.for_field(
            "codes",
            "a uint8 array [N, bytes_per_image]",
            f"dtype {codes.dtype}, shape {list(codes.shape)}",
        )
    return [row.tobytes() for row in codes]


@base.array_route(
    router, "/digits/compress", "digits", CompressRequest, CompressResponse, SCALE_QUERY
)
async def compress_digits(request: Request, dataplane: DataPlaneDep) -> Response:
    """Compress images into self-describing codes (header + the encoder's latent bytes).

    Binary form: a .npy body `[N, 28, 28]` with `?scale=`; `Accept: application/x-npy` returns
    the codes as uint8 `[N, bytes_per_image]`, header included.
    """
    answer, body = await base.read_request(request, CompressRequest, "images")
    result = await compress(dataplane, body.images, body.scale)
    if answer == NPY:
        codes = np.frombuffer(b"".join(result.codes), dtype=np.uint8)
        return npy_response(codes.reshape(len(result.codes), -1), base.model_headers(result.model))
    return JSONBody(
        {
            "model": base.model_ref(result.model),
            "format": FORMAT_V1,
            "bytes_per_image": result.bytes_per_image,
            "codes": [b64encode(code) for code in result.codes],
            **{k: v for k, v in result.extras.items() if k not in ("model", "format", "codes")},
        }
    )


@base.array_route(
    router,
    "/digits/decompress",
    "digits",
    DecompressRequest,
    DecompressResponse,
    {},
    exclude_none=True,
)
async def decompress_digits(request: Request, dataplane: DataPlaneDep) -> Response:
    """Decode codes back to 28x28 images, each with the decoder version named in its header.

    Binary form: a .npy body of uint8 codes `[N, bytes_per_image]` (header included);
    `Accept: application/x-npy` returns the images, float32 `[N, 28, 28]`.
    """
    answer, body = await base.read_request(request, DecompressRequest, "codes")
    codes = body.codes
    if isinstance(codes, np.ndarray):
        codes = _code_rows(codes)
    result = await decompress(dataplane, codes)
    if answer == NPY:
        return npy_response(result.images)
    content: dict[str, Any] = {"versions": result.versions}
    if body.output == "png":
        content["png"] = [b64encode(imaging.to_png(image)) for image in result.images]
    else:
        content["images"] = result.images
    return JSONBody(content)


TASK = base.Task("codec", MODELS, router)
