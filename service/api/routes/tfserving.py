"""TensorFlow Serving's REST API, so that existing TF Serving clients work unchanged.

https://www.tensorflow.org/tfx/serving/api_rest: model status, metadata (here with the model
card added), and predict in the row (`instances`) and columnar (`inputs`) formats, with
`{"b64": ...}` for bytes; errors are `{"error": ...}` as TF Serving writes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service import codec
from service.api.body import json_body, read_json
from service.api.deps import RegistryDep, ServiceDep, require_api_key
from service.api.responses import JSONBody
from service.api.routes.tasks import ERRORS
from service.errors import InvalidInput, NotFound, describe
from service.registry import SIGNATURE_NAME, ModelEntry, ModelRegistry, ModelVersion, TensorSpec
from service.schemas import TFServingPredictRequest

router = APIRouter(
    prefix="/v1/models",
    tags=["TensorFlow Serving REST"],
    responses=ERRORS,
    dependencies=[Depends(require_api_key)],
)

_TF_DTYPES = {
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "bool": "DT_BOOL",
}


def parse_version(text: str) -> int:
    """A version path segment as a positive integer; anything else is a 404."""
    # ASCII digits only: str.isdigit() accepts '²', which int() then refuses (a 500).
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise NotFound(
            f"version must be a positive integer, received {text!r}",
            field="version",
            expected="a positive integer",
            received=repr(text),
        )
    return int(text)


def _version_status(version: int, state: str, error: str = "") -> dict[str, Any]:
    code = "OK" if not error else "UNKNOWN"
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": error},
    }


def _status(entry: ModelEntry, only: int | None = None) -> dict[str, Any]:
    statuses = [_version_status(v, "AVAILABLE") for v in sorted(entry.versions)]
    statuses += [_version_status(v, "END", e) for v, e in sorted(entry.failed.items())]
    if only is not None:
        statuses = [s for s in statuses if s["version"] == str(only)]
    if not statuses:
        statuses = [_version_status(0, entry.state.value, entry.status_message())]
    return {"model_version_status": statuses}


def _tensor_info(spec: TensorSpec, prefix: str) -> dict[str, Any]:
    return {
        "dtype": _TF_DTYPES.get(spec.dtype.name, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        },
        "name": f"{prefix}_{spec.name}:0",
    }


def metadata(model: ModelVersion) -> dict[str, Any]:
    """TF Serving's GetModelMetadata answer, plus the model card (`metrics.json`, MODEL_CARD.md)."""
    signature = {
        "inputs": {k: _tensor_info(s, "serving_default") for k, s in model.inputs.items()},
        "outputs": {
            k: _tensor_info(s, "StatefulPartitionedCall") for k, s in model.outputs.items()
        },
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE_NAME: signature}}},
        "model_card": {"metrics": model.card, "markdown": model.card_markdown},
    }


def _b64_tensors(value: Any, field: str) -> Any:
    """`{"b64": ...}` objects (anywhere in a list) as uint8 arrays; everything else unchanged."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return np.frombuffer(codec.b64decode(value["b64"], field + ".b64"), dtype=np.uint8)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        decoded = [_b64_tensors(item, f"{field}[{i}]") for i, item in enumerate(value)]
        if all(isinstance(item, np.ndarray) for item in decoded):
            sizes = {item.size for item in decoded}
            if len(sizes) > 1:
                raise InvalidInput.for_field(
                    field, "b64 values of equal length", f"lengths {sorted(sizes)}"
                )
            return np.stack(decoded)
        return decoded
    return value


def _named_inputs(
    body: TFServingPredictRequest, model: ModelVersion
) -> tuple[dict[str, Any], bool]:
    """The request's inputs by name, and whether it used the row format."""
    if body.signature_name not in (None, "", SIGNATURE_NAME):
        raise InvalidInput.for_field(
            "signature_name",
            repr(SIGNATURE_NAME),
            repr(body.signature_name),
            what=f"serving signature name {body.signature_name!r} not found",
        )
    if (body.instances is None) == (body.inputs is None):
        raise InvalidInput(
            "exactly one of 'instances' (row format) or 'inputs' (columnar format) is required",
            field="instances",
            expected="'instances' or 'inputs', not both",
            received="both" if body.instances is not None else "neither",
        )
    names = list(model.inputs)
    if body.instances is not None:
        instances = body.instances
        if not isinstance(instances, list):
            raise InvalidInput.for_field("instances", "a list of instances", describe(instances))
        if instances and isinstance(instances[0], dict) and set(instances[0]) != {"b64"}:
            columns: dict[str, list[Any]] = {}
            for i, instance in enumerate(instances):
                if not isinstance(instance, dict) or set(instance) != set(names):
                    raise InvalidInput.for_field(
                        f"instances[{i}]", f"an object with keys {names}", describe(instance)
                    )
                for key, value in instance.items():
                    columns.setdefault(key, []).append(value)
            return {k: _b64_tensors(v, f"instances.{k}") for k, v in columns.items()}, True
        if len(names) != 1:
            raise InvalidInput.for_field("instances", f"objects with keys {names}", "bare values")
        return {names[0]: _b64_tensors(instances, "instances")}, True
    inputs = body.inputs
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        return {k: _b64_tensors(v, f"inputs.{k}") for k, v in inputs.items()}, False
    if len(names) != 1:
        raise InvalidInput.for_field("inputs", f"an object with keys {names}", describe(inputs))
    return {names[0]: _b64_tensors(inputs, "inputs")}, False


