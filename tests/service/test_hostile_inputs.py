"""The catalogue of hostile inputs, part two: each gets its exact status and message, never a 5xx.

tests/service/api/test_errors.py holds the first part (task-endpoint shapes and values, NaN and
infinity in potentials, malformed, empty and deeply nested JSON, bodies over the size limit,
a few codes); this file adds what it does not cover: the same mistakes through the TF Serving and
V2 protocols, codes of every broken kind, model and version names, content types, corrupt,
truncated and decompression-bomb images, hostile .npy headers, the API key on every route, and a
scan of the service's code for deserialisation that can run code.
"""

from __future__ import annotations

import ast
import base64
import json
import resource
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.helpers import assert_error, digit_image, encode, images, potentials

SERVICE = Path(__file__).resolve().parents[2] / "service"
V = potentials(1)[0].tolist()
IMAGE = images(1)[0].tolist()
MARK = 123456.75  # a value json.dumps writes verbatim, replaced by a raw token below


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _with_token(body: Any, token: str) -> str:
    """`body` as JSON text with the number MARK replaced by `token` (NaN, Infinity, 1e400...)."""
    text = json.dumps(body)
    assert text.count(repr(MARK)) == 1
    return text.replace(repr(MARK), token)


def _v2(data: Any, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "potential", "shape": shape or [1, 64], "datatype": "FP32", "data": data}
    return {"inputs": [tensor], **extra}


V_MARKED = [*V[:5], MARK, *V[6:]]
IMAGE_MARKED = [row if r != 2 else [*row[:3], MARK, *row[4:]] for r, row in enumerate(IMAGE)]

V2 = "/v2/models/energy_from_potential/infer"
TF = "/v1/models/energy_from_potential:predict"
DECODER_V1 = "/v1/models/digit_decoder/versions/1:predict"
DECOMPRESS = "/api/v1/digits/decompress"

