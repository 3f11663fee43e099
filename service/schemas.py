"""Wire schemas of the JSON APIs, named by role (`<Task>Request`, `<Task>Response`).

Array fields are validated by `service.arrays` (numpy, with messages that point at the bad
element), so pydantic only documents their JSON schema here and carries the rest: literals,
flags, and unknown keys (forbidden, so a misspelt field is an error, not silently ignored).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from service.catalogue import GRID_POINTS, GRID_START, GRID_STOP

_ONE_DIGIT: Any = [
    [1.0 if 12 <= col <= 15 and 4 <= row <= 23 else 0.0 for col in range(28)] for row in range(28)
]
_POTENTIAL: Any = [
    round(0.5 * 0.1 * x * x, 4) for x in [GRID_START + i * 30 / 63 for i in range(64)]
]


def _array_schema(description: str, depth: int) -> Any:
    schema: dict[str, Any] = {"type": "number"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return WithJsonSchema(
        {"anyOf": [schema, {"type": "array", "items": schema}], "description": description}
    )


Images = Annotated[
    Any,
    _array_schema(
        "One image [28, 28] or a batch [N, 28, 28] (a trailing channel [.., 1] is accepted), "
        "pixels on the scale named by `scale`.",
        2,
    ),
]
GridArrays = Annotated[
    Any,
    _array_schema(
        f"One array [{GRID_POINTS}] or a batch [N, {GRID_POINTS}] of values on the grid "
        f"linspace({GRID_START:g}, {GRID_STOP:g}, {GRID_POINTS}) bohr.",
        1,
    ),
]
PixelScaleField = Annotated[
    Literal["unit", "byte"],
    Field(
        description="How pixels are given: 'unit' = floats in [0, 1], 'byte' = integers 0-255. "
        "Required: the server never guesses, and values outside the range are an error."
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    """The one error body of every route (TensorFlow Serving's `{"error": ...}`, extended)."""

    error: str = Field(description="What went wrong, for a human.")
    field: str | None = Field(default=None, description="The request field at fault, with index.")
    expected: str | None = Field(default=None, description="What the field should have held.")
    received: str | None = Field(default=None, description="What it held (abbreviated).")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "images: wrong shape, received shape [2, 28, 27]",
                    "field": "images",
                    "expected": "shape [28, 28] or [N, 28, 28]",
                    "received": "shape [2, 28, 27]",
                }
            ]
        }
    )


class ModelRef(BaseModel):
    """The model version that answered."""

    name: str
    version: int


class Grid(BaseModel):
    """The real-space grid of every 64-point array."""

    start: float = Field(default=GRID_START, description="First point, bohr.")
    stop: float = Field(default=GRID_STOP, description="Last point, bohr.")
    points: int = GRID_POINTS
    unit: Literal["bohr"] = "bohr"


# Digits ---------------------------------------------------------------------------------------


class ClassifyRequest(_Request):
    """Images to classify."""

    images: Images
    scale: PixelScaleField

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": _ONE_DIGIT, "scale": "unit"}]}
    )


_OOD_SCORE = (
    "Out-of-distribution score of classifier versions that have one (v2: -logsumexp of the "
    "logits): the higher, the less the image looks like a digit the model knows."
)
_IS_DIGIT = (
    "False when the image does not look like a digit (v2: `ood_score` above the threshold "
    "calibrated to accept 99.5% of held-out MNIST digits); the digit is then only a guess."
)


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    probabilities: list[float] = Field(description="P(digit = 0..9), summing to 1.")
    ood_score: float | None = Field(default=None, description=_OOD_SCORE, examples=[-9.7])
    is_digit: bool | None = Field(default=None, description=_IS_DIGIT, examples=[True])
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


class CompressRequest(_Request):
    """Images to compress."""

    images: Images
    scale: PixelScaleField

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": _ONE_DIGIT, "scale": "unit"}]}
    )


class CompressResponse(BaseModel):
    """One code per image: base64 of `0x01 || encoder version (uint16 BE) || latent bytes`."""

    model: ModelRef = Field(description="The encoder that made the codes.")
    format: int = Field(1, description="The code format byte.")
    bytes_per_image: int = Field(description="Length of each code in bytes, header included.")
    codes: list[str] = Field(description="Standard base64, one per image.")


class DecompressRequest(_Request):
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


EnergyMode = Annotated[
    Literal["model", "exact", "auto"],
    Field(
        description="Who answers. 'model' (the default): the model answers every item, and an "
        "item outside its training domain says so (`in_domain` false, `domain_score` > 1, "
        "`domain_reason_text`). 'exact': the exact solver answers every item (it needs the "
        "potentials). 'auto': the model inside its domain when its `energy_std` is at most "
        "MLDM_ENERGY_AUTO_MAX_STD (1.6 mHa by default), the exact solver for the rest; "
        "`answered_by` says which one answered each item.",
        examples=["auto"],
    ),
]


class PotentialEnergyRequest(_Request):
    """Potentials V(x) in Hartree on the grid."""

    potentials: GridArrays
    include_exact: bool = Field(
        False, description="Also solve exactly and return the exact energy and the error."
    )
    mode: EnergyMode = "model"

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"potentials": _POTENTIAL, "include_exact": True, "mode": "auto"}]
        }
    )


