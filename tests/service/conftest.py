"""Fixtures for the service tests: tiny real SavedModels that follow the model contract.

The models are exported once per session into a temporary `models/` folder with TensorFlow
Serving's layout and `serving_default` signatures exactly as docs/ARCHITECTURE.md specifies
(names, dtypes, shapes), with two versions of the encoder and decoder of different code lengths,
so version-pinned decoding is exercised. Fixtures chain: model dir -> registry -> settings -> app
-> client, as in MLServer's tests.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.dataplane import DataPlane
from service.registry import ModelRegistry
from service.runtime import ModelRunner
from service.settings import Settings
from service.tasks import model_names, model_specs

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"

#: Latent length of the tiny encoder versions: v1 pools 7x7 (4x4 = 16), v2 pools 4x4 (7x7 = 49).
TINY_CODE_LENGTH = {1: 16, 2: 49}


def _export(module: Any, function: Any, path: Path, card: dict[str, Any]) -> None:
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={"serving_default": function})
    (path / "metrics.json").write_text(json.dumps(card), encoding="utf-8")
    (path / "MODEL_CARD.md").write_text(f"# {card['name']} v{card['version']}\n", encoding="utf-8")


def _card(
    name: str, version: int, inputs: dict[str, Any], outputs: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "task": "tiny test model",
        "parameters": 0,
        "signature": {"inputs": inputs, "outputs": outputs},
        "metrics": {"test_accuracy": 0.5},
    }


def build_tiny_models(root: Path) -> Path:
    """Export the five contract models (encoder/decoder in versions 1 and 2) under `root`."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    image_spec = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")

    class Classifier(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(rng.normal(size=(784, 10)).astype(np.float32))
            self.b = tf.Variable(np.zeros(10, np.float32))

        @tf.function(input_signature=[image_spec])
        def serve(self, images: Any) -> Any:
            logits = tf.reshape(images, [-1, 784]) @ self.w + self.b
            return {"probabilities": tf.nn.softmax(logits)}

    classifier = Classifier()
    _export(
        classifier,
        classifier.serve,
        root / "digit_classifier" / "1",
        _card("digit_classifier", 1, {"images": [None, 28, 28, 1]}, {"probabilities": [None, 10]}),
    )

    for version, pool in ((1, 7), (2, 4)):
        _export_codec(root, version, pool)

    for name, input_name in (
        ("energy_from_potential", "potential"),
        ("energy_from_density", "density"),
    ):
        weights = tf.Module()
        weights.w = tf.Variable(rng.normal(size=(64,)).astype(np.float32) * 0.01)
        weights.b = tf.Variable(0.5)
        _export_energy(weights, input_name, root / name / "1", name)
    return root


def _export_codec(root: Path, version: int, pool: int) -> None:
    """Encoder (average pooling, quantised to uint8) and decoder (upsampling) of one version."""
    import tensorflow as tf

    image_spec = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")
    side = 28 // pool
    k = side * side

    class Encoder(tf.Module):
        def __init__(self) -> None:
            self.scale = tf.Variable(255.0)

        @tf.function(input_signature=[image_spec])
        def serve(self, images: Any) -> Any:
            pooled = tf.nn.avg_pool2d(images, pool, pool, "VALID")
            flat = tf.reshape(pooled, [-1, k]) * self.scale
            return {"code": tf.cast(tf.clip_by_value(tf.round(flat), 0, 255), tf.uint8)}

    class Decoder(tf.Module):
        def __init__(self) -> None:
            self.scale = tf.Variable(1.0 / 255.0)

        @tf.function(input_signature=[tf.TensorSpec([None, k], tf.uint8, name="code")])
        def serve(self, code: Any) -> Any:
            grid = tf.reshape(tf.cast(code, tf.float32) * self.scale, [-1, side, side, 1])
            images = tf.image.resize(grid, [28, 28], method="nearest")
            return {"images": images}

    encoder, decoder = Encoder(), Decoder()
    _export(
        encoder,
        encoder.serve,
        root / "digit_encoder" / str(version),
        _card("digit_encoder", version, {"images": [None, 28, 28, 1]}, {"code": [None, k]}),
    )
    _export(
        decoder,
        decoder.serve,
        root / "digit_decoder" / str(version),
        _card("digit_decoder", version, {"code": [None, k]}, {"images": [None, 28, 28, 1]}),
    )


def _export_energy(module: Any, input_name: str, path: Path, name: str) -> None:
    import tensorflow as tf

    spec = tf.TensorSpec([None, 64], tf.float32, name=input_name)
    # The signature's input name is the Python argument's name, hence one function per input.
    if input_name == "potential":

        @tf.function(input_signature=[spec])
        def serve(potential: Any) -> Any:
            return {"energy": tf.reduce_sum(potential * module.w, axis=1) + module.b}

    else:

        @tf.function(input_signature=[spec])
        def serve(density: Any) -> Any:
            return {"energy": tf.reduce_sum(density * module.w, axis=1) + module.b}

    module.serve = serve
    _export(module, serve, path, _card(name, 1, {input_name: [None, 64]}, {"energy": [None]}))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_registry(tiny_model_dir: Path) -> ModelRegistry:
    registry = ModelRegistry(tiny_model_dir, model_names())
    registry.load(warm_up=True)
    return registry


@pytest.fixture(scope="session")
def broken_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models, energy_from_density's only version corrupt and the classifier missing."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(tiny_model_dir, root, dirs_exist_ok=True)
    (root / "energy_from_density" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    shutil.rmtree(root / "digit_classifier")
    return root


@pytest.fixture
def settings(tiny_model_dir: Path) -> Settings:
    return Settings(
        model_dir=tiny_model_dir,
        max_items_per_request=64,
        max_body_bytes=2 * 1024 * 1024,
        max_image_pixels=1_000_000,
        warmup=False,
    )


@pytest.fixture
async def service(tiny_registry: ModelRegistry, settings: Settings) -> AsyncIterator[DataPlane]:
    runner = ModelRunner(settings)
    yield DataPlane(tiny_registry, settings, runner, model_specs())
    await runner.aclose()


@pytest.fixture
def app(settings: Settings, tiny_registry: ModelRegistry) -> FastAPI:
    return create_app(settings, tiny_registry)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def export_multi_output_energy(path: Path) -> None:
    """energy_from_potential with extra outputs, as issue 11's v2 has them: the energy, a
    1-sigma uncertainty and a bool `in_domain` (the data plane must carry all of them)."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.linspace(-0.01, 0.01, 64).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="potential")])
    def serve(potential: Any) -> Any:
        energy = tf.reduce_sum(potential * module.w, axis=1)
        spread = tf.math.reduce_std(potential, axis=1)
        return {"energy": energy, "energy_std": spread * 0.1, "in_domain": spread < 1.0}

    module.serve = serve
    outputs = {"energy": [None], "energy_std": [None], "in_domain": [None]}
    _export(
        module, serve, path, _card("energy_from_potential", 2, {"potential": [None, 64]}, outputs)
    )


@pytest.fixture(scope="session")
def multi_output_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models plus energy_from_potential version 2 with extra outputs."""
    root = tmp_path_factory.mktemp("multi")
    shutil.copytree(tiny_model_dir, root, dirs_exist_ok=True)
    export_multi_output_energy(root / "energy_from_potential" / "2")
    return root


@pytest.fixture
async def multi_client(
    multi_output_model_dir: Path, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"model_dir": multi_output_model_dir}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
