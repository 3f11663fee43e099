"""The V2 codec without HTTP: binary tensor data both ways, BYTES, errors, config, stats."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from service.codecs import v2, v2_documents
from service.errors import InvalidInput, MalformedRequest
from service.metrics import InferenceStats, Phases
from service.registry import ModelRegistry
from service.schemas import V2InferenceRequest
from service.types import InferenceResponse


def _parse(header: dict[str, object]) -> V2InferenceRequest:
    return V2InferenceRequest.model_validate_json(json.dumps(header))


def test_split_body_uses_the_header_length() -> None:
    header, binary = v2.split_body(b'{"a": 1}\x01\x02', "8")
    assert header == b'{"a": 1}' and bytes(binary) == b"\x01\x02"
    with pytest.raises(MalformedRequest, match="Inference-Header-Content-Length must be"):
        v2.split_body(b"{}", "3")
    with pytest.raises(MalformedRequest):
        v2.split_body(b"{}", "-1")


def test_decode_request_reads_binary_little_endian(tiny_registry: ModelRegistry) -> None:
    model = tiny_registry.get("digit_decoder", 1)
    codes = np.arange(32, dtype=np.uint8).reshape(2, 16)
    body = _parse(
        {
            "id": "r",
            "inputs": [
                {
                    "name": "code",
                    "shape": [2, 16],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": 32},
                }
            ],
        }
    )
    request = v2.decode_request(body, memoryview(codes.tobytes()), model)
    np.testing.assert_array_equal(request.inputs["code"], codes)
    assert (request.id, request.fields, request.flat_index) == (
        "r",
        {"code": "inputs[0].data"},
        True,
    )
    with pytest.raises(InvalidInput, match="binary tensor data of the wrong length"):
        v2.decode_request(body, memoryview(codes.tobytes() + b"\x00"), model)


def test_decode_request_refuses_binary_of_the_wrong_size(tiny_registry: ModelRegistry) -> None:
    model = tiny_registry.get("energy_from_potential")
    tensor = {"name": "potential", "shape": [1, 64], "datatype": "FP32"}
    body = _parse({"inputs": [{**tensor, "parameters": {"binary_data_size": 8}}]})
    with pytest.raises(InvalidInput) as info:
        v2.decode_request(body, memoryview(b"\x00" * 8), model)
    assert info.value.field == "inputs[0].parameters.binary_data_size"
    assert info.value.expected == "256 bytes for FP32 shape [1, 64]"


def test_bytes_tensors_round_trip_with_length_prefixes() -> None:
    array = np.array([b"ab", b"", b"\x00xyz"], dtype=object)
    raw = v2.encode_bytes(array)
    assert raw[:4] == struct.pack("<I", 2) and len(raw) == 3 * 4 + 6
    assert v2.decode_bytes(raw, "x").tolist() == array.tolist()
    with pytest.raises(InvalidInput, match="7 bytes for element 0"):
        v2.decode_bytes(struct.pack("<I", 7) + b"abc", "x")


def test_encode_response_binary_per_output_overrides_request_default(
    tiny_registry: ModelRegistry,
) -> None:
    model = tiny_registry.get("energy_from_potential")
    energy = np.array([1.5, -2.0], dtype=np.float32)
    response = InferenceResponse(model, {"energy": energy}, ("energy",), "id-1")
    body = _parse(
        {
            "inputs": [],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "energy", "parameters": {"binary_data": False}}],
        }
    )
    content, headers = v2.encode_response(response, body)
    assert headers is None and json.loads(content)["outputs"][0]["data"] == [1.5, -2.0]
    content, headers = v2.encode_response(
        response, _parse({"inputs": [], "parameters": {"binary_data_output": True}})
    )
    assert headers is not None
    length = int(headers[v2.HEADER_LENGTH])
    header = json.loads(content[:length])
    assert header["id"] == "id-1" and header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(np.frombuffer(content[length:], "<f4"), energy)


def test_bool_outputs_are_one_byte_each(tiny_registry: ModelRegistry) -> None:
    model = tiny_registry.get("energy_from_potential")
    flags = np.array([True, False, True])
    response = InferenceResponse(model, {"in_domain": flags}, ("in_domain",))
    content, headers = v2.encode_response(
        response, _parse({"inputs": [], "parameters": {"binary_data_output": True}})
    )
    assert headers is not None
    length = int(headers[v2.HEADER_LENGTH])
    assert json.loads(content[:length])["outputs"][0]["datatype"] == "BOOL"
    assert content[length:] == b"\x01\x00\x01"


def test_model_config_and_stats_documents(tiny_registry: ModelRegistry) -> None:
    model = tiny_registry.get("energy_from_potential")
    config = v2_documents.model_config(model, max_batch_size=256, batching=False, threads=2)
    assert config["input"][0] == {
        "name": "potential",
        "data_type": "TYPE_FP32",
        "format": "FORMAT_NONE",
        "dims": [64],
        "is_shape_tensor": False,
        "allow_ragged_batch": False,
        "optional": False,
    }
    assert config["output"][0]["dims"] == [] and "dynamic_batching" not in config
    stats = InferenceStats()
    stats.record_execution("energy_from_potential", 1, 4, 0.001, 0.002)
    phases = Phases(0.001, 0.0005, 0.002, 0.0005)
    stats.record_request("energy_from_potential", 1, 4, 0.004, ok=True, phases=phases)
    entry = v2_documents.model_stats(stats.of("energy_from_potential", 1))
    assert entry["inference_count"] == 4 and entry["execution_count"] == 1
    assert entry["inference_stats"]["success"] == {"count": 1, "ns": 4_000_000}
    assert entry["inference_stats"]["queue"] == {"count": 1, "ns": 1_000_000}
    assert entry["inference_stats"]["compute_input"] == {"count": 1, "ns": 500_000}
    assert entry["inference_stats"]["compute_output"] == {"count": 1, "ns": 500_000}
    assert entry["batch_stats"][0]["batch_size"] == 4
