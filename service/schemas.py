"""Wire schemas of the JSON APIs, named by role (`<Task>Request`, `<Task>Response`).

Array fields are validated by `service.arrays` (numpy, with messages that point at the bad
element), so pydantic only documents their JSON schema here and carries the rest: literals,
flags, and unknown keys (forbidden, so a misspelt field is an error, not silently ignored).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

#: A harmonic potential on the energy models' grid, linspace(-15, 15, 64) bohr: the examples'.
EXAMPLE_POTENTIAL: Any = [
    round(0.5 * 0.1 * x * x, 4) for x in [-15.0 + i * 30 / 63 for i in range(64)]
]


def array_schema(description: str, depth: int) -> Any:
    """The JSON schema of one item (`depth` nested lists of numbers) or a batch of them."""
    schema: dict[str, Any] = {"type": "number"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return WithJsonSchema(
        {"anyOf": [schema, {"type": "array", "items": schema}], "description": description}
    )


class RequestSchema(BaseModel):
    """A request body: an unknown key is an error (a misspelt field is never ignored)."""

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

    model_config = ConfigDict(json_schema_extra={"examples": [{"instances": [EXAMPLE_POTENTIAL]}]})


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
                            "data": EXAMPLE_POTENTIAL,
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
