"""The Open Inference Protocol (KServe V2) over REST: JSON tensors and Triton's binary tensor
data extension, both ways; the model configuration and statistics documents Triton serves.

Binary tensor data (https://github.com/triton-inference-server/server/blob/main/docs/protocol/
extension_binary_data.md): the body is the JSON header, whose length is the
`Inference-Header-Content-Length` header, followed by the raw tensors in the order of the inputs
that carry `parameters.binary_data_size`: little-endian, row major, BOOL one byte per element,
BYTES each element a 4-byte little-endian length then its bytes. Outputs are answered in binary
when their `parameters.binary_data` is true or, unset, when the request's
`parameters.binary_data_output` is.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from service.arrays import to_numeric_array
from service.codecs import dtypes
from service.errors import InvalidInput, MalformedRequest, describe
from service.metrics import ModelStats
from service.registry import ModelVersion
from service.schemas import V2InferenceRequest
from service.types import InferenceRequest, InferenceResponse

HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
#: What `GET /v2` announces (Triton's extension names).
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")
_LENGTH = struct.Struct("<I")


def dumps(content: Any) -> bytes:
    """JSON with numpy arrays serialised natively (as the routes' JSONBody does)."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tensor data) of a request body; all JSON without the header."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > len(body):
        raise MalformedRequest(
            f"{HEADER_LENGTH} must be the byte length of the JSON header (0-{len(body)}), "
            f"received {describe(header_length)}",
            field=HEADER_LENGTH,
            expected=f"an integer in [0, {len(body)}]",
            received=describe(header_length),
        )
    length = int(text)
    return body[:length], memoryview(body)[length:]


def decode_bytes(data: memoryview | bytes, field: str) -> np.ndarray:
    """A BYTES tensor's elements (each a 4-byte little-endian length, then its bytes)."""
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInput.for_field(
                field, "a 4-byte length before each element", f"{len(data) - offset} bytes"
            )
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + size > len(data):
            raise InvalidInput.for_field(
                field, f"{size} bytes for element {len(items)}", f"{len(data) - offset} bytes"
            )
        items.append(bytes(data[offset : offset + size]))
        offset += size
    return np.array(items, dtype=object)


def encode_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor as the binary extension writes it."""
    parts = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(raw)) + raw)
    return b"".join(parts)


def _binary_tensor(data: memoryview, datatype: str, shape: list[int], field: str) -> np.ndarray:
    if datatype == "BYTES":
        array = decode_bytes(data, field)
    else:
        dtype = dtypes.numpy_of_v2(datatype)
        assert dtype is not None  # the datatype was checked against the signature
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise InvalidInput.for_field(
                f"{field}.parameters.binary_data_size",
                f"{expected} bytes for {datatype} shape {shape}",
                f"{len(data)} bytes",
                what="binary data does not match shape",
            )
        array = np.frombuffer(data, dtype=dtype.newbyteorder("<"))
    if array.size != math.prod(shape):
        raise InvalidInput.for_field(
            field, f"{math.prod(shape)} elements for shape {shape}", f"{array.size} elements"
        )
    return array.reshape(shape)


def decode_request(
    body: V2InferenceRequest, binary: memoryview, model: ModelVersion
) -> InferenceRequest:
    """The data plane's request from a parsed V2 header and its binary tensor data."""
    inputs: dict[str, Any] = {}
    fields: dict[str, str] = {}
    offset = 0
    for i, item in enumerate(body.inputs):
        field = f"inputs[{i}]"
        spec = model.inputs.get(item.name)
        if spec is None:
            raise InvalidInput.for_field(
                f"{field}.name",
                f"one of {sorted(model.inputs)}",
                repr(item.name),
                what="unknown input name",
            )
        if item.name in inputs:
            raise InvalidInput.for_field("inputs", "each input once", f"{item.name!r} twice")
        expected_type = dtypes.v2_name(spec.dtype)
        if item.datatype != expected_type:
            raise InvalidInput.for_field(f"{field}.datatype", expected_type, repr(item.datatype))
        if any(d < 0 for d in item.shape):
            raise InvalidInput.for_field(f"{field}.shape", "non-negative sizes", str(item.shape))
        size = (item.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput.for_field(
                    f"{field}.parameters.binary_data_size", "a byte count", describe(size)
                )
            if item.data is not None:
                raise InvalidInput.for_field(
                    f"{field}.data", "no data (it is in the binary part)", "data too"
                )
            if offset + size > len(binary):
                raise InvalidInput.for_field(
                    f"{field}.parameters.binary_data_size",
                    f"at most the {len(binary) - offset} bytes of binary data left",
                    f"{size} bytes",
                    what="binary data shorter than declared",
                )
            array = _binary_tensor(binary[offset : offset + size], item.datatype, item.shape, field)
            offset += size
        else:
            if item.data is None:  # neither JSON data nor binary: the field is missing
                raise InvalidInput.for_field(
                    f"{field}.data", "a value", "nothing", "required field missing"
                )
            array = to_numeric_array(item.data, f"{field}.data")
            count = math.prod(item.shape)  # exact: np.prod wraps around int64 for huge shapes
            if array.size != count:
                raise InvalidInput.for_field(
                    f"{field}.data",
                    f"{count} values for shape {item.shape}",
                    f"{array.size} values",
                    what="data does not match shape",
                )
            array = array.reshape(item.shape)
        inputs[item.name] = array
        fields[item.name] = f"{field}.data"
    if offset != len(binary):
        raise InvalidInput.for_field(
            "body",
            f"{offset} bytes of binary tensor data (the sum of binary_data_size)",
            f"{len(binary)} bytes",
            what="binary tensor data of the wrong length",
        )
    outputs = None
    if body.outputs:
        for i, output in enumerate(body.outputs):
            if "classification" in (output.parameters or {}):
                raise InvalidInput.for_field(
                    f"outputs[{i}].parameters.classification",
                    "no classification parameter (the classification extension is not served)",
                    describe(output.parameters),
                )
        outputs = [o.name for o in body.outputs]
    return InferenceRequest(
        model.name,
        inputs,
        model.version,
        outputs=outputs,
        id=body.id,
        fields=fields,
        flat_index=True,
    )


def _binary_wanted(body: V2InferenceRequest) -> dict[str, bool]:
    default = bool((body.parameters or {}).get("binary_data_output", False))
    wanted = {}
    for output in body.outputs or ():
        flag = (output.parameters or {}).get("binary_data")
        wanted[output.name] = default if flag is None else bool(flag)
    wanted[""] = default  # outputs the request did not list
    return wanted


def encode_response(
    response: InferenceResponse, body: V2InferenceRequest
) -> tuple[bytes, dict[str, str] | None]:
    """(body, extra headers): JSON, or the JSON header and binary tensors when asked for."""
    wanted = _binary_wanted(body)
    outputs: list[dict[str, Any]] = []
    binary: list[bytes] = []
    for name in response.requested:
        array = response.outputs[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": dtypes.v2_name(array.dtype),
            "shape": list(array.shape),
        }
        if wanted.get(name, wanted[""]):
            if tensor["datatype"] == "BYTES":
                raw = encode_bytes(array)
            else:
                raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            tensor["data"] = array.reshape(-1)
        outputs.append(tensor)
    header: dict[str, Any] = {
        "model_name": response.model.name,
        "model_version": str(response.model.version),
        "outputs": outputs,
    }
    if response.id is not None:
        header["id"] = response.id
    text = dumps(header)
    if not binary:
        return text, None
    return b"".join([text, *binary]), {HEADER_LENGTH: str(len(text))}


def _tensors(specs: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "datatype": dtypes.v2_name(s.dtype),
            "shape": [-1 if d is None else d for d in s.shape],
        }
        for s in specs
    ]


def metadata(model: ModelVersion, versions: Sequence[int]) -> dict[str, Any]:
    """The model metadata document, with the model card in `parameters`."""
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "tensorflow_savedmodel",
        "inputs": _tensors(list(model.inputs.values())),
        "outputs": _tensors(list(model.outputs.values())),
        "parameters": {"model_card": model.card, "version": model.version},
    }


