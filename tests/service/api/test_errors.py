"""Bad inputs: each gets its exact 4xx and message in the one error shape, never a 500."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.service.helpers import assert_error, images, potentials

IMAGE = images(1)[0].tolist()
V = potentials(1)[0].tolist()


def _with(value: Any, path: tuple[int, ...], item: Any) -> Any:
    import copy

    copied = copy.deepcopy(value)
    target = copied
    for i in path[:-1]:
        target = target[i]
    target[path[-1]] = item
    return copied


JSON_CASES = [
    # (url, body, status, message, field)
    (
        "/api/v1/digits/classify",
        {"images": _with(IMAGE, (3, 4), "x"), "scale": "unit"},
        422,
        "images[3][4]: expected a number, received 'x'",
        "images[3][4]",
    ),
    (
        "/api/v1/digits/classify",
        {"images": [row[:27] for row in IMAGE], "scale": "unit"},
        422,
        "images: wrong shape, received shape [28, 27]",
        "images",
    ),
    (
        "/api/v1/digits/classify",
        {"images": _with(IMAGE, (5,), IMAGE[5][:3]), "scale": "unit"},
        422,
        "images[5]: ragged array: expected a list of 28, received a list of 3",
        "images[5]",
    ),
    ("/api/v1/digits/classify", {"images": [], "scale": "unit"}, 422, "empty batch", "images"),
    (
        "/api/v1/digits/classify",
        {"images": [IMAGE] * 65, "scale": "unit"},
        422,
        "images: batch too large: at most 64 items per request, received 65 items",
        "images",
    ),
    (
        "/api/v1/digits/classify",
        {"images": IMAGE, "scale": "percent"},
        422,
        "scale: expected 'unit' or 'byte', received 'percent'",
        "scale",
    ),
    (
        "/api/v1/digits/classify",
        {"images": IMAGE, "scale": "unit", "colour": "red"},
        422,
        "colour: unknown field",
        "colour",
    ),
    ("/api/v1/digits/classify", [1, 2], 422, "body: expected a JSON object", "body"),
    (
        "/api/v1/digits/classify",
        {"images": "a picture", "scale": "unit"},
        422,
        "images: expected a (nested) list of numbers, received 'a picture'",
        "images",
    ),
    (
        "/api/v1/energy/from-potential",
        {"potentials": _with(V, (2,), 10**30)},
        422,
        "potentials[2]: value out of range: expected potential (Hartree) in [-1e+06, 1e+06]",
        "potentials[2]",
    ),
    (
        "/api/v1/energy/from-potential",
        {"potentials": _with(V, (2,), 10**400)},
        422,
        "potentials[2]: number too large, received 1000000000",
        "potentials[2]",
    ),
    (
        "/api/v1/energy/from-potential",
        {"potentials": V[:63]},
        422,
        "potentials: wrong shape, received shape [63]",
        "potentials",
    ),
    (
        "/api/v1/energy/from-potential",
        {"potentials": _with(V, (0,), None)},
        422,
        "potentials[0]: expected a number, received null",
        "potentials[0]",
    ),
    (
        "/api/v1/energy/exact",
        {"potentials": [[[V]]]},
        422,
        "potentials: wrong shape, received shape [1, 1, 1, 64]",
        "potentials",
    ),
    (
        "/api/v1/digits/decompress",
        {"codes": ["!!!"]},
        422,
        "codes[0]: not valid base64",
        "codes[0]",
    ),
    (
        "/api/v1/digits/decompress",
        {"codes": [base64.b64encode(b"\x01\x00").decode()]},
        422,
        "codes[0]: truncated code",
        "codes[0]",
    ),
    (
        "/api/v1/digits/decompress",
        {"codes": [base64.b64encode(b"\x01\x00\x07" + bytes(16)).decode()]},
        422,
        "codes[0]: unknown model version 7",
        "codes[0]",
    ),
    (
        "/api/v1/digits/decompress",
        {"codes": [base64.b64encode(b"\x05\x00\x01" + bytes(16)).decode()]},
        422,
        "codes[0]: unknown code format",
        "codes[0]",
    ),
    ("/api/v1/digits/decompress", {"codes": []}, 422, "empty batch", "codes"),
    (
        "/v2/models/energy_from_potential/infer",
        {"inputs": [{"name": "potential", "shape": [1, 64], "datatype": "FP32"}]},
        422,
        "inputs[0].data: required field missing",
        "inputs[0].data",
    ),
    (
        "/v1/models/energy_from_potential:predict",
        {"instances": "lots"},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances: expected a list of instances, received 'lots'",
        "instances",
    ),
    (
        "/v1/models/digit_decoder/versions/1:predict",
        {"instances": [{"b64": "%%%"}]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances[0].b64: not valid base64",
        "instances[0].b64",
    ),
    (
        "/v1/models/digit_decoder/versions/1:predict",
        {"instances": [[300] * 16]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances[0][0]: value out of range: expected uint8 values in [0, 255]",
        "instances[0][0]",
    ),
]


@pytest.mark.parametrize(("url", "body", "status", "message", "field"), JSON_CASES)
async def test_bad_json_input_gets_named_4xx(
    client: httpx.AsyncClient, url: str, body: Any, status: int, message: str, field: str
) -> None:
    assert_error(await client.post(url, json=body), status, message, field=field)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_non_finite_json_numbers_get_422(client: httpx.AsyncClient, token: str) -> None:
    content = '{"potentials": [' + ", ".join(["0.0"] * 7 + [token] + ["0.0"] * 56) + "]}"
    response = await client.post(
        "/api/v1/energy/from-potential",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 422, "potentials[7]: expected a finite number", "potentials[7]")


async def test_malformed_json_gets_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/digits/classify",
        content=b'{"images": [1, 2',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "body is not valid JSON", field="body")


async def test_deeply_nested_json_gets_4xx(client: httpx.AsyncClient) -> None:
    content = '{"potentials": ' + "[" * 5000 + "]" * 5000 + "}"
    response = await client.post(
        "/api/v1/energy/from-potential",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "body is not valid JSON: recursion limit exceeded")


async def test_empty_body_gets_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/energy/exact", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "body is not valid JSON")


async def test_wrong_content_type_gets_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/energy/exact", content=b"1,2,3", headers={"content-type": "text/csv"}
    )
    body = assert_error(response, 415, "content type 'text/csv' is not accepted here")
    assert body["expected"] == "application/json | application/x-npy"


async def test_body_over_limit_gets_413_from_declared_length(client: httpx.AsyncClient) -> None:
    content = b"[" + b"0," * (1024 * 1024) + b"0]"
    response = await client.post(
        "/api/v1/energy/exact", content=content, headers={"content-type": "application/json"}
    )
    body = assert_error(response, 413, "request body too large: limit 2097152 bytes")
    assert body["received"] == f"{len(content)} bytes"


async def test_streamed_body_over_limit_gets_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b" " * 65536

    response = await client.post(
        "/api/v1/energy/exact", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "request body too large: limit 2097152 bytes, received more")


async def test_unknown_route_and_method_get_404_and_405(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nothing"), 404, "no route GET /api/v1/nothing")
    assert_error(await client.get("/api/v1/energy/exact"), 405, "method GET not allowed")


async def test_unknown_model_version_gets_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/energy_from_potential/versions/4/infer", json={"inputs": []}
    )
    assert_error(response, 404, "model 'energy_from_potential' has no version 4", field="version")