async def _predict(
    name: str, version: int | None, request: Request, service: ServiceDep, registry: ModelRegistry
) -> Response:
    model = registry.get(name, version)
    body = await read_json(request, TFServingPredictRequest)
    inputs, row = _named_inputs(body, model)
    field = "instances" if row else "inputs"
    for key, value in inputs.items():
        spec = model.inputs.get(key)
        # b64 carries bytes: for a float input its bytes would silently become numbers 0-255.
        if isinstance(value, np.ndarray) and spec is not None and spec.dtype != np.uint8:
            raise InvalidInput.for_field(
                field,
                f"numbers for the {spec.dtype} input {key!r}",
                "b64 bytes",
                what="b64 values are accepted only for uint8 inputs",
            )
    model, outputs = await service.predict(name, model.version, inputs, field)
    if row:
        if len(outputs) == 1:
            return JSONBody({"predictions": next(iter(outputs.values()))})
        count = next(iter(outputs.values())).shape[0]
        rows = [{k: v[i] for k, v in outputs.items()} for i in range(count)]
        return JSONBody({"predictions": rows})
    if len(outputs) == 1:
        return JSONBody({"outputs": next(iter(outputs.values()))})
    return JSONBody({"outputs": outputs})


# Declared before the GET routes: `/{name}` also matches `x:predict`, and Starlette answers a
# wrong method (OPTIONS, PUT) with the Allow header of the first route whose path matches.
_PREDICT_DOC = json_body(TFServingPredictRequest)


@router.post("/{name}:predict", openapi_extra=_PREDICT_DOC)
async def predict(
    name: str, request: Request, service: ServiceDep, registry: RegistryDep
) -> Response:
    """TF Serving predict on the latest version (`instances` or `inputs`)."""
    return await _predict(name, None, request, service, registry)


@router.post("/{name}/versions/{version}:predict", openapi_extra=_PREDICT_DOC)
async def predict_version(
    name: str, version: str, request: Request, service: ServiceDep, registry: RegistryDep
) -> Response:
    """TF Serving predict on one version."""
    return await _predict(name, parse_version(version), request, service, registry)


@router.get("/{name}")
async def model_status(name: str, registry: RegistryDep) -> Response:
    """TF Serving model status: the state of every version."""
    return JSONBody(_status(registry.entry(name)))


@router.get("/{name}/versions/{version}")
async def model_version_status(name: str, version: str, registry: RegistryDep) -> Response:
    """TF Serving model status of one version."""
    number = parse_version(version)
    entry = registry.entry(name)
    if number not in entry.versions and number not in entry.failed:
        registry.get(name, number)  # raises the 404 (or 503 while loading)
    return JSONBody(_status(entry, only=number))


@router.get("/{name}/metadata")
async def model_metadata(name: str, registry: RegistryDep) -> Response:
    """TF Serving model metadata (signature) and the model card of the latest version."""
    return JSONBody(metadata(registry.get(name)))


@router.get("/{name}/versions/{version}/metadata")
async def model_version_metadata(name: str, version: str, registry: RegistryDep) -> Response:
    """TF Serving model metadata and model card of one version."""
    return JSONBody(metadata(registry.get(name, parse_version(version))))
