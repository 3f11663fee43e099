"""Classifier v2: the fine-tuning task on tiny data (outputs, calibration inside the SavedModel),
the degradations, and the committed v2 on non-digits and rows of MNIST test digits."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from data import mnist
from service import imaging, reading
from service.errors import InvalidInput
from training import digit_degrade, digit_robust, digit_sets
from training.common import DEFAULT_MODELS_DIR, load_signature

COMMITTED = DEFAULT_MODELS_DIR / "digit_classifier" / "2"


@pytest.mark.parametrize("score", ["energy", "mahalanobis"])
def test_export_tiny_run_serves_calibrated_probabilities_and_ood_flag(
    tmp_path, tiny_mnist, score: str
) -> None:
    config = dataclasses.replace(
        digit_robust.CONFIGS["default"],
        epochs=1,
        batch_size=16,
        ood_fit_images=96,
        score=score,
        outlier_family="DejaVuSansMono-Bold.ttf",  # one font: a quick outlier set
    )
    result = digit_robust.train(config, tiny_mnist)

    digit_robust.export(result, tiny_mnist, tmp_path, 2)

    path = tmp_path / "digit_classifier" / "2"
    signature = load_signature(path)
    out = signature(images=tf.constant(tiny_mnist.test.images[:5]))
    assert set(out) == {"probabilities", "ood_score", "is_digit"}
    assert out["probabilities"].shape == (5, 10) and out["ood_score"].shape == (5,)
    assert out["is_digit"].dtype == tf.bool
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    card = json.loads((path / "metrics.json").read_text())
    threshold = card["metrics"]["ood_threshold"]
    np.testing.assert_array_equal(out["is_digit"].numpy(), out["ood_score"].numpy() <= threshold)
    assert card["metrics"]["temperature"] > 0


def test_fit_temperature_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 10))
    probabilities = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in probabilities])

    assert digit_robust.fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


def test_expected_calibration_error_is_zero_for_calibrated_and_large_for_overconfident() -> None:
    probabilities = np.zeros((1000, 10))
    probabilities[:, 0] = 1.0
    labels = np.zeros(1000, int)
    assert digit_robust.expected_calibration_error(probabilities, labels) == 0.0
    labels[:300] = 1  # 70% right at confidence 1
    assert digit_robust.expected_calibration_error(probabilities, labels) == pytest.approx(0.3)


@pytest.mark.parametrize("name", list(digit_degrade.AUGMENTATIONS))
def test_degradation_keeps_shape_range_and_changes_images(name: str) -> None:
    rng = np.random.default_rng(0)
    images = np.zeros((4, 28, 28), np.float32)
    images[:, 6:22, 12:16] = 1.0

    out = digit_degrade.AUGMENTATIONS[name](images, rng)

    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images)


committed = pytest.mark.skipif(not COMMITTED.is_dir(), reason="classifier v2 not exported")


def _frames(pictures: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """The accepted pictures' 28x28 frames and how many the preprocessing refused."""
    frames, refused = [], 0
    for picture in pictures:
        try:
            frames.append(imaging.preprocess_upload(digit_sets.encode_png(picture), 10**7))
        except InvalidInput:
            refused += 1
    return np.asarray(frames, np.float32).reshape(-1, 28, 28, 1), refused


@committed
@pytest.mark.parametrize(
    ("kind", "least_rejected"),
    [
        ("uniform noise", 0.95),
        ("gaussian noise", 0.95),
        ("blank and nearly blank", 0.95),
        ("paper without ink", 0.95),
        ("scribbles", 0.5),
    ],
)
def test_committed_v2_rejects_non_digits(kind: str, least_rejected: float) -> None:
    pictures = digit_sets.NON_DIGIT_SETS[kind](40, 123)
    frames, refused = _frames(pictures)
    flagged = 0
    if len(frames):
        flagged = int(
            (~load_signature(COMMITTED)(images=tf.constant(frames))["is_digit"]).numpy().sum()
        )

    assert (refused + flagged) / len(pictures) >= least_rejected


@committed
def test_committed_v2_flags_letters_and_raw_noise_and_accepts_mnist() -> None:
    signature = load_signature(COMMITTED)
    glyphs, _names = digit_sets.font_non_digits(glyphs="AHwKMNWXYkmnrvx#@%&")
    frames, _ = _frames(glyphs[:200])
    letters = signature(images=tf.constant(frames))["is_digit"].numpy()
    noise = np.random.default_rng(0).random((200, 28, 28, 1)).astype(np.float32)
    digits = mnist.load_mnist(as_float=True, download=False).test.images[:1000]

    assert (~letters).mean() >= 0.5
    assert not signature(images=tf.constant(noise))["is_digit"].numpy().any()
    assert signature(images=tf.constant(digits))["is_digit"].numpy().mean() >= 0.98


@committed
def test_committed_v2_reads_rows_of_mnist_test_digits() -> None:
    test = mnist.load_mnist(as_float=True, download=False).test
    rng = np.random.default_rng(1)
    signature = load_signature(COMMITTED)
    right = 0
    for _ in range(20):
        idx = rng.choice(len(test), 4, replace=False)
        picture, _ = digit_sets.mnist_row(test.images[idx, ..., 0], rng)
        segments = reading.segment_row(picture.astype(np.float32) / 255.0)
        if len(segments) != 4:
            continue
        images = tf.constant(np.stack([s.image for s in segments])[..., None])
        read = signature(images=images)["probabilities"].numpy().argmax(axis=1)
        right += bool((read == test.labels[idx]).all())

    assert right >= 17