# (url, body: a JSON value, or str for raw JSON text, status, message, field)
CASES = [
    # Non-finite and huge numbers, through every protocol.
    pytest.param(
        "/api/v1/digits/classify",
        _with_token({"images": IMAGE_MARKED, "scale": "unit"}, "NaN"),
        422,
        "images[2][3]: expected a finite number, received nan",
        "images[2][3]",
        id="nan-in-image",
    ),
    pytest.param(
        V2,
        _with_token(_v2(V_MARKED), "Infinity"),
        422,
        "inputs[0].data[5]: expected a finite number, received inf",
        "inputs[0].data[5]",
        id="infinity-in-v2-data",
    ),
    pytest.param(
        TF,
        _with_token({"instances": [V_MARKED]}, "-Infinity"),
        400,  # TF Serving: INVALID_ARGUMENT
        "instances[0][5]: expected a finite number, received -inf",
        "instances[0][5]",
        id="minus-infinity-in-tf-instances",
    ),
    pytest.param(
        "/api/v1/digits/compress",
        _with_token({"images": IMAGE_MARKED, "scale": "unit"}, "1e400"),
        422,
        "images[2][3]: expected a finite number, received inf",
        "images[2][3]",
        id="float-overflow-in-image",
    ),
    pytest.param(
        "/api/v1/digits/classify",
        _with_token({"images": IMAGE_MARKED, "scale": "byte"}, "1" + "0" * 400),
        422,
        "images[2][3]: number too large, received 1000000",
        "images[2][3]",
        id="400-digit-integer-pixel",
    ),
    pytest.param(
        V2,
        _v2(V, [2**40, 2**40]),
        422,
        "inputs[0].data: data does not match shape, received 64 values",
        "inputs[0].data",
        id="v2-shape-whose-size-overflows-int64",
    ),
    # Strings, booleans, nulls and nesting where numbers belong.
    pytest.param(
        V2,
        _v2("abc"),
        422,
        "inputs[0].data: expected a (nested) list of numbers, received 'abc'",
        "inputs[0].data",
        id="string-as-v2-data",
    ),
    pytest.param(
        V2,
        _v2({"a": 1}),
        422,
        "inputs[0].data: expected a (nested) list of numbers, received an object with keys ['a']",
        "inputs[0].data",
        id="object-as-v2-data",
    ),
    pytest.param(
        TF,
        {"instances": [["a"] * 64]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances[0][0]: expected a number, received 'a'",
        "instances[0][0]",
        id="strings-in-tf-instances",
    ),
    # A boolean among numbers is not the number 0 or 1, on any protocol (numpy would read
    # `[true, 0.1]` as [1.0, 0.1] without a word).
    pytest.param(
        V2,
        _v2([True, *V[1:]]),
        422,
        "inputs[0].data[0]: expected a number, received True",
        "inputs[0].data[0]",
        id="boolean-among-numbers-in-v2-data",
    ),
    pytest.param(
        TF,
        {"instances": [[*V[:5], False, *V[6:]]]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances[0][5]: expected a number, received False",
        "instances[0][5]",
        id="boolean-among-numbers-in-tf-instances",
    ),
    pytest.param(
        TF,
        {"inputs": [[*V[:63], True]]},
        400,
        "inputs[0][63]: expected a number, received True",
        "inputs[0][63]",
        id="boolean-among-numbers-in-tf-columnar-inputs",
    ),
    pytest.param(
        "/api/v1/digits/classify",
        {
            "images": [
                row if r != 2 else [*row[:3], True, *row[4:]] for r, row in enumerate(IMAGE)
            ],
            "scale": "unit",
        },
        422,
        "images[2][3]: expected a number, received True",
        "images[2][3]",
        id="boolean-among-numbers-in-image",
    ),
    pytest.param(
        "/api/v1/digits/classify",
        {"images": [[[0] * 27 + [True]] * 28], "scale": "byte"},
        422,
        "images[0][0][27]: expected a number, received True",
        "images[0][0][27]",
        id="boolean-among-integers-in-byte-image",
    ),
    pytest.param(
        "/api/v1/energy/from-potential",
        {"potentials": [V, [*V[:10], True, *V[11:]]]},
        422,
        "potentials[1][10]: expected a number, received True",
        "potentials[1][10]",
        id="boolean-among-numbers-in-potentials",
    ),
    pytest.param(
        "/api/v1/energy/from-density",
        {"densities": [63 / (64 * 30)] * 64, "potentials": [[*V[:1], False, *V[2:]]]},
        422,
        "potentials[0][1]: expected a number, received False",
        "potentials[0][1]",
        id="boolean-among-numbers-in-density-potentials",
    ),
    pytest.param(
        "/api/v1/digits/classify",
        {"images": [[True] * 28] * 28, "scale": "unit"},
        422,
        "images[0][0]: expected a number, received True",
        "images[0][0]",
        id="booleans-as-pixels",
    ),
    pytest.param(
        "/api/v1/digits/classify",
        {"images": None, "scale": "unit"},
        422,
        "images: expected a (nested) list of numbers, received null",
        "images",
        id="null-images",
    ),
    pytest.param(
        V2,
        _v2(json.loads("[" * 100 + "1" + "]" * 100)),
        422,
        "inputs[0].data[0][0][0][0][0][0][0][0][0]: expected a number, received a list of 1",
        "inputs[0].data[0][0][0][0][0][0][0][0][0]",
        id="v2-data-nested-100-deep",
    ),
    pytest.param(
        TF,
        '{"instances": ' + "[" * 5000 + "]" * 5000 + "}",
        400,
        "body is not valid JSON: recursion limit exceeded",
        "body",
        id="tf-instances-nested-5000-deep",
    ),
    # Wrong shapes and lengths.
    pytest.param(
        V2,
        _v2(V[:63], [1, 63]),
        422,
        "inputs[0].data: wrong shape, received shape [1, 63]",
        "inputs[0].data",
        id="v2-63-point-potential",
    ),
    pytest.param(
        DECODER_V1,
        {"instances": [[1] * 15]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances: wrong shape, received shape [1, 15]",
        "instances",
        id="tf-code-one-byte-short",
    ),
    pytest.param(
        "/api/v1/energy/from-density",
        {"densities": [1 / 30] * 65},
        422,
        "densities: wrong shape, received shape [65]",
        "densities",
        id="65-point-density",
    ),
    # Empty and oversized batches (the test settings allow 64 items).
    pytest.param(
        V2,
        _v2([], [0, 64]),
        422,
        "inputs[0].data: empty batch, received an empty list",
        "inputs[0].data",
        id="v2-empty-batch",
    ),
    pytest.param(
        TF,
        {"instances": []},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances: empty batch, received an empty list",
        "instances",
        id="tf-empty-batch",
    ),
    pytest.param(
        "/api/v1/energy/exact",
        {"potentials": []},
        422,
        "potentials: empty batch, received an empty list",
        "potentials",
        id="exact-empty-batch",
    ),
    pytest.param(
        TF,
        {"instances": [V] * 65},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances: batch too large: at most 64 items per request, received 65 items",
        "instances",
        id="tf-65-instances",
    ),
    pytest.param(
        V2,
        _v2([V] * 65, [65, 64]),
        422,
        "inputs[0].data: batch too large: at most 64 items per request, received 65 items",
        "inputs[0].data",
        id="v2-65-items",
    ),
    pytest.param(
        "/api/v1/digits/compress",
        {"images": [IMAGE] * 65, "scale": "unit"},
        422,
        "images: batch too large: at most 64 items per request, received 65 items",
        "images",
        id="compress-65-images",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": ["AQAB"] * 65},
        422,
        "codes: batch too large: at most 64 items per request, received 65 items",
        "codes",
        id="decompress-65-codes",
    ),
    # Compression codes: truncated, corrupt, unknown versions, not base64.
    pytest.param(
        DECOMPRESS,
        {"codes": [_b64(b"\x01\x00\x01")]},
        422,
        "codes[0]: truncated code, received 3 bytes",
        "codes[0]",
        id="code-header-only",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": [""]},
        422,
        "codes[0]: truncated code, received 0 bytes",
        "codes[0]",
        id="code-empty",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": [_b64(b"\x01\x00\x01" + bytes(17))]},
        422,
        "codes[0]: corrupt code: wrong length, received 20 bytes",
        "codes[0]",
        id="code-one-byte-too-long",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": [_b64(b"\x01\x00\x00" + bytes(16))]},
        422,
        "codes[0]: unknown model version 0, received a code from version 0",
        "codes[0]",
        id="code-version-0",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": [_b64(b"\x01\xff\xff" + bytes(16))]},
        422,
        "codes[0]: unknown model version 65535, received a code from version 65535",
        "codes[0]",
        id="code-version-65535",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": [_b64(b"\x01\x00\x01" + bytes(17)).rstrip("=")]},
        422,
        "codes[0]: not valid base64, received 'AQABAAAAAAAAAAAAAAAAAAAAAAA'",
        "codes[0]",
        id="code-without-base64-padding",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": ["AQAB\nAAAA"]},
        422,
        "codes[0]: not valid base64",
        "codes[0]",
        id="code-with-newline",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": ["é" * 8]},
        422,
        "codes[0]: not valid base64, received 'éééééééé'",
        "codes[0]",
        id="code-non-ascii",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": [5]},
        422,
        "codes[0]: expected a base64 string, received 5",
        "codes[0]",
        id="code-number",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": "AQAB"},
        422,
        "codes: expected a list of base64 codes, received 'AQAB'",
        "codes",
        id="codes-not-a-list",
    ),
    pytest.param(
        DECOMPRESS,
        {"codes": ["AQAB"], "output": "gif"},
        422,
        "output: expected 'array' or 'png', received 'gif'",
        "output",
        id="decompress-unknown-output",
    ),
    # Unknown models and versions.
    pytest.param(
        "/v1/models/nope:predict",
        {"instances": [V]},
        404,
        "model 'nope' not found; known models: digit_classifier, digit_encoder, digit_decoder, "
        "energy_from_potential, energy_from_density",
        "model",
        id="tf-unknown-model",
    ),
    pytest.param(
        "/v2/models/nope/infer",
        _v2(V),
        404,
        "model 'nope' not found",
        "model",
        id="v2-unknown-model",
    ),
    pytest.param(
        "/v1/models/digit_decoder/versions/3:predict",
        {"instances": [[1] * 16]},
        404,
        "model 'digit_decoder' has no version 3; loaded versions: 1, 2",
        "version",
        id="tf-unknown-version",
    ),
    pytest.param(
        "/v2/models/digit_decoder/versions/0/infer",
        {"inputs": []},
        404,
        "version must be a positive integer, received '0'",
        "version",
        id="v2-version-0",
    ),
    # Malformed V2 requests.
    pytest.param(
        V2,
        {"inputs": {"name": "potential"}},
        422,
        "inputs: input should be a valid array, received an object with keys ['name']",
        "inputs",
        id="v2-inputs-not-a-list",
    ),
    pytest.param(
        V2,
        {"inputs": [{"shape": [1, 64], "datatype": "FP32", "data": V}]},
        422,
        "inputs[0].name: required field missing, received nothing",
        "inputs[0].name",
        id="v2-input-without-name",
    ),
    pytest.param(
        V2,
        _v2(V, ["a"]),  # type: ignore[list-item]
        422,
        "inputs[0].shape[0]: input should be a valid integer",
        "inputs[0].shape[0]",
        id="v2-shape-of-strings",
    ),
    pytest.param(
        V2,
        _v2(V, [-1, 64]),
        422,
        "inputs[0].shape: expected non-negative sizes, received [-1, 64]",
        "inputs[0].shape",
        id="v2-negative-shape",
    ),
    pytest.param(
        V2,
        {"inputs": [{"name": "potential", "shape": [1, 64], "datatype": "FP64", "data": V}]},
        422,
        "inputs[0].datatype: expected FP32, received 'FP64'",
        "inputs[0].datatype",
        id="v2-wrong-datatype",
    ),
    pytest.param(
        V2,
        {"inputs": _v2(V)["inputs"] * 2},
        422,
        "inputs: expected each input once, received 'potential' twice",
        "inputs",
        id="v2-input-twice",
    ),
    pytest.param(
        V2,
        {"inputs": [{"name": "density", "shape": [1, 64], "datatype": "FP32", "data": V}]},
        422,
        "inputs[0].name: unknown input name, received 'density'",
        "inputs[0].name",
        id="v2-unknown-input-name",
    ),
    pytest.param(
        V2,
        _v2(V, outputs={"name": "energy"}),
        422,
        "outputs: input should be a valid array, received an object with keys ['name']",
        "outputs",
        id="v2-outputs-not-a-list",
    ),
    pytest.param(
        V2,
        _v2(V, parameters=[1]),
        422,
        "parameters: input should be an object, received a list of 1: [1]",
        "parameters",
        id="v2-parameters-not-an-object",
    ),
    pytest.param(
        V2,
        _v2(V, id=5),
        422,
        "id: input should be a valid string, received 5",
        "id",
        id="v2-numeric-id",
    ),
    # Malformed TF Serving requests.
    pytest.param(
        TF,
        [V],
        400,  # TF Serving: INVALID_ARGUMENT
        "body: expected a JSON object, received a list of 1",
        "body",
        id="tf-body-a-list",
    ),
    pytest.param(
        TF,
        {"instances": [{"density": V}]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances[0]: expected an object with keys ['potential'], received an object with keys "
        "['density']",
        "instances[0]",
        id="tf-instance-with-wrong-key",
    ),
    pytest.param(
        TF,
        {"inputs": {"density": [V]}},
        400,  # TF Serving: INVALID_ARGUMENT
        "inputs: unknown input name, received ['density']",
        "inputs",
        id="tf-columnar-wrong-name",
    ),
    pytest.param(
        TF,
        {"instances": [{"b64": _b64(bytes(64))}]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances: b64 values are accepted only for uint8 inputs, received b64 bytes",
        "instances",
        id="tf-b64-for-a-float-model",
    ),
    pytest.param(
        DECODER_V1,
        {"instances": [{"b64": _b64(bytes(16))}, {"b64": _b64(bytes(15))}]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances: expected b64 values of equal length, received lengths [15, 16]",
        "instances",
        id="tf-ragged-b64",
    ),
    pytest.param(
        DECODER_V1,
        {"instances": [{"b64": 5}]},
        400,  # TF Serving: INVALID_ARGUMENT
        "instances[0].b64: expected a base64 string, received 5",
        "instances[0].b64",
        id="tf-b64-number",
    ),
]


@pytest.mark.parametrize(("url", "body", "status", "message", "field"), CASES)
async def test_hostile_json_gets_exact_4xx(
    client: httpx.AsyncClient, url: str, body: Any, status: int, message: str, field: str
) -> None:
    if isinstance(body, str):
        response = await client.post(
            url, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await client.post(url, json=body)
    assert_error(response, status, message, field=field)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/models/nope/metadata", "model 'nope' not found"),
        ("/v2/models/nope/ready", "model 'nope' not found"),
        ("/v1/models/digit_decoder/versions/abc", "version must be a positive integer"),
        ("/v2/models/digit_decoder/versions/-1", "received '-1'"),
        ("/v2/models/digit_decoder/versions/1.5/ready", "received '1.5'"),
        # '²' passes str.isdigit() but not int(): was a 500.
        ("/v1/models/digit_decoder/versions/²/metadata", "received '²'"),
    ],
)
async def test_unknown_model_or_version_path_gets_404(
    client: httpx.AsyncClient, path: str, message: str
) -> None:
    assert_error(await client.get(path), 404, message)


@pytest.mark.parametrize(
    ("url", "content_type", "expected"),
    [
        ("/api/v1/digits/classify", "multipart/form-data; boundary=x", "application/json"),
    ],
)
async def test_wrong_content_type_gets_415(
    client: httpx.AsyncClient, url: str, content_type: str, expected: str
) -> None:
    response = await client.post(url, content=b"--x\r\n", headers={"content-type": content_type})
    kind = content_type.split(";")[0]
    body = assert_error(response, 415, f"content type '{kind}' is not accepted here")
    assert expected in body["expected"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_v2_infer_takes_json_whatever_the_content_type(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """As Triton: without Inference-Header-Content-Length the body is JSON (curl -d sends
    application/x-www-form-urlencoded); what is not JSON is a 400 saying so."""
    headers = {} if content_type is None else {"content-type": content_type}
    tensor = {"name": "potential", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
    body = json.dumps({"inputs": [tensor]}).encode()
    answer = await client.post(V2, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["name"] == "energy"
    assert_error(await client.post(V2, content=b"--x\r\n", headers=headers), 400, "JSON")


# Images ------------------------------------------------------------------------------------------


def _png_of_one_colour(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of one colour, compressed to a few kilobytes."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte, then the packed pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


async def _upload(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post("/api/v1/digits/classify/image", files={"file": ("x", data)})


async def test_decompression_bomb_is_refused_before_decoding(client: httpx.AsyncClient) -> None:
    bomb = _png_of_one_colour(20_000, 20_000)
    assert len(bomb) < 100_000  # 400 million pixels, 1 byte each once decoded by Pillow
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    response = await _upload(client, bomb)
    body = assert_error(
        response, 413, "file: image too large: Image size (400000000 pixels) exceeds limit"
    )
    assert body["expected"] == "at most 1000000 pixels"
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB: the image was decoded"


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("truncated-png", 422, "file: image could not be decoded, received a truncated or corrupt"),
        (
            "truncated-jpeg",
            422,
            "file: image could not be decoded, received a truncated or corrupt",
        ),
        ("corrupt-jpeg", 422, "file: not a readable PNG or JPEG image"),
        ("png-with-bad-crc", 422, "file: not a readable PNG or JPEG image"),
        ("gif", 422, "file: not a readable PNG or JPEG image, received 70 bytes"),
        (
            "over-pixel-limit",
            413,
            "file: image too large: 1000x1200 = 1200000 pixels, limit 1000000",
        ),
    ],
)
async def test_bad_image_gets_exact_4xx(
    client: httpx.AsyncClient, name: str, status: int, message: str
) -> None:
    png, jpeg = encode(digit_image()), encode(digit_image(), "JPEG")
    data = {
        "truncated-png": png[: len(png) // 2],
        "truncated-jpeg": jpeg[: len(jpeg) // 2],
        "corrupt-jpeg": jpeg[:20] + bytes(200) + jpeg[220:],
        "png-with-bad-crc": png[:40] + bytes([png[40] ^ 0xFF]) + png[41:],
        "gif": b"GIF89a" + bytes(64),
        "over-pixel-limit": encode(np.zeros((1200, 1000), np.uint8)),
    }[name]
    assert_error(await _upload(client, data), status, message, field="file")


async def test_upload_over_body_limit_gets_413(client: httpx.AsyncClient) -> None:
    response = await _upload(client, bytes(3 * 1024 * 1024))
    assert_error(response, 413, "request body too large: limit 2097152 bytes", field="body")


async def test_multipart_with_two_files_gets_400(client: httpx.AsyncClient) -> None:
    files = {"file": ("a", encode(digit_image())), "other": ("b", b"x")}
    response = await client.post("/api/v1/digits/classify/image", files=files)
    assert_error(response, 400, "body is not valid multipart/form-data: Too many files")


# .npy bodies -------------------------------------------------------------------------------------


def _npy(header: str, data: bytes = b"") -> bytes:
    """A version 1.0 .npy file with a hand-written header (numpy.save cannot write bad ones)."""
    text = header.encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


@pytest.mark.parametrize(
    ("header", "data", "status", "message"),
    [
        (  # was a 500: np.prod wrapped around to 0 bytes expected
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
            b"",
            400,
            "the header declares shape [4294967296, 4294967296] (73786976294838206464 bytes",
        ),
        (  # was a 500: reshape read -5 as an unknown size
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, -5), }",
            b"",
            400,
            "body is not a valid .npy file: negative size in shape [0, -5]",
        ),
        (
            "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
            bytes(8),
            422,
            "potentials: unsupported .npy dtype, received dtype object",
        ),
        (  # the header is a Python literal: a call in it must never run
            "{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1,), }",
            bytes(8),
            400,
            "body is not a valid .npy file: malformed node or string",
        ),
    ],
)
async def test_hostile_npy_header_gets_4xx(
    client: httpx.AsyncClient, header: str, data: bytes, status: int, message: str
) -> None:
    response = await client.post(
        "/api/v1/energy/from-potential",
        content=_npy(header, data),
        headers={"content-type": "application/x-npy"},
    )
    assert_error(response, status, message)


# Security ----------------------------------------------------------------------------------------

#: Routes that answer without the API key: health, server metadata, metrics and the docs.
OPEN_PATHS = {
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


async def test_api_key_guards_every_model_route(tiny_model_dir: Path) -> None:
    key = "k" * 32
    app = create_app(Settings(model_dir=tiny_model_dir, warmup=False, api_key=key))
    transport = httpx.ASGITransport(app=app)
    guarded = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        # Every operation the API documents, so a route added without the key fails here.
        for route, operations in app.openapi()["paths"].items():
            if route in OPEN_PATHS:
                continue
            path = route.replace("{name}", "digit_decoder").replace("{version}", "1")
            for method in sorted(operations):
                for headers in ({}, {"X-API-Key": key[:-1] + "x"}, {"X-API-Key": ""}):
                    response = await client.request(method, path, headers=headers, json={})
                    assert_error(response, 401, "missing or wrong API key", field="X-API-Key")
                    assert response.headers["www-authenticate"] == "ApiKey"
                guarded.append(f"{method.upper()} {route}")
        for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
    assert "POST /admin/reload" in guarded and "POST /v2/models/{name}/infer" in guarded
    assert len(guarded) >= 20, guarded


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            found.append((f"{owner}.{name}" if owner else name, node))
    return found


def test_service_code_has_no_code_executing_deserialisation() -> None:
    forbidden_modules = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}
    problems = []
    for path in sorted(SERVICE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names.append(getattr(node, "module", None) or "")
                if {n.split(".")[0] for n in names} & forbidden_modules:
                    problems.append(f"{path.name}:{node.lineno}: imports {names}")
        for name, call in _calls(tree):
            keywords = {k.arg: k.value for k in call.keywords}
            if name in ("eval", "exec", "yaml.load", "yaml.unsafe_load"):
                problems.append(f"{path.name}:{call.lineno}: calls {name}")
            flag = keywords.get("allow_pickle", ast.Constant(None))
            pickle_off = isinstance(flag, ast.Constant) and flag.value is False
            if name in ("np.load", "numpy.load") and not pickle_off:
                problems.append(f"{path.name}:{call.lineno}: {name} without allow_pickle=False")
            if "allow_pickle" in keywords and not pickle_off:
                problems.append(f"{path.name}:{call.lineno}: allow_pickle is not False")
    assert not problems, problems


@pytest.mark.parametrize("key", ["too-short-key", "é" * 20, " " + "k" * 20])
def test_refused_api_key_is_never_printed(
    key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.__main__ import main

    monkeypatch.setenv("MLDM_API_KEY", key)
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("mldm-serve: invalid settings:\n  api_key: Value error, api_key must")
    assert key.strip() not in out
