"""The digits task: classify 28x28 digit images, uploaded pictures of one digit, and read a row
of digits from a picture, with `digit_classifier`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from data import digit_shape
from service import imaging, reading
from service.api.deps import DataPlaneDep
from service.api.negotiation import (
    JSON,
    NPY,
    NPY_RESPONSE,
    NPZ,
    negotiate,
    npy_response,
    npz_response,
)
from service.api.responses import JSONBody
from service.codecs.b64 import b64encode
from service.contracts import InputContract, ModelSpec, ValueRange
from service.dataplane import DataPlane
from service.errors import InvalidInput, describe
from service.registry import ModelVersion
from service.schemas import ModelRef, RequestSchema, array_schema
from service.tasks import base

CLASSIFIER = "digit_classifier"

PixelScale = Literal["unit", "byte"]
PIXELS_UNIT: ValueRange = (0.0, 1.0, "pixels (scale 'unit')")
#: The images of the contract: `[N, 28, 28]` (or `[N, 28, 28, 1]`, the signature's shape).
IMAGES = InputContract("images", (28, 28), PIXELS_UNIT, squeeze_channel=True)
#: `scale=byte` images: integers 0-255, checked and divided by 255 in the one validation pass.
BYTE_IMAGES = InputContract(
    "images",
    (28, 28),
    (0.0, 255.0, "pixels (scale 'byte')"),
    integers=True,
    squeeze_channel=True,
    divide_by=255.0,
)

MODELS = (
    ModelSpec(
        CLASSIFIER,
        "classify 28x28 digit images",
        ("/api/v1/digits/classify", "/api/v1/digits/classify/image", "/api/v1/digits/read"),
        "probabilities",
        (IMAGES,),
    ),
)


def pixel_contract(scale: object) -> InputContract:
    """The contract of images on `scale` (the data plane checks and scales them once)."""
    if scale == "unit":
        return IMAGES
    if scale == "byte":
        return BYTE_IMAGES
    raise InvalidInput.for_field("scale", "'unit' or 'byte'", describe(scale))


# Wire schemas ---------------------------------------------------------------------------------

ONE_DIGIT: Any = [
    [1.0 if 12 <= col <= 15 and 4 <= row <= 23 else 0.0 for col in range(28)] for row in range(28)
]
Images = Annotated[
    Any,
    array_schema(
        "One image [28, 28] or a batch [N, 28, 28] (a trailing channel [.., 1] is accepted), "
        "pixels on the scale named by `scale`.",
        2,
    ),
]
PixelScaleField = Annotated[
    PixelScale,
    Field(
        description="How pixels are given: 'unit' = floats in [0, 1], 'byte' = integers 0-255. "
        "Required: the server never guesses, and values outside the range are an error."
    ),
]


class ClassifyRequest(RequestSchema):
    """Images to classify."""

    images: Images
    scale: PixelScaleField

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": ONE_DIGIT, "scale": "unit"}]}
    )


_OOD_SCORE = (
    "Out-of-distribution score of classifier versions that have one (v2: -logsumexp of the "
    "logits): the higher, the less the image looks like a digit the model knows."
)
_IS_DIGIT = (
    "False when the image does not look like a digit; the digit is then only a guess. v2: "
    "`not_digit_score` above the threshold that accepts 99.5% of held-out MNIST digits."
)
_NOT_DIGIT_SCORE = (
    "Versions with a not-a-digit rule (v2): how unlike a digit the image is, in [0, 1], from "
    "the classifier's `ood_score` and top probability and the ink's geometry (strokes, loops, "
    "convexity, fill, aspect, symmetry), combined by boosted trees fitted by "
    "`python -m training.digit_flag`."
)


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    probabilities: list[float] = Field(description="P(digit = 0..9), summing to 1.")
    ood_score: float | None = Field(default=None, description=_OOD_SCORE, examples=[-9.7])
    is_digit: bool | None = Field(default=None, description=_IS_DIGIT, examples=[True])
    not_digit_score: float | None = Field(
        default=None, description=_NOT_DIGIT_SCORE, examples=[0.01]
    )
    model_input_png: str | None = Field(
        default=None,
        description="Upload with `debug=true` only: base64 of the 28x28 grayscale PNG the model "
        "was given (light strokes on black, MNIST's framing).",
    )

    model_config = ConfigDict(
        extra="allow",  # every other output of the model version, by output name
        json_schema_extra={
            "examples": [
                {
                    "digit": 7,
                    "probabilities": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
                    "ood_score": -9.7,
                    "is_digit": True,
                    "not_digit_score": 0.01,
                }
            ]
        },
    )


class ClassifyResponse(BaseModel):
    """One prediction per image, in request order."""

    model: ModelRef
    predictions: list[DigitPrediction]


class Box(BaseModel):
    """A digit's box in the uploaded picture's pixels (bottom and right exclusive)."""

    top: int
    left: int
    bottom: int
    right: int


class ReadDigit(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit of this segment.")
    probability: float = Field(description="Its probability.")
    box: Box
    ood_score: float | None = Field(default=None, description=_OOD_SCORE)
    is_digit: bool | None = Field(default=None, description=_IS_DIGIT + " Shown as '?' in `text`.")
    not_digit_score: float | None = Field(default=None, description=_NOT_DIGIT_SCORE)

    model_config = ConfigDict(extra="allow")


class ReadResponse(BaseModel):
    """The digits of a row, left to right."""

    model: ModelRef
    text: str = Field(
        description="The digits read, left to right; '?' for a segment whose `is_digit` is "
        "false (it does not look like a digit)."
    )
    digits: list[ReadDigit]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "digit_classifier", "version": 2},
                    "text": "40?",
                    "digits": [
                        {
                            "digit": 4,
                            "probability": 0.998,
                            "box": {"top": 10, "left": 12, "bottom": 58, "right": 44},
                            "ood_score": -9.1,
                            "is_digit": True,
                        },
                        {
                            "digit": 0,
                            "probability": 0.999,
                            "box": {"top": 11, "left": 52, "bottom": 57, "right": 88},
                            "ood_score": -10.4,
                            "is_digit": True,
                        },
                        {
                            "digit": 8,
                            "probability": 0.41,
                            "box": {"top": 15, "left": 97, "bottom": 55, "right": 130},
                            "ood_score": -1.2,
                            "is_digit": False,
                        },
                    ],
                }
            ]
        },
    )


# Pre-steps and post-steps -------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    model: ModelVersion
    digits: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, 10]
    #: The classifier version's other outputs, by name, each [N, ...].
    extras: base.Extras = field(default_factory=dict)
    #: The 28x28 images in [0, 1] the model was given, [N, 28, 28] (None: a model whose input
    #: is not 784 values per item).
    inputs: np.ndarray | None = None


@dataclass(frozen=True)
class Reading:
    """A row of digits read from a picture: one classification per segment, left to right."""

    classification: Classification
    #: Each digit's box in the uploaded picture: (top, left, bottom, right), bottom/right
    #: exclusive.
    boxes: list[tuple[int, int, int, int]]


async def classify(dataplane: DataPlane, images: Any, scale: PixelScale = "unit") -> Classification:
    """Digit and the ten probabilities for each image."""
    model = dataplane.resolve(CLASSIFIER)
    # The not-a-digit rule reads the pixels the data plane validated and scaled, as the model
    # saw them (`Classification.inputs`): no second conversion of the request's values.
    return await _flagged(
        dataplane, await _classify(dataplane, model, images, pixel_contract(scale))
    )


async def classify_upload(dataplane: DataPlane, data: bytes, field: str = "file") -> Classification:
    """Classify one uploaded PNG/JPEG after MNIST-style preprocessing."""
    model = dataplane.resolve(CLASSIFIER)
    image = await dataplane.runner.call(
        "image preprocessing",
        imaging.preprocess_upload,
        data,
        dataplane.settings.max_image_pixels,
        field,
    )
    result = await _classify(dataplane, model, image[np.newaxis], inputs=image[np.newaxis])
    return await _flagged(dataplane, result, image[np.newaxis])


def _segment_upload(data: bytes, max_pixels: int, field: str) -> list[reading.Segment]:
    """Limits first (from the header), then decoding and segmentation: one blocking job."""
    image = imaging.open_image(data, max_pixels, field)
    return reading.segment_row(imaging.to_grayscale(image, field), field)


async def read_picture(dataplane: DataPlane, data: bytes, field: str = "file") -> Reading:
    """Read the digits of an uploaded picture of a row of digits, left to right."""
    model = dataplane.resolve(CLASSIFIER)
    settings = dataplane.settings
    # Inside the runner: the time limit covers decoding and segmentation too.
    segments = await dataplane.runner.call(
        "reading a number", _segment_upload, data, settings.max_image_pixels, field
    )
    if not segments:
        raise InvalidInput.for_field(
            field, "a picture of a row of digits", "no digit-sized ink", what="no digit found"
        )
    cap = settings.max_read_digits
    if len(segments) > cap:
        raise InvalidInput.for_field(
            field,
            f"at most {cap} digits (the server's max_read_digits)",
            f"{len(segments)} digits",
            what="too many digits",
        )
    images = np.stack([segment.image for segment in segments])
    result = await _flagged(dataplane, await _classify(dataplane, model, images, inputs=images))
    return Reading(result, [segment.box for segment in segments])


async def _classify(
    dataplane: DataPlane,
    model: ModelVersion,
    images: Any,
    contract: InputContract | None = None,
    inputs: np.ndarray | None = None,
) -> Classification:
    response = await base.infer_one(dataplane, model, "images", images, "images", contract)
    probabilities, extras = base.primary(dataplane, response)
    probabilities = probabilities.reshape(probabilities.shape[0], -1)
    if inputs is None:  # the model's input as validated, in [0, 1]: [N, 28, 28]
        given = response.inputs.get(model.input.name)
        if given is not None and given.size == len(given) * 28 * 28:
            inputs = given.reshape(len(given), 28, 28)
    return Classification(model, probabilities.argmax(axis=1), probabilities, extras, inputs)


#: The rule of each classifier version folder read so far (the registry keeps every version
#: it loaded, so this holds no more).
_RULES: dict[Path, digit_shape.FlagRule | None] = {}


def flag_rule(version_dir: Path) -> digit_shape.FlagRule | None:
    """The not-a-digit rule saved beside a classifier version (``not_a_digit.json``), if any;
    read once per version folder (blocking: a 400 KB JSON and an ONNX Runtime session)."""
    if version_dir not in _RULES:
        _RULES[version_dir] = digit_shape.load_rule(version_dir)
    return _RULES[version_dir]


async def _rule(dataplane: DataPlane, model: ModelVersion) -> digit_shape.FlagRule | None:
    """`flag_rule` of the version: read in the inference threads the first time, so that no
    request waits behind it on the event loop."""
    if model.path in _RULES:
        return _RULES[model.path]
    return await dataplane.runner.call("reading the not-a-digit rule", flag_rule, model.path)


def _flags(
    rule: digit_shape.FlagRule, images: np.ndarray, probabilities: np.ndarray, ood: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    score = rule.score(digit_shape.signals(images, probabilities, ood))
    return score <= rule.threshold, score.astype(np.float32)


async def _flagged(
    dataplane: DataPlane, result: Classification, images: np.ndarray | None = None
) -> Classification:
    """`result` with `is_digit` decided by the version's not-a-digit rule (which combines the
    model's `ood_score` with the ink's geometry) and its `not_digit_score`; unchanged for a
    version without a rule."""
    rule = await _rule(dataplane, result.model)
    images = result.inputs if images is None else images
    if rule is None or images is None or "ood_score" not in result.extras:
        return result
    is_digit, score = await dataplane.runner.call(
        "not-a-digit check", _flags, rule, images, result.probabilities, result.extras["ood_score"]
    )
    extras = {**result.extras, "is_digit": is_digit, "not_digit_score": score}
    return Classification(result.model, result.digits, result.probabilities, extras, result.inputs)


# Routes ---------------------------------------------------------------------------------------

router = base.task_router()


def _classification(
    result: Classification, answer: str, model_input_png: np.ndarray | None = None
) -> Response:
    if answer == NPY:
        return npy_response(result.probabilities, base.model_headers(result.model))
    if answer == NPZ:
        arrays = {"digits": result.digits, "probabilities": result.probabilities, **result.extras}
        if model_input_png is not None:  # debug: the 28x28 input the model saw, [1, 28, 28]
            arrays["model_input"] = model_input_png[None]
        return npz_response(arrays, base.model_headers(result.model))
    predictions: list[dict[str, Any]] = [
        {"digit": int(digit), "probabilities": probabilities}
        for digit, probabilities in zip(result.digits, result.probabilities, strict=True)
    ]
    # Every other output of the classifier version, per item by output name (`ood_score`,
    # `is_digit`): a new model version's answers reach clients with no route change.
    for name, values in result.extras.items():
        for prediction, value in zip(predictions, values, strict=True):
            prediction[name] = value
    if model_input_png is not None:  # the upload's debug option: what the model saw
        predictions[0]["model_input_png"] = b64encode(imaging.to_png(model_input_png))
    return JSONBody({"model": base.model_ref(result.model), "predictions": predictions})


#: The query parameter of a .npy body of images.
SCALE_QUERY = {"scale": "'unit' (floats in [0, 1]) or 'byte' (integers 0-255); required."}


@base.array_route(
    router, "/digits/classify", "digits", ClassifyRequest, ClassifyResponse, SCALE_QUERY
)
async def classify_digits(request: Request, dataplane: DataPlaneDep) -> Response:
    """Classify 28x28 digit images: the digit and the ten probabilities of each.

    Binary form: a .npy body `[N, 28, 28]` with `?scale=`; `Accept: application/x-npy` returns
    the probabilities, float32 `[N, 10]`.
    """
    answer, body = await base.read_request(request, ClassifyRequest, "images", (JSON, NPY, NPZ))
    return _classification(await classify(dataplane, body.images, body.scale), answer)


_DEBUG = {
    "debug": {
        "type": "boolean",
        "default": False,
        "description": "true: the answer adds `model_input_png`, the 28x28 image the model "
        "saw (also accepted as the query parameter `?debug=true`).",
    }
}


@router.post(
    "/digits/classify/image",
    tags=["digits"],
    response_model=ClassifyResponse,
    response_model_exclude_none=True,
    responses=NPY_RESPONSE,
    openapi_extra=base.upload_doc("A PNG or JPEG of one digit, any size, any colours.", _DEBUG),
)
async def classify_digit_image(request: Request, dataplane: DataPlaneDep) -> Response:
    """Classify an uploaded PNG/JPEG photo or drawing of one digit (MNIST-style preprocessing)."""
    answer = negotiate(request, (JSON, NPY, NPZ))
    data, fields = await base.read_upload(request)
    debug = base.flag(fields.get("debug", request.query_params.get("debug")), "debug")
    if debug and answer == NPY:
        raise InvalidInput.for_field(
            "debug",
            "false with Accept: application/x-npy (the image is in the JSON answer)",
            "true",
        )
    result = await classify_upload(dataplane, data)
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
    return JSONBody({"model": base.model_ref(classified.model), "text": text, "digits": digits})


@router.post(
    "/digits/read",
    tags=["digits"],
    response_model=ReadResponse,
    openapi_extra=base.upload_doc(
        "A PNG or JPEG of digits in one row (a number, a postcode), dark on light or light on "
        "dark; touching digits are not split."
    ),
)
async def read_digits(request: Request, dataplane: DataPlaneDep) -> Response:
    """Read a number: segment an uploaded picture of a row of digits and classify each digit."""
    data, _fields = await base.read_upload(request)
    return _reading(await read_picture(dataplane, data))


TASK = base.Task("digits", MODELS, router)