class DensityEnergyRequest(_Request):
    """Densities n(x) in 1/bohr on the grid, each with sum(n) * dx = 1."""

    densities: GridArrays
    potentials: GridArrays | None = Field(
        None,
        description="Optional: the potential of each density (Hartree). A constant added to V "
        "changes E but not n, so without V only the kinetic energy T[n] is a function of n; with "
        "V the answer is E = T[n] + sum(n V) dx (mode 'model') or the exact solver's (modes "
        "'exact', 'auto'), and the exact energy and the error are returned too.",
    )
    mode: EnergyMode = "model"


_PER_ITEM = "One per item, in request order."


class EnergyResponse(BaseModel):
    """Energies in Hartree, in request order, each with who answered it and the model's domain
    verdict (whoever answered)."""

    model: ModelRef
    grid: Grid = Field(default_factory=Grid)
    unit: Literal["hartree"] = "hartree"
    mode: Literal["model", "exact", "auto"] = Field(
        "model", description="The mode of the request.", examples=["auto"]
    )
    energies: list[float] = Field(
        description="The ground-state energy of each item, Hartree, from whoever `answered_by` "
        "names. From a density without its potential (model v2): T[n] + the training mean of "
        "sum(n V) dx, uncertain by at least `offset_std`.",
        examples=[[0.1574]],
    )
    answered_by: list[Literal["model", "exact solver"]] = Field(
        description=f"Who answered each item. {_PER_ITEM}", examples=[["exact solver"]]
    )
    energy_std: list[float | None] = Field(
        description="Calibrated 1-sigma uncertainty of each energy, Hartree: 0 when the exact "
        "solver answered, null when the model version gives none (v1). The 95% interval is "
        "`energy_interval_95`.",
        examples=[[0.0]],
    )
    energy_interval_95: list[list[float] | None] = Field(
        description="[low, high] = energy -+ 1.96 energy_std, Hartree; null without energy_std.",
        examples=[[[0.1574, 0.1574]]],
    )
    in_domain: list[bool] = Field(
        description="Whether the input lies in the model's training domain (false also when "
        "this model version cannot tell: then `domain_score` is null).",
        examples=[[False]],
    )
    domain_score: list[float | None] = Field(
        description="Distance from the training domain: <= 1 inside, > 1 outside (1 = the "
        "calibrated edge); null when the model version has no check for this input.",
        examples=[[3.2]],
    )
    domain_reason: list[int] | None = Field(
        None,
        description="Reason code of the model version's card (`domain.reason_codes`): 0 = in "
        "the domain, k = criterion k. Only from model versions that output it (v2).",
        examples=[[1]],
    )
    domain_reason_text: list[str] = Field(
        description="The domain verdict in words, from the model card.",
        examples=[
            [
                "outside the training domain: its shape is far from the training inputs "
                "(PCA Mahalanobis distance) (score 3.2 > 1)"
            ]
        ],
    )
    exact_energies: list[float] | None = Field(None, description="Exact energies, Hartree.")
    errors: list[float] | None = Field(None, description="Answer - exact, Hartree.")
    kinetic_energy: list[float] | None = Field(
        None,
        description="Density models v2: T[n] = E - sum(n V) dx, Hartree, the part of the energy "
        "that is a function of the density alone (offset-free).",
        examples=[[0.079]],
    )
    kinetic_energy_std: list[float] | None = Field(
        None, description="Density models v2: calibrated 1-sigma of `kinetic_energy`, Hartree."
    )
    offset_std: list[float] | None = Field(
        None,
        description="Density models v2: the irreducible uncertainty of E from n alone, "
        "Hartree: the spread of sum(n V) dx over the training data (a constant added to V "
        "changes E, not n). Included in `energy_std` unless the potentials are given.",
        examples=[[0.2]],
    )


class ExactRequest(_Request):
    """Potentials V(x) in Hartree on the grid."""

    potentials: GridArrays

    model_config = ConfigDict(json_schema_extra={"examples": [{"potentials": _POTENTIAL}]})


class ExactResponse(BaseModel):
    """The exact ground state of each potential from the project's solver."""

    grid: Grid = Field(default_factory=Grid)
    unit: Literal["hartree"] = "hartree"
    energies: list[float] = Field(description="Ground-state energies, Hartree.")
    densities: list[list[float]] = Field(description="Ground-state densities n(x), 1/bohr.")


# Models ---------------------------------------------------------------------------------------


class ModelStatus(BaseModel):
    name: str
    ready: bool
    state: str
    versions: list[int]
    failed_versions: dict[str, str] = {}
    error: str | None = None


class ModelList(BaseModel):
    models: list[ModelStatus]


# TensorFlow Serving REST ----------------------------------------------------------------------


class TFServingPredictRequest(BaseModel):
    """TensorFlow Serving's predict body: `instances` (row format) or `inputs` (columnar)."""

    signature_name: str | None = None
    instances: Any = None
    inputs: Any = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"instances": [_POTENTIAL]}]})


# KServe V2 / Open Inference Protocol ----------------------------------------------------------


class V2RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`binary_data_size`: the tensor's bytes follow the JSON header (Triton's "
        "binary tensor data extension; `Inference-Header-Content-Length` gives its length).",
    )
    data: Any = Field(default=None, description="The values, flat or nested; absent if binary.")


class V2RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(BaseModel):
    """An Open Inference Protocol request."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2RequestInput]
    outputs: list[V2RequestOutput] | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {
                            "name": "potential",
                            "shape": [1, 64],
                            "datatype": "FP32",
                            "data": _POTENTIAL,
                        }
                    ]
                }
            ]
        }
    )


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2ResponseOutput]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] = {}


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]
