"""The committed models in `models/`: contract, and served end to end.

Skipped only while `models/` holds no SavedModel (the models are trained and committed by the
training stage); once they land, these run in CI with the rest of the suite.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from data.schrodinger import solve_ground_state
from service.app import create_app
from service.registry import ModelRegistry
from service.settings import EXPECTED_MODELS, Settings
from tests.service.conftest import REPO_MODELS, committed_models_present
from tests.service.helpers import digit_image, encode, potentials

pytestmark = pytest.mark.skipif(
    not committed_models_present(), reason="no SavedModel committed under models/ yet"
)

CONTRACT = {
    "digit_classifier": ("images", np.float32, (None, 28, 28, 1), "probabilities", (None, 10)),
    "digit_encoder": ("images", np.float32, (None, 28, 28, 1), "code", None),
    "digit_decoder": ("code", np.uint8, None, "images", (None, 28, 28, 1)),
    "energy_from_potential": ("potential", np.float32, (None, 64), "energy", (None,)),
    "energy_from_density": ("density", np.float32, (None, 64), "energy", (None,)),
}


@pytest.fixture(scope="module")
def committed_registry() -> ModelRegistry:
    registry = ModelRegistry(REPO_MODELS, EXPECTED_MODELS)
    registry.load()
    return registry


@pytest.fixture
async def committed_client(committed_registry: ModelRegistry) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_dir=REPO_MODELS, warmup=False), committed_registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def test_committed_models_follow_contract(committed_registry: ModelRegistry) -> None:
    assert committed_registry.not_ready() == []
    for name, (input_name, dtype, input_shape, output_name, output_shape) in CONTRACT.items():
        for model in committed_registry.entry(name).versions.values():
            assert list(model.inputs) == [input_name], name
            assert model.input.dtype == np.dtype(dtype), name
            if input_shape is not None:
                assert model.input.shape == input_shape, name
            assert output_name in model.outputs, name
            if output_shape is not None:
                assert model.outputs[output_name].shape == output_shape, name
            assert model.card.get("name") == name and model.card.get("version") == model.version
            assert model.card_markdown, f"{name} v{model.version} has no MODEL_CARD.md"
    for version, encoder in committed_registry.entry("digit_encoder").versions.items():
        k = encoder.output.shape[1]
        assert k is not None and k + 3 <= 64
        decoder = committed_registry.entry("digit_decoder").versions.get(version)
        assert decoder is not None and decoder.input.shape == (None, k)


async def test_committed_codec_round_trip_is_exact(
    committed_client: httpx.AsyncClient, committed_registry: ModelRegistry
) -> None:
    batch = np.random.default_rng(0).random((3, 28, 28))
    compressed = (
        await committed_client.post(
            "/api/v1/digits/compress", json={"images": batch.tolist(), "scale": "unit"}
        )
    ).json()
    version = compressed["model"]["version"]
    decoded = await committed_client.post(
        "/api/v1/digits/decompress", json={"codes": compressed["codes"]}
    )
    assert decoded.status_code == 200, decoded.text
    latent = np.stack(
        [np.frombuffer(base64.b64decode(c)[3:], dtype=np.uint8) for c in compressed["codes"]]
    )
    expected = committed_registry.get("digit_decoder", version).predict_one(latent)
    np.testing.assert_array_equal(
        np.array(decoded.json()["images"], np.float32), expected.reshape(3, 28, 28)
    )


async def test_committed_models_serve_every_task(committed_client: httpx.AsyncClient) -> None:
    files = {"file": ("digit.png", encode(digit_image((200, 140))), "image/png")}
    upload = await committed_client.post("/api/v1/digits/classify/image", files=files)
    assert upload.status_code == 200, upload.text
    V = potentials(4)
    energy = await committed_client.post(
        "/api/v1/energy/from-potential", json={"potentials": V.tolist(), "include_exact": True}
    )
    assert energy.status_code == 200, energy.text
    _, densities = solve_ground_state(V)
    density = await committed_client.post(
        "/api/v1/energy/from-density",
        json={"densities": densities.tolist(), "potentials": V.tolist()},
    )
    assert density.status_code == 200, density.text
    for name in EXPECTED_MODELS:
        meta = await committed_client.get(f"/v1/models/{name}/metadata")
        assert meta.status_code == 200 and meta.json()["model_card"]["metrics"]["name"] == name
