"""Task endpoints: classify, compress, decompress digits; energies; the exact solution."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service import codec, imaging
from service.api.body import json_body, media_type, read_body
from service.api.deps import FastRoute, ServiceDep, require_api_key
from service.api.npy import JSON, NPY, NPY_RESPONSE, NPZ, negotiate, npy_response, npz_response
from service.api.responses import JSONBody
from service.energy_domain import EnergyAnswer
from service.errors import InvalidInput, MalformedRequest, UnsupportedMediaType, describe
from service.inference import Classification, EnergyPrediction, Reading
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
    ReadResponse,
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

router = APIRouter(
    prefix="/api/v1",
    responses=ERRORS,
    dependencies=[Depends(require_api_key)],
    route_class=FastRoute,
)


def _code_rows(codes: np.ndarray) -> list[bytes]:
    """A uint8 `[N, L]` array of codes as N byte strings."""
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise InvalidInput.for_field(
            "codes",
            "a uint8 array [N, bytes_per_image]",
            f"dtype {codes.dtype}, shape {list(codes.shape)}",
        )
    return [row.tobytes() for row in codes]


def _model(result: Classification | EnergyPrediction) -> dict[str, Any]:
    return {"name": result.model.name, "version": result.model.version}


def _model_headers(result: Classification | EnergyPrediction) -> dict[str, str]:
    return {"X-Model-Name": result.model.name, "X-Model-Version": str(result.model.version)}


def _classification(
    result: Classification, answer: str = JSON, model_input_png: np.ndarray | None = None
) -> Response:
    if answer == NPY:
        return npy_response(result.probabilities, _model_headers(result))
    if answer == NPZ:
        arrays = {"digits": result.digits, "probabilities": result.probabilities, **result.extras}
        if model_input_png is not None:  # debug: the 28x28 input the model saw, [1, 28, 28]
            arrays["model_input"] = model_input_png[None]
        return npz_response(arrays, _model_headers(result))
    predictions: list[dict[str, Any]] = [
        {"digit": int(digit), "probabilities": probabilities}
        for digit, probabilities in zip(result.digits, result.probabilities, strict=True)
    ]
    # Every other output of the classifier version, per item by output name (issue 12's
    # `ood_score`, `is_digit`): a new model version's answers reach clients with no route change.
    for name, values in result.extras.items():
        for prediction, value in zip(predictions, values, strict=True):
            prediction[name] = value
    if model_input_png is not None:  # the upload's debug option: what the model saw
        predictions[0]["model_input_png"] = codec.b64encode(imaging.to_png(model_input_png))
    return JSONBody({"model": _model(result), "predictions": predictions})


def _energies(result: EnergyPrediction, answer: str = JSON) -> Response:
    if answer == NPY:
        if result.exact is None or result.errors is None:
            return npy_response(result.energies, _model_headers(result))
        columns = np.stack([result.energies.astype(np.float64), result.exact, result.errors], 1)
        return npy_response(columns, _model_headers(result))
    if answer == NPZ:
        return npz_response(_energy_arrays(result), _model_headers(result))
    body: dict[str, Any] = {
        "model": _model(result),
        "grid": {"start": -15.0, "stop": 15.0, "points": 64, "unit": "bohr"},
        "unit": "hartree",
        "energies": result.energies,
    }
    if result.answer is not None:
        body.update(_answer_fields(result.answer, result.mode))
    if result.exact is not None:
        body["exact_energies"] = result.exact
        body["errors"] = result.errors
    # Every other output of the model version, by output name, one value per item like
    # `energies` (issue 11's `energy_std`, `domain_score`, `in_domain`).
    for name, values in result.extras.items():
        body.setdefault(name, values)
    return JSONBody(body)


def _energy_arrays(result: EnergyPrediction) -> dict[str, Any]:
    """The JSON answer's per-item fields as arrays, for the .npz answer: always `energies`
    (float64), `mode` (a 0-d str), `answered_by` (str), `energy_std`, `energy_interval_95`
    [N, 2] (NaN where unknown), `in_domain`, `domain_score`, `domain_reason_text`;
    `exact_energies` and `errors` when asked for; the model's other outputs by name."""
    arrays: dict[str, Any] = {**result.extras, "energies": result.energies.astype(np.float64)}
    if result.answer is not None:
        fields = _answer_fields(result.answer, result.mode)
        intervals = [[np.nan, np.nan] if i is None else i for i in fields["energy_interval_95"]]
        arrays.update(
            mode=np.asarray(result.mode, dtype=str),
            answered_by=np.array(fields["answered_by"], dtype=str),
            energy_std=fields["energy_std"].astype(np.float64),
            energy_interval_95=np.array(intervals, dtype=np.float64).reshape(-1, 2),
            in_domain=np.asarray(fields["in_domain"], bool),
            domain_score=np.asarray(fields["domain_score"], np.float64),
            domain_reason_text=np.array(fields["domain_reason_text"], dtype=str),
        )
    if result.exact is not None:
        arrays.update(exact_energies=result.exact, errors=result.errors)
    return arrays


