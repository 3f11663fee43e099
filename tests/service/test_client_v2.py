"""The client's V2 binary tensor data, checked against tritonclient (NVIDIA's own HTTP client) as
the oracle, and its V2 `infer` against the real app over ASGI (JSON both ways)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI

from service.client import AsyncClient, InvalidRequest, _v2
from tests.service.helpers import images

tritonclient_http = pytest.importorskip("tritonclient.http")

TENSORS: dict[str, np.ndarray] = {
    "images": np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32),
    "potential": np.linspace(-1, 1, 128).reshape(2, 64),  # float64
    "pixels": np.arange(2 * 3, dtype=np.uint8).reshape(2, 3),
    "counts": np.array([[-5, 70000]], dtype=np.int32),
    "halves": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    "flags": np.array([True, False, True]),
    "names": np.array([b"digit", b"", "\u00e9nergie".encode()], dtype=np.object_),
}


def _triton_inputs(binary: bool) -> list[Any]:
    inputs = []
    for name, array in TENSORS.items():
        tensor = tritonclient_http.InferInput(name, list(array.shape), _v2.datatype_of(array))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _split(body: bytes, json_size: int | None) -> tuple[dict[str, Any], bytes]:
    size = len(body) if json_size is None else json_size
    return orjson.loads(body[:size]), body[size:]


def test_binary_request_matches_tritonclient() -> None:
    ours, headers = _v2.encode_request(TENSORS, None, True, True)
    theirs, json_size = tritonclient_http.InferenceServerClient.generate_request_body(
        _triton_inputs(binary=True)
    )
    assert headers["Content-Type"] == "application/octet-stream"
    our_header, our_blob = _split(ours, int(headers[_v2.HEADER_LENGTH]))
    their_header, their_blob = _split(theirs, json_size)
    assert our_header == their_header
    assert our_blob == their_blob


def test_json_request_matches_tritonclient_for_numbers() -> None:
    numeric = {k: v for k, v in TENSORS.items() if k not in ("names", "halves")}
    ours, headers = _v2.encode_request(numeric, ["probabilities"], False, False)
    output = tritonclient_http.InferRequestedOutput("probabilities", binary_data=False)
    inputs = [t for t in _triton_inputs(binary=False) if t.name() in numeric]
    theirs, json_size = tritonclient_http.InferenceServerClient.generate_request_body(
        inputs, outputs=[output]
    )
    assert _v2.HEADER_LENGTH not in headers and json_size is None
    assert orjson.loads(ours) == orjson.loads(theirs)


def _response_body() -> tuple[bytes, int]:
    """A binary response as the extension lays it out: every output binary except one in JSON."""
    outputs = []
    blobs = []
    for name, array in TENSORS.items():
        blob = _v2.tensor_bytes(array)
        outputs.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": _v2.datatype_of(array),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    outputs.append({"name": "json_one", "shape": [2], "datatype": "INT64", "data": [7, -7]})
    header = orjson.dumps({"model_name": "m", "model_version": "1", "outputs": outputs})
    return header + b"".join(blobs), len(header)


def test_binary_response_decodes_like_tritonclient() -> None:
    body, json_size = _response_body()
    theirs = tritonclient_http.InferenceServerClient.parse_response_body(
        body, header_length=json_size
    )
    header, ours = _v2.decode_response(body, str(json_size))
    assert header["model_name"] == "m"
    for name in [*TENSORS, "json_one"]:
        expected = theirs.as_numpy(name)
        assert ours[name].shape == expected.shape
        assert ours[name].dtype == expected.dtype or expected.dtype == np.object_
        np.testing.assert_array_equal(ours[name], expected)
    np.testing.assert_array_equal(ours["names"], TENSORS["names"])


def test_truncated_binary_response_is_an_error() -> None:
    body, json_size = _response_body()
    with pytest.raises(ValueError, match="binary bytes announced"):
        _v2.decode_response(body[:-3], str(json_size))
    with pytest.raises(ValueError, match="outside"):
        _v2.decode_response(body, str(len(body) + 1))


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        AsyncClient("http://test", transport=transport, binary=False) as client,
    ):
        yield client


async def test_infer_json_returns_the_models_outputs(api: AsyncClient) -> None:
    pixels = (images(3, seed=2) * 255).astype(np.uint8)
    classified = await api.classify(pixels)
    batch = (pixels / np.float32(255))[..., np.newaxis].astype(np.float32)
    answer = await api.infer("digit_classifier", {"images": batch})
    assert answer.model_name == "digit_classifier"
    probabilities = answer.outputs["probabilities"]
    assert probabilities.shape == (3, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, classified.probabilities, atol=1e-5)


async def test_infer_with_a_wrong_shape_raises_the_servers_422(api: AsyncClient) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await api.infer("energy_from_potential", {"potential": np.zeros((2, 63), np.float32)})
    assert caught.value.status_code == 422 and "[2, 63]" in str(caught.value)


async def test_infer_binary_matches_json(api: AsyncClient) -> None:
    pixels = (images(40, seed=4) * 255).astype(np.uint8)
    batch = (pixels / np.float32(255))[..., np.newaxis].astype(np.float32)
    as_json = await api.infer("digit_classifier", {"images": batch}, binary=False)
    as_binary = await api.infer("digit_classifier", {"images": batch}, binary=True)
    assert set(as_binary.outputs) == set(as_json.outputs)
    for name, array in as_json.outputs.items():
        assert as_binary.outputs[name].dtype == array.dtype
        np.testing.assert_allclose(as_binary.outputs[name], array, rtol=1e-6)