def model_config(
    model: ModelVersion, max_batch_size: int, batching: bool, threads: int
) -> dict[str, Any]:
    """Triton's model configuration (model_config.proto as JSON) derived from the signature.

    The batch dimension is Triton's implicit one: `max_batch_size` > 0 and `dims` without it.
    """

    def dims(shape: tuple[int | None, ...]) -> list[int]:
        return [-1 if d is None else d for d in shape[1:]]

    config: dict[str, Any] = {
        "name": model.name,
        "platform": "tensorflow_savedmodel",
        "backend": "tensorflow",
        "version_policy": {"specific": {"versions": [model.version]}},
        "max_batch_size": max_batch_size,
        "input": [
            {
                "name": s.name,
                "data_type": dtypes.of(s.dtype).triton,
                "format": "FORMAT_NONE",
                "dims": dims(s.shape),
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": False,
            }
            for s in model.inputs.values()
        ],
        "output": [
            {
                "name": s.name,
                "data_type": dtypes.of(s.dtype).triton,
                "dims": dims(s.shape),
                "label_filename": "",
                "is_shape_tensor": False,
            }
            for s in model.outputs.values()
        ],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": threads}],
        "default_model_filename": "model.savedmodel",
        "parameters": {},
        "model_transaction_policy": {"decoupled": False},
        "response_cache": {"enable": False},
    }
    if batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": 0}
    return config


def model_stats(stats: ModelStats) -> dict[str, Any]:
    """One entry of the statistics extension's `model_stats`."""
    zero = {"count": 0, "ns": 0}
    return {
        "name": stats.name,
        "version": str(stats.version),
        "last_inference": stats.last_inference,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": stats.success.to_json(),
            "fail": stats.fail.to_json(),
            # Per successful request, as Triton counts them (each count is the success count).
            "queue": stats.queue.to_json(),
            "compute_input": stats.compute_input.to_json(),
            "compute_infer": stats.compute_infer.to_json(),
            "compute_output": stats.compute_output.to_json(),
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": {"count": d.count, "ns": 0},
                "compute_infer": d.to_json(),
                "compute_output": {"count": d.count, "ns": 0},
            }
            for size, d in sorted(stats.batches.items())
        ],
        "memory_usage": [],
    }