def _answer_fields(answer: EnergyAnswer, mode: str) -> dict[str, Any]:
    """Who answered each item and the model's domain verdict (issue 11), one value per item."""
    std = answer.energy_std
    known = np.isfinite(std)
    return {
        "mode": mode,
        "answered_by": answer.answered_by,
        "energy_std": np.where(known, std, np.nan),  # NaN is written as null
        "energy_interval_95": [
            [e - 1.96 * s, e + 1.96 * s] if k else None
            for e, s, k in zip(answer.energy.tolist(), std.tolist(), known.tolist(), strict=True)
        ],
        "in_domain": answer.domain.inside,
        "domain_score": answer.domain.score,
        "domain_reason_text": answer.domain.reason,
    }


_SCALE = {"scale": "'unit' (floats in [0, 1]) or 'byte' (integers 0-255); required."}


@router.post(
    "/digits/classify",
    tags=["digits"],
    response_model=ClassifyResponse,
    responses=NPY_RESPONSE,
    openapi_extra=json_body(ClassifyRequest, npy_query=_SCALE),
)
async def classify_digits(request: Request, service: ServiceDep) -> Response:
    """Classify 28x28 digit images: the digit and the ten probabilities of each.

    Binary form: a .npy body `[N, 28, 28]` with `?scale=`; `Accept: application/x-npy` returns
    the probabilities, float32 `[N, 10]`.
    """
    answer = negotiate(request, (JSON, NPY, NPZ))
    body = await read_body(request, ClassifyRequest, "images")
    return _classification(await service.classify(body.images, body.scale), answer)


def _upload_doc(file: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """`openapi_extra` documenting a multipart body with a `file` part (and `extra` fields)."""
    properties = {"file": {"type": "string", "format": "binary", "description": file}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {**properties, **(extra or {})},
                    }
                }
            },
        }
    }


_DEBUG = {
    "debug": {
        "type": "boolean",
        "default": False,
        "description": "true: the answer adds `model_input_png`, the 28x28 image the model "
        "saw (also accepted as the query parameter `?debug=true`).",
    }
}


async def _upload(request: Request) -> tuple[bytes, dict[str, str]]:
    """The bytes of the multipart part `file` and the form's text fields."""
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
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    await form.close()
    return data, fields


def _flag(value: str | None, field: str) -> bool:
    """A boolean form field or query parameter ('true'/'false', '1'/'0'); absent = false."""
    if value is None:
        return False
    known = {"true": True, "1": True, "false": False, "0": False}
    if value.lower() not in known:
        raise InvalidInput.for_field(field, "true or false", describe(value))
    return known[value.lower()]


