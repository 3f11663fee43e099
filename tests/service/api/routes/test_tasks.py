"""Task endpoints over HTTP (ASGI): successes and their answers against the service layer."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
from PIL import Image

from data.schrodinger import solve_ground_state
from service.registry import ModelRegistry
from tests.service.helpers import assert_error, digit_image, encode, images, potentials


async def test_classify_digits_returns_digit_and_probabilities(
    client: httpx.AsyncClient, tiny_registry: ModelRegistry
) -> None:
    batch = images(2)
    response = await client.post(
        "/api/v1/digits/classify", json={"images": batch.tolist(), "scale": "unit"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "digit_classifier", "version": 1}
    expected = tiny_registry.get("digit_classifier").predict_one(
        batch.reshape(2, 28, 28, 1).astype(np.float32)
    )
    got = np.array([p["probabilities"] for p in body["predictions"]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert [p["digit"] for p in body["predictions"]] == expected.argmax(axis=1).tolist()


async def test_classify_digits_parses_big_body(
    client: httpx.AsyncClient, tiny_registry: ModelRegistry
) -> None:
    batch = images(60, seed=9)  # ~0.9 MB of JSON: parsed and validated off the event loop
    response = await client.post(
        "/api/v1/digits/classify", json={"images": batch.tolist(), "scale": "unit"}
    )
    assert response.status_code == 200, response.text
    assert len(response.request.content) > 256 * 1024
    expected = tiny_registry.get("digit_classifier").predict_one(
        batch.reshape(60, 28, 28, 1).astype(np.float32)
    )
    got = np.array([p["probabilities"] for p in response.json()["predictions"]], np.float32)
    # The served call runs a batch padded to a bucket size (64 here); TensorFlow's CPU kernels
    # block by batch size, so the sums may differ in the last bit from a call of exactly 60.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert got.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()


async def test_classify_digits_accepts_byte_scale(client: httpx.AsyncClient) -> None:
    pixels = np.zeros((28, 28), dtype=int)
    pixels[5:20, 12:15] = 255
    response = await client.post(
        "/api/v1/digits/classify", json={"images": pixels.tolist(), "scale": "byte"}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


async def test_classify_digits_requires_scale(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/digits/classify", json={"images": images(1).tolist()})
    assert_error(response, 422, "scale: required field missing", field="scale")


async def test_classify_digit_image_classifies_uploaded_png(
    client: httpx.AsyncClient, tiny_registry: ModelRegistry
) -> None:
    files = {"file": ("digit.png", encode(digit_image((300, 200))), "image/png")}
    response = await client.post("/api/v1/digits/classify/image", files=files)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1
    assert abs(sum(response.json()["predictions"][0]["probabilities"]) - 1) < 1e-5


async def test_classify_digit_image_rejects_non_image(client: httpx.AsyncClient) -> None:
    files = {"file": ("digit.png", b"hello, not an image", "image/png")}
    response = await client.post("/api/v1/digits/classify/image", files=files)
    assert_error(response, 422, "not a readable PNG or JPEG image", field="file")


async def test_classify_digit_image_rejects_image_over_pixel_limit(
    client: httpx.AsyncClient,
) -> None:
    files = {"file": ("big.png", encode(np.zeros((1001, 1000), np.uint8)), "image/png")}
    response = await client.post("/api/v1/digits/classify/image", files=files)
    body = assert_error(response, 413, "image too large: 1000x1001", field="file")
    assert body["expected"] == "at most 1000000 pixels"


async def test_classify_digit_image_requires_file_part(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/digits/classify/image", data={"other": "x"})
    # httpx sends a plain form without files as urlencoded: the content type is refused
    assert_error(response, 415, "content type 'application/x-www-form-urlencoded'")
    files = {"image": ("digit.png", encode(digit_image()), "image/png")}
    response = await client.post("/api/v1/digits/classify/image", files=files)
    assert_error(response, 422, "file: expected a file part named 'file'", field="file")


async def test_classify_digit_image_rejects_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/digits/classify/image", json={"file": "x"})
    assert_error(response, 415, "send multipart/form-data", field="Content-Type")


async def test_compress_then_decompress_reproduces_decoder_output(
    client: httpx.AsyncClient, tiny_registry: ModelRegistry
) -> None:
    batch = images(3)
    compressed = await client.post(
        "/api/v1/digits/compress", json={"images": batch.tolist(), "scale": "unit"}
    )
    assert compressed.status_code == 200, compressed.text
    body = compressed.json()
    assert body["model"] == {"name": "digit_encoder", "version": 2}
    assert body["format"] == 1 and body["bytes_per_image"] == 52
    assert all(len(base64.b64decode(code)) == 52 for code in body["codes"])
    decompressed = await client.post("/api/v1/digits/decompress", json={"codes": body["codes"]})
    assert decompressed.status_code == 200, decompressed.text
    result = decompressed.json()
    assert result["versions"] == [2, 2, 2]
    latent = tiny_registry.get("digit_encoder", 2).predict_one(
        batch.reshape(3, 28, 28, 1).astype(np.float32)
    )
    expected = tiny_registry.get("digit_decoder", 2).predict_one(latent).reshape(3, 28, 28)
    np.testing.assert_array_equal(np.array(result["images"], dtype=np.float32), expected)


async def test_decompress_digits_returns_png(client: httpx.AsyncClient) -> None:
    code = base64.b64encode(bytes([1, 0, 1]) + bytes([255] * 16)).decode()
    response = await client.post(
        "/api/v1/digits/decompress", json={"codes": [code], "output": "png"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["versions"] == [1] and "images" not in body
    png = Image.open(io.BytesIO(base64.b64decode(body["png"][0])))
    assert png.format == "PNG" and png.size == (28, 28)
    assert np.asarray(png).min() == 255


async def test_energy_from_potential_returns_hartree_on_grid(client: httpx.AsyncClient) -> None:
    V = potentials(2)
    response = await client.post(
        "/api/v1/energy/from-potential", json={"potentials": V.tolist(), "include_exact": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unit"] == "hartree"
    assert body["grid"] == {"start": -15.0, "stop": 15.0, "points": 64, "unit": "bohr"}
    exact, _ = solve_ground_state(V)
    np.testing.assert_allclose(body["exact_energies"], exact, rtol=1e-12)
    np.testing.assert_allclose(
        body["errors"], np.array(body["energies"]) - exact, rtol=1e-6, atol=1e-7
    )


async def test_energy_from_potential_omits_exact_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/energy/from-potential", json={"potentials": potentials(1)[0].tolist()}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["energies"]) == 1
    assert "exact_energies" not in response.json()


async def test_energy_from_density_predicts_energies(client: httpx.AsyncClient) -> None:
    _, densities = solve_ground_state(potentials(3))
    response = await client.post(
        "/api/v1/energy/from-density", json={"densities": densities.tolist()}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["energies"]) == 3


async def test_exact_solution_returns_energy_and_density(client: httpx.AsyncClient) -> None:
    V = potentials(2)
    response = await client.post("/api/v1/energy/exact", json={"potentials": V.tolist()})
    assert response.status_code == 200, response.text
    energies, densities = solve_ground_state(V)
    body = response.json()
    np.testing.assert_array_equal(body["energies"], energies)
    np.testing.assert_array_equal(body["densities"], densities)


async def test_list_models_reports_versions(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert models["digit_encoder"]["versions"] == [1, 2]
    assert all(m["ready"] for m in models.values())
