"""The committed models in `models/`: contract, and served end to end.

Each test needs only the models it uses and is skipped while they are not in `models/` yet (the
training stage trains and commits them one by one); once they land, these run in CI with the rest.
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
from service.settings import Settings
from service.tasks import model_names
from tests.service.conftest import REPO_MODELS
from tests.service.helpers import digit_image, encode, potentials

CONTRACT = {
    "digit_classifier": ("images", np.float32, (None, 28, 28, 1), "probabilities", (None, 10)),
    "digit_encoder": ("images", np.float32, (None, 28, 28, 1), "code", None),
    "digit_decoder": ("code", np.uint8, None, "images", (None, 28, 28, 1)),
    "energy_from_potential": ("potential", np.float32, (None, 64), "energy", (None,)),
    "energy_from_density": ("density", np.float32, (None, 64), "energy", (None,)),
}


def committed(*names: str) -> bool:
    return all(any((REPO_MODELS / name).glob("*/saved_model.pb")) for name in names)


def needs(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not committed(*names), reason=f"not committed under models/ yet: {', '.join(names)}"
    )


@pytest.fixture(scope="module")
def committed_registry() -> ModelRegistry:
    registry = ModelRegistry(REPO_MODELS, model_names())
    registry.load()
    return registry


@pytest.fixture
async def committed_client(committed_registry: ModelRegistry) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_dir=REPO_MODELS, warmup=False), committed_registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize("name", model_names())
def test_committed_model_follows_contract(name: str, committed_registry: ModelRegistry) -> None:
    if not committed(name):
        pytest.skip(f"{name} not committed under models/ yet")
    entry = committed_registry.entry(name)
    assert entry.ready, entry.status_message()
    input_name, dtype, input_shape, output_name, output_shape = CONTRACT[name]
    for model in entry.versions.values():
        assert list(model.inputs) == [input_name]
        assert model.input.dtype == np.dtype(dtype)
        if input_shape is not None:
            assert model.input.shape == input_shape
        # Extra outputs (interfaces.md: e.g. digit_classifier v2's ood_score, is_digit) are
        # allowed beside the contract's one, which must stay the primary output.
        assert model.output.name == output_name and output_name in model.outputs
        for extra in set(model.outputs) - {output_name}:
            assert model.outputs[extra].shape[:1] == (None,), f"{extra} has no batch dimension"
        if output_shape is not None:
            assert model.outputs[output_name].shape == output_shape
        assert model.card.get("name") == name and model.card.get("version") == model.version
        assert model.card_markdown, f"{name} v{model.version} has no MODEL_CARD.md"


@needs("digit_encoder", "digit_decoder")
def test_committed_codec_versions_pair_up(committed_registry: ModelRegistry) -> None:
    decoders = committed_registry.entry("digit_decoder").versions
    for version, encoder in committed_registry.entry("digit_encoder").versions.items():
        k = encoder.output.shape[1]
        assert encoder.output.dtype == np.uint8 and k is not None and k + 3 <= 64
        assert version in decoders and decoders[version].input.shape == (None, k)


@needs("digit_encoder", "digit_decoder")
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
    # The server pads each model call to an allowed batch size (3 -> 4, repeating the last row;
    # MLDM_BATCH_PAD_SIZES) and oneDNN's sums depend on the batch size: decode the same batch.
    padded = np.concatenate([latent, latent[-1:]])
    expected = committed_registry.get("digit_decoder", version).predict_one(padded)[:3]
    np.testing.assert_array_equal(
        np.array(decoded.json()["images"], np.float32), expected.reshape(3, 28, 28)
    )


@needs("digit_classifier")
async def test_committed_classifier_serves_upload_and_metadata(
    committed_client: httpx.AsyncClient,
) -> None:
    files = {"file": ("digit.png", encode(digit_image((200, 140))), "image/png")}
    upload = await committed_client.post("/api/v1/digits/classify/image", files=files)
    assert upload.status_code == 200, upload.text
    [prediction] = upload.json()["predictions"]
    assert abs(sum(prediction["probabilities"]) - 1) < 1e-4
    assert prediction["digit"] == 1  # a thick dark bar on white, off-centre: MNIST's "1"
    meta = await committed_client.get("/v1/models/digit_classifier/metadata")
    assert meta.json()["model_card"]["metrics"]["name"] == "digit_classifier"


@needs("energy_from_potential", "energy_from_density")
async def test_committed_energy_models_serve_with_exact(
    committed_client: httpx.AsyncClient,
) -> None:
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
    assert len(density.json()["errors"]) == 4
