"""The classifier task: the notebook's architecture, and a one-epoch train/export/load round."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf

from training import digit_classifier
from training.common import load_signature


def test_build_model_seed_config_matches_notebook_parameter_count() -> None:
    model = digit_classifier.build_model(digit_classifier.CONFIGS["seed"])

    assert model.count_params() == 50_374


def test_export_tiny_run_serves_probabilities(tmp_path, tiny_mnist) -> None:
    config = dataclasses.replace(digit_classifier.CONFIGS["default"], epochs=1, batch_size=16)
    result = digit_classifier.train(config, tiny_mnist)

    [exported] = digit_classifier.export(result, tiny_mnist, tmp_path, 1)

    path = tmp_path / "digit_classifier" / "1"
    assert exported.path == path
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    loaded = tf.saved_model.load(str(path))
    assert list(loaded.signatures) == ["serving_default"]
    signature = loaded.signatures["serving_default"]
    [spec] = signature.structured_input_signature[1].values()
    assert spec.name == "images" and spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, 28, 28, 1]
    probabilities = signature(images=tf.constant(tiny_mnist.test.images[:5]))["probabilities"]
    assert probabilities.dtype == tf.float32 and probabilities.shape == (5, 10)
    assert np.all(np.isfinite(probabilities.numpy()))
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)
    card = json.loads((path / "metrics.json").read_text())
    assert card["name"] == "digit_classifier" and card["version"] == 1
    assert card["signature"]["outputs"]["probabilities"] == {
        "dtype": "float32",
        "shape": [None, 10],
    }
    assert 0.0 <= card["metrics"]["test_accuracy"] <= 1.0
    assert (path / "MODEL_CARD.md").is_file() and (path / "predictions.png").is_file()


def test_evaluate_exported_model_matches_its_card(tmp_path, tiny_mnist) -> None:
    config = dataclasses.replace(digit_classifier.CONFIGS["seed"], epochs=1)
    result = digit_classifier.train(config, tiny_mnist)
    [exported] = digit_classifier.export(result, tiny_mnist, tmp_path, 3)

    metrics = digit_classifier.evaluate(exported.path, tiny_mnist)

    assert metrics == exported.metrics
    probabilities = digit_classifier.predict(
        load_signature(exported.path), tiny_mnist.test_full.images
    )
    expected = np.mean(probabilities.argmax(axis=1) == tiny_mnist.test_full.labels)
    assert metrics["test_accuracy"] == expected