@router.post(
    "/digits/classify/image",
    tags=["digits"],
    response_model=ClassifyResponse,
    response_model_exclude_none=True,
    responses=NPY_RESPONSE,
    openapi_extra=_upload_doc("A PNG or JPEG of one digit, any size, any colours.", _DEBUG),
)
async def classify_digit_image(request: Request, service: ServiceDep) -> Response:
    """Classify an uploaded PNG/JPEG photo or drawing of one digit (MNIST-style preprocessing)."""
    answer = negotiate(request, (JSON, NPY, NPZ))
    data, fields = await _upload(request)
    debug = _flag(fields.get("debug", request.query_params.get("debug")), "debug")
    if debug and answer == NPY:
        raise InvalidInput.for_field(
            "debug",
            "false with Accept: application/x-npy (the image is in the JSON answer)",
            "true",
        )
    result = await service.classify_upload(data)
    if debug and result.inputs is not None:
        return _classification(result, answer, model_input_png=result.inputs[0])
    return _classification(result, answer)


def _reading(result: Reading) -> Response:
    classified = result.classification
    extras = classified.extras
    digits: list[dict[str, Any]] = []
    for i, (digit, probabilities) in enumerate(
        zip(classified.digits, classified.probabilities, strict=True)
    ):
        top, left, bottom, right = result.boxes[i]
        item: dict[str, Any] = {
            "digit": int(digit),
            "probability": float(probabilities[digit]),
            "box": {"top": top, "left": left, "bottom": bottom, "right": right},
        }
        for name, values in extras.items():
            item[name] = values[i]
        digits.append(item)
    # A segment the model flags as not a digit is a "?" in the text, never a guessed digit.
    text = "".join(
        "?" if "is_digit" in extras and not bool(np.ravel(extras["is_digit"][i])[0]) else str(d)
        for i, d in enumerate(classified.digits)
    )
    return JSONBody({"model": _model(classified), "text": text, "digits": digits})


@router.post(
    "/digits/read",
    tags=["digits"],
    response_model=ReadResponse,
    openapi_extra=_upload_doc(
        "A PNG or JPEG of digits in one row (a number, a postcode), dark on light or light on "
        "dark; touching digits are not split."
    ),
)
async def read_digits(request: Request, service: ServiceDep) -> Response:
    """Read a number: segment an uploaded picture of a row of digits and classify each digit."""
    data, _fields = await _upload(request)
    return _reading(await service.read_upload(data))


@router.post(
    "/digits/compress",
    tags=["digits"],
    response_model=CompressResponse,
    responses=NPY_RESPONSE,
    openapi_extra=json_body(CompressRequest, npy_query=_SCALE),
)
async def compress_digits(request: Request, service: ServiceDep) -> Response:
    """Compress images into self-describing codes (header + the encoder's latent bytes).

    Binary form: a .npy body `[N, 28, 28]` with `?scale=`; `Accept: application/x-npy` returns
    the codes as uint8 `[N, bytes_per_image]`, header included.
    """
    answer = negotiate(request)
    body = await read_body(request, CompressRequest, "images")
    result = await service.compress(body.images, body.scale)
    if answer == NPY:
        codes = np.frombuffer(b"".join(result.codes), dtype=np.uint8)
        headers = {
            "X-Model-Name": result.model.name,
            "X-Model-Version": str(result.model.version),
        }
        return npy_response(codes.reshape(len(result.codes), -1), headers)
    return JSONBody(
        {
            "model": {"name": result.model.name, "version": result.model.version},
            "format": codec.FORMAT_V1,
            "bytes_per_image": result.bytes_per_image,
            "codes": [codec.b64encode(code) for code in result.codes],
            **{k: v for k, v in result.extras.items() if k not in ("model", "format", "codes")},
        }
    )


