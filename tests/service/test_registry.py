"""The model repository: specs from signatures, model cards, failures isolated, reload."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelNotReady, NotFound
from service.registry import ModelRegistry, ModelState
from service.tasks import model_names
from tests.service.conftest import TINY_CODE_LENGTH


def test_load_reads_specs_from_each_signature(tiny_registry: ModelRegistry) -> None:
    for version, k in TINY_CODE_LENGTH.items():
        encoder = tiny_registry.get("digit_encoder", version)
        assert encoder.input.name == "images"
        assert encoder.input.shape == (None, 28, 28, 1)
        assert encoder.output.name == "code"
        assert (encoder.output.dtype, encoder.output.shape) == (np.dtype(np.uint8), (None, k))
    potential = tiny_registry.get("energy_from_potential")
    assert (potential.input.name, potential.input.shape) == ("potential", (None, 64))
    assert (potential.output.name, potential.output.shape) == ("energy", (None,))


def test_load_reads_model_card(tiny_registry: ModelRegistry) -> None:
    model = tiny_registry.get("digit_decoder", 2)
    assert model.card["name"] == "digit_decoder" and model.card["version"] == 2
    assert model.card_markdown is not None and model.card_markdown.startswith("# digit_decoder v2")


def test_get_returns_latest_version_by_default(tiny_registry: ModelRegistry) -> None:
    assert tiny_registry.get("digit_encoder").version == 2


def test_get_rejects_unknown_model_with_404(tiny_registry: ModelRegistry) -> None:
    with pytest.raises(NotFound, match="model 'nope' not found; known models: digit_classifier"):
        tiny_registry.get("nope")


def test_get_rejects_unknown_version_with_404(tiny_registry: ModelRegistry) -> None:
    with pytest.raises(NotFound, match="has no version 7; loaded versions: 1, 2"):
        tiny_registry.get("digit_decoder", 7)


def test_load_isolates_corrupt_and_missing_models(broken_model_dir: Path) -> None:
    registry = ModelRegistry(broken_model_dir, model_names())
    registry.load()
    assert not registry.ready
    assert registry.not_ready() == ["digit_classifier", "energy_from_density"]
    density = registry.entry("energy_from_density")
    assert density.state is ModelState.FAILED and 1 in density.failed
    with pytest.raises(ModelNotReady, match="energy_from_density"):
        registry.get("energy_from_density")
    with pytest.raises(ModelNotReady, match="no directory"):
        registry.get("digit_classifier")
    assert registry.get("energy_from_potential").version == 1


def test_load_picks_up_new_version_and_keeps_loaded_ones(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(tiny_model_dir, root)
    registry = ModelRegistry(root, model_names())
    registry.load()
    first = registry.get("digit_decoder", 1)
    shutil.copytree(root / "digit_decoder" / "2", root / "digit_decoder" / "3")
    registry.load()
    assert sorted(registry.entry("digit_decoder").versions) == [1, 2, 3]
    assert registry.get("digit_decoder", 1) is first
    assert registry.get("digit_decoder").version == 3


def test_registry_reports_loading_before_load(tiny_model_dir: Path) -> None:
    registry = ModelRegistry(tiny_model_dir, model_names())
    assert registry.entry("digit_classifier").state is ModelState.LOADING
    with pytest.raises(ModelNotReady, match="still loading"):
        registry.get("digit_classifier")


def test_output_is_card_primary_output_when_version_has_several(tmp_path: Path) -> None:
    import json

    import tensorflow as tf

    from service.registry import load_version

    module = tf.Module()
    spec = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        flat = tf.reshape(images, [-1, 784])
        probabilities = tf.nn.softmax(flat[:, :10])
        score = tf.reduce_sum(flat, axis=1)
        return {"probabilities": probabilities, "ood_score": score, "is_digit": score < 1.0}

    module.serve = serve
    path = tmp_path / "digit_classifier" / "2"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    card = {"name": "digit_classifier", "version": 2, "primary_output": "probabilities"}
    (path / "metrics.json").write_text(json.dumps(card))

    version = load_version("digit_classifier", 2, path)

    assert version.output.name == "probabilities"
    assert version.predict_one(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)
