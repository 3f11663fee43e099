"""Binary payloads: .npy request bodies and responses, safe parsing, content negotiation."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest

from data.schrodinger import solve_ground_state
from service.codecs.npy import dump_npy
from tests.service.helpers import assert_error, images, potentials

NPY = {"content-type": "application/x-npy", "accept": "application/x-npy"}


def _load(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    return np.load(io.BytesIO(response.content), allow_pickle=False)


async def test_classify_npy_round_trip_equals_json(client: httpx.AsyncClient) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    binary = await client.post(
        "/api/v1/digits/classify", params={"scale": "byte"}, content=dump_npy(pixels), headers=NPY
    )
    probabilities = _load(binary)
    assert probabilities.dtype == np.float32 and probabilities.shape == (5, 10)
    assert binary.headers["x-model-name"] == "digit_classifier"
    as_json = await client.post(
        "/api/v1/digits/classify", json={"images": pixels.tolist(), "scale": "byte"}
    )
    expected = [p["probabilities"] for p in as_json.json()["predictions"]]
    np.testing.assert_array_equal(probabilities, np.array(expected, dtype=np.float32))


async def test_compress_and_decompress_npy_match_json(client: httpx.AsyncClient) -> None:
    batch = images(4, seed=5).astype(np.float32)
    codes = _load(
        await client.post(
            "/api/v1/digits/compress",
            params={"scale": "unit"},
            content=dump_npy(batch),
            headers=NPY,
        )
    )
    assert codes.dtype == np.uint8 and codes.shape == (4, 52)
    as_json = await client.post(
        "/api/v1/digits/compress", json={"images": batch.tolist(), "scale": "unit"}
    )
    assert [base64.b64decode(c) for c in as_json.json()["codes"]] == [r.tobytes() for r in codes]
    decoded = _load(
        await client.post("/api/v1/digits/decompress", content=dump_npy(codes), headers=NPY)
    )
    decoded_json = await client.post(
        "/api/v1/digits/decompress", json={"codes": as_json.json()["codes"]}
    )
    assert decoded.dtype == np.float32 and decoded.shape == (4, 28, 28)
    np.testing.assert_array_equal(decoded, np.array(decoded_json.json()["images"], np.float32))


async def test_energy_npy_is_one_type_whatever_the_options(client: httpx.AsyncClient) -> None:
    """One answer type per route (issue 20): float64 [N], the answers, for every mode and
    include_exact; the exact energies and errors are in the JSON and .npz answers."""
    V = potentials(3)
    route = "/api/v1/energy/from-potential"
    answers = {}
    for mode in ("model", "exact", "auto"):
        for include_exact in ("false", "true"):
            params = {"mode": mode, "include_exact": include_exact}
            response = await client.post(route, params=params, content=dump_npy(V), headers=NPY)
            answers[mode, include_exact] = _load(response)
            assert answers[mode, include_exact].dtype == np.float64, params
            assert answers[mode, include_exact].shape == (3,), params
    json_answer = await client.post(route, json={"potentials": V.tolist(), "mode": "model"})
    np.testing.assert_allclose(
        answers["model", "true"], json_answer.json()["energies"], rtol=1e-6, atol=1e-7
    )
    exact, densities = solve_ground_state(V)
    np.testing.assert_allclose(answers["exact", "false"], exact, rtol=1e-12)
    np.testing.assert_array_equal(answers["model", "false"], answers["model", "true"])
    for mode in ("model", "auto"):
        by_density = _load(
            await client.post(
                "/api/v1/energy/from-density",
                params={"mode": mode},
                content=dump_npy(densities),
                headers=NPY,
            )
        )
        assert by_density.dtype == np.float64 and by_density.shape == (3,)


async def test_exact_npy_returns_energy_then_density(client: httpx.AsyncClient) -> None:
    V = potentials(2)
    result = _load(await client.post("/api/v1/energy/exact", content=dump_npy(V), headers=NPY))
    energies, densities = solve_ground_state(V)
    np.testing.assert_array_equal(result[:, 0], energies)
    np.testing.assert_array_equal(result[:, 1:], densities)


async def test_npy_body_can_get_json_answer(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/energy/exact",
        content=dump_npy(potentials(1)),
        headers={"content-type": "application/x-npy"},
    )
    assert response.status_code == 200 and len(response.json()["energies"]) == 1


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/x-npy", "application/x-npy"),
        ("application/json;q=0.5, application/x-npy", "application/x-npy"),
        ("application/x-npy;q=0.2, application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/html, */*;q=0.1", "application/json"),
    ],
)
async def test_accept_header_chooses_format(
    client: httpx.AsyncClient, accept: str, expected: str
) -> None:
    response = await client.post(
        "/api/v1/energy/from-potential",
        json={"potentials": potentials(1).tolist()},
        headers={"accept": accept},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == expected


async def test_unsupported_accept_gets_406(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/energy/from-potential",
        json={"potentials": potentials(1).tolist()},
        headers={"accept": "text/csv"},
    )
    body = assert_error(response, 406, "cannot answer with 'text/csv'", field="Accept")
    assert body["expected"] == "application/json | application/x-npy | application/x-npz"


async def test_npy_with_missing_scale_gets_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/digits/classify", content=dump_npy(images(1)), headers=NPY
    )
    assert_error(response, 422, "scale: required field missing", field="scale")


async def test_npy_with_unknown_query_parameter_gets_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/energy/exact", params={"fast": "1"}, content=dump_npy(potentials(1)), headers=NPY
    )
    assert_error(response, 422, "fast: unknown field", field="fast")


async def test_npy_of_wrong_shape_gets_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/energy/exact", content=dump_npy(np.zeros((2, 32))), headers=NPY
    )
    assert_error(response, 422, "potentials: wrong shape, received shape [2, 32]")


async def test_pickled_object_array_is_refused_without_unpickling(
    client: httpx.AsyncClient,
) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    response = await client.post("/api/v1/energy/exact", content=buffer.getvalue(), headers=NPY)
    body = assert_error(response, 422, "unsupported .npy dtype", field="potentials")
    assert body["received"] == "dtype object"


async def test_npy_integer_pixels_outside_byte_range_get_422(client: httpx.AsyncClient) -> None:
    pixels = np.zeros((2, 28, 28), dtype=np.int16)
    pixels[1, 4, 5] = 300
    response = await client.post(
        "/api/v1/digits/classify", params={"scale": "byte"}, content=dump_npy(pixels), headers=NPY
    )
    body = assert_error(response, 422, "value out of range", field="images[1][4][5]")
    assert body["received"] == "300"
