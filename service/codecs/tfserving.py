"""TensorFlow Serving's REST bodies (https://www.tensorflow.org/tfx/serving/api_rest): predict
requests in the row (`instances`) and columnar (`inputs`) formats with `{"b64": ...}` for bytes,
their answers, and the model status and metadata documents.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.codecs import dtypes
from service.codecs.b64 import b64decode
from service.errors import InvalidInput, describe
from service.registry import SIGNATURE_NAME, ModelEntry, ModelVersion, TensorSpec
from service.schemas import TFServingPredictRequest
from service.types import InferenceRequest

PREDICT_METHOD = "tensorflow/serving/predict"


def _b64_tensors(value: Any, field: str) -> Any:
    """`{"b64": ...}` objects (anywhere in a list) as uint8 arrays; everything else unchanged."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return np.frombuffer(b64decode(value["b64"], field + ".b64"), dtype=np.uint8)
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


def decode_predict(
    body: TFServingPredictRequest, model: ModelVersion
) -> tuple[InferenceRequest, bool]:
    """The data plane's request of a predict body, and whether it used the row format."""
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
    return InferenceRequest(model.name, inputs, model.version, field=field), row


def encode_predict(outputs: dict[str, np.ndarray], row: bool) -> dict[str, Any]:
    """`{"predictions": ...}` (row) or `{"outputs": ...}` (columnar), as TF Serving answers."""
    if row:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        count = next(iter(outputs.values())).shape[0]
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(count)]}
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values()))}
    return {"outputs": outputs}


def _version_status(version: int, state: str, error: str = "") -> dict[str, Any]:
    code = "OK" if not error else "UNKNOWN"
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": error},
    }


def status(entry: ModelEntry, only: int | None = None) -> dict[str, Any]:
    """GetModelStatus: the state of every version (or of `only`)."""
    statuses = [_version_status(v, "AVAILABLE") for v in sorted(entry.versions)]
    statuses += [_version_status(v, "END", e) for v, e in sorted(entry.failed.items())]
    if only is not None:
        statuses = [s for s in statuses if s["version"] == str(only)]
    if not statuses:
        statuses = [_version_status(0, entry.state.value, entry.status_message())]
    return {"model_version_status": statuses}


def _tensor_info(spec: TensorSpec, prefix: str) -> dict[str, Any]:
    dtype = dtypes.of(spec.dtype).tf
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        },
        "name": f"{prefix}_{spec.name}:0",
    }


def metadata(model: ModelVersion) -> dict[str, Any]:
    """GetModelMetadata, plus the model card (`metrics.json`, MODEL_CARD.md)."""
    signature = {
        "inputs": {k: _tensor_info(s, "serving_default") for k, s in model.inputs.items()},
        "outputs": {
            k: _tensor_info(s, "StatefulPartitionedCall") for k, s in model.outputs.items()
        },
        "method_name": PREDICT_METHOD,
    }
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE_NAME: signature}}},
        "model_card": {"metrics": model.card, "markdown": model.card_markdown},
    }


def wrong_method(method: str) -> InvalidInput:
    """TF Serving's answer to :classify or :regress on a predict signature."""
    kind = {"classify": "classification", "regress": "regression"}[method]
    message = (
        f"Expected {kind} signature method_name to be tensorflow/serving/{method}. "
        f"Was: {PREDICT_METHOD}"
    )
    return InvalidInput(
        message,
        field="signature_name",
        expected=f"a signature with method_name tensorflow/serving/{method}",
        received=f"{SIGNATURE_NAME!r} ({PREDICT_METHOD})",
    )