@router.post(
    "/digits/decompress",
    tags=["digits"],
    response_model=DecompressResponse,
    response_model_exclude_none=True,
    responses=NPY_RESPONSE,
    openapi_extra=json_body(DecompressRequest, npy_query={}),
)
async def decompress_digits(request: Request, service: ServiceDep) -> Response:
    """Decode codes back to 28x28 images, each with the decoder version named in its header.

    Binary form: a .npy body of uint8 codes `[N, bytes_per_image]` (header included);
    `Accept: application/x-npy` returns the images, float32 `[N, 28, 28]`.
    """
    answer = negotiate(request)
    body = await read_body(request, DecompressRequest, "codes")
    codes = body.codes
    if isinstance(codes, np.ndarray):
        codes = _code_rows(codes)
    result = await service.decompress(codes)
    if answer == NPY:
        return npy_response(result.images)
    content: dict[str, Any] = {"versions": result.versions}
    if body.output == "png":
        content["png"] = [codec.b64encode(imaging.to_png(image)) for image in result.images]
    else:
        content["images"] = result.images
    return JSONBody(content)


_MODE = "'model' (default), 'exact' or 'auto': who answers (see the JSON body's `mode`)"


@router.post(
    "/energy/from-potential",
    tags=["energy"],
    response_model=EnergyResponse,
    response_model_exclude_none=True,
    responses=NPY_RESPONSE,
    openapi_extra=json_body(
        PotentialEnergyRequest,
        npy_query={"include_exact": "true to add the exact energies", "mode": _MODE},
    ),
)
async def energy_from_potential(request: Request, service: ServiceDep) -> Response:
    """Predict ground-state energies (Hartree) from potentials V(x) (Hartree) on the grid.

    Binary form: a .npy body `[N, 64]`; `Accept: application/x-npy` returns the energies,
    float32 `[N]`, or with `include_exact` float64 `[N, 3]`: predicted, exact, error.
    """
    answer = negotiate(request, (JSON, NPY, NPZ))
    body = await read_body(request, PotentialEnergyRequest, "potentials")
    result = await service.energy_from_potential(body.potentials, body.include_exact, body.mode)
    return _energies(result, answer)


@router.post(
    "/energy/from-density",
    tags=["energy"],
    response_model=EnergyResponse,
    response_model_exclude_none=True,
    responses=NPY_RESPONSE,
    openapi_extra=json_body(DensityEnergyRequest, npy_query={"mode": _MODE}),
)
async def energy_from_density(request: Request, service: ServiceDep) -> Response:
    """Predict ground-state energies (Hartree) from densities n(x) (1/bohr) on the grid.

    Binary form: a .npy body `[N, 64]`; `Accept: application/x-npy` returns the energies,
    float32 `[N]` (float64 `[N, 3]` with potentials, in JSON only: predicted, exact, error).
    """
    answer = negotiate(request, (JSON, NPY, NPZ))
    body = await read_body(request, DensityEnergyRequest, "densities")
    result = await service.energy_from_density(body.densities, body.potentials, body.mode)
    return _energies(result, answer)


@router.post(
    "/energy/exact",
    tags=["energy"],
    response_model=ExactResponse,
    responses=NPY_RESPONSE,
    openapi_extra=json_body(ExactRequest, npy_query={}),
)
async def exact_solution(request: Request, service: ServiceDep) -> Response:
    """Solve the Schrodinger equation exactly: ground-state energy and density of each potential.

    Binary form: a .npy body `[N, 64]`; `Accept: application/x-npy` returns float64 `[N, 65]`:
    column 0 the energy, columns 1-64 the density.
    """
    answer = negotiate(request)
    body = await read_body(request, ExactRequest, "potentials")
    result = await service.exact_solution(body.potentials)
    if answer == NPY:
        return npy_response(np.column_stack([result.energies, result.densities]))
    return JSONBody(
        {
            "grid": {"start": -15.0, "stop": 15.0, "points": 64, "unit": "bohr"},
            "unit": "hartree",
            "energies": result.energies,
            "densities": result.densities,
        }
    )
