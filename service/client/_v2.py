"""The Open Inference Protocol (KServe V2) `infer` body, JSON or with binary tensor data.

JSON: every tensor is `{"name", "shape", "datatype", "data"}` with `data` flat, row major.
Binary (Triton's binary tensor data extension, which KServe adopted): the JSON header comes first
and each binary tensor's bytes follow it, in the order of the header's tensors, little-endian,
row major, no padding; a tensor that travels so says `"parameters": {"binary_data_size": n}` and
has no `data`, and the `Inference-Header-Content-Length` header gives the JSON header's length.
BOOL is one byte per element (0/1); BYTES is each element's length as a 4-byte little-endian
unsigned integer followed by its bytes. Outputs are asked for as binary with
`"parameters": {"binary_data": true}` per output, or `binary_data_output` for all of them.
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

#: numpy dtype <-> V2 datatype; BYTES is numpy's object or bytes arrays.
DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
DTYPES: dict[str, np.dtype[Any]] = {v2: np.dtype(name) for name, v2 in DATATYPES.items()}


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in "OSa":
        return "BYTES"
    try:
        return DATATYPES[array.dtype.name]
    except KeyError:
        raise TypeError(f"no V2 datatype for numpy dtype {array.dtype}") from None


def _as_bytes_elements(array: np.ndarray) -> list[bytes]:
    items = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes | np.bytes_):
            raise TypeError(f"a BYTES tensor holds bytes or str, got {type(item).__name__}")
        items.append(bytes(item))
    return items


def tensor_bytes(array: np.ndarray) -> bytes:
    """The binary form of one tensor: little-endian, row major, no padding."""
    if datatype_of(array) == "BYTES":
        return b"".join(
            len(item).to_bytes(4, "little") + item for item in _as_bytes_elements(array)
        )
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def tensor_from_bytes(data: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """One tensor read back from its binary form (the inverse of `tensor_bytes`)."""
    if datatype == "BYTES":
        items: list[bytes] = []
        offset = 0
        while offset < len(data):
            if offset + 4 > len(data):
                raise ValueError("truncated BYTES tensor: a length prefix is cut off")
            size = int.from_bytes(data[offset : offset + 4], "little")
            offset += 4
            if offset + size > len(data):
                raise ValueError("truncated BYTES tensor: an element is cut off")
            items.append(data[offset : offset + size])
            offset += size
        return np.array(items, dtype=np.object_).reshape(shape)
    if datatype not in DTYPES:
        raise ValueError(f"unknown V2 datatype {datatype!r}")
    dtype = DTYPES[datatype].newbyteorder("<")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{datatype} tensor of shape {list(shape)} needs {expected} bytes, got {len(data)}"
        )
    return (
        np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape(shape)
    )


def _json_data(array: np.ndarray) -> list[Any]:
    if datatype_of(array) == "BYTES":
        # JSON has no bytes: the protocol sends BYTES as strings in JSON.
        return [item.decode() for item in _as_bytes_elements(array)]
    flat: list[Any] = array.reshape(-1).tolist()
    return flat


def encode_request(
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None,
    binary_inputs: bool,
    binary_outputs: bool,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an infer request."""
    header: dict[str, Any] = {}
    if request_id is not None:
        header["id"] = request_id
    tensors = []
    blobs = []
    for name, array in inputs.items():
        tensor: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatype_of(array),
        }
        if binary_inputs:
            blob = tensor_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(array)
        tensors.append(tensor)
    header["inputs"] = tensors
    if outputs is not None:
        header["outputs"] = [
            {"name": name, "parameters": {"binary_data": binary_outputs}} for name in outputs
        ]
    elif binary_outputs:
        header["parameters"] = {"binary_data_output": True}
    json_part = orjson.dumps(header)
    if not blobs:
        return json_part, {"Content-Type": "application/json"}
    return json_part + b"".join(blobs), {
        "Content-Type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH: str(len(json_part)),
    }


def decode_response(
    body: bytes, header_length: str | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The response's JSON header and its outputs by name, binary or JSON."""
    if header_length is None:
        json_part, rest = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise ValueError(f"{HEADER_LENGTH} is not an integer: {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {length} is outside the {len(body)}-byte body")
        json_part, rest = body[:length], body[length:]
    header: dict[str, Any] = orjson.loads(json_part)
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for output in header.get("outputs", []):
        shape = [int(d) for d in output["shape"]]
        datatype = output["datatype"]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            size = int(size)
            if offset + size > len(rest):
                raise ValueError(
                    f"output {output['name']!r}: {size} binary bytes announced, "
                    f"{len(rest) - offset} left in the body"
                )
            arrays[output["name"]] = tensor_from_bytes(
                rest[offset : offset + size], datatype, shape
            )
            offset += size
        elif datatype == "BYTES":
            data = [d.encode() if isinstance(d, str) else d for d in output["data"]]
            arrays[output["name"]] = np.array(data, dtype=np.object_).reshape(shape)
        else:
            arrays[output["name"]] = np.asarray(output["data"], dtype=DTYPES[datatype]).reshape(
                shape
            )
    if offset != len(rest):
        raise ValueError(f"{len(rest) - offset} bytes after the last binary output")
    return header, arrays
