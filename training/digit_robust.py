"""Classifier v2: ``digit_classifier`` fine-tuned from v1 for real inputs, calibrated, and able to
say "not a digit".

- Training: v1's weights, a few epochs at a low learning rate on MNIST's training images, of
  which 60% get one or two degradations from ``training.digit_degrade`` (blur, low resolution,
  stroke width, elastic distortion, contrast, noise, lighting), freshly drawn every epoch; the
  random shifts and rotations of v1 on top.
- Calibration: a temperature on the logits, fitted (NLL) on the validation split (the first
  5,000 MNIST test images).
- Not a digit: outlier exposure during fine-tuning (letters and symbols of one font family,
  noise and blank frames, with the uniform distribution as target) and ``ood_score`` = the
  free energy -logsumexp(logits) (config ``score="energy"``; ``"mahalanobis"``, the smallest
  squared Mahalanobis distance of the penultimate features to a class mean, was measured too
  and rejects noise and blank frames far worse); ``is_digit`` = ``ood_score <= threshold``,
  the threshold being the ``acceptance`` quantile of the validation split's scores.

All three live inside the SavedModel: ``images`` [N, 28, 28, 1] -> ``probabilities`` [N, 10],
``ood_score`` [N], ``is_digit`` [N].
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from scipy import optimize

from data import digit_ink
from training import digit_classifier, digit_degrade, digit_sets
from training.common import (
    REPO_ROOT,
    Exported,
    TrainResult,
    call_batched,
    count_parameters,
    export_saved_model,
    keras_verbosity,
    load_signature,
    set_seed,
    write_model_card,
)
from training.digit_classifier import IMAGE_SHAPE, NAME, ClassifierData

TASK = "digit-classifier-robust"
ECE_BINS = 15


@dataclass(frozen=True)
class RobustConfig:
    """Fine-tuning hyper-parameters; ``init_version``: the digit_classifier version to start from
    (its architecture is ``bn-cnn``); ``acceptance``: the share of validation digits accepted."""

    name: str
    init_version: int
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    label_smoothing: float
    clean_fraction: float
    shift: float
    rotation_degrees: float
    acceptance: float
    #: Training images (clean + degraded, half each) the Mahalanobis statistics are fitted on.
    ood_fit_images: int
    #: ``"energy"`` (-logsumexp of the logits) or ``"mahalanobis"`` (see the module's doc).
    score: str = "energy"
    #: Outlier exposure: letters and symbols of the fonts of this family (the other families
    #: are held out for measuring), and noise and blank 28x28 inputs, trained towards the
    #: uniform distribution with this weight; 0 turns it off.
    outlier_family: str = "DejaVu"
    outlier_weight: float = 0.5
    seed: int = 2


CONFIGS = {
    "default": RobustConfig(
        name="default",
        init_version=1,
        epochs=3,
        batch_size=128,
        learning_rate=5e-4,
        weight_decay=1e-4,
        label_smoothing=0.05,
        clean_fraction=0.4,
        shift=0.1,
        rotation_degrees=10.0,
        acceptance=0.995,
        ood_fit_images=30000,
    ),
}
# The command line's --config choices are "seed" and "default"; both mean the same here.
CONFIGS["seed"] = CONFIGS["default"]


def load_weights(model: keras.Model, path: Path) -> None:
    """Copy a bn-cnn SavedModel's weights (as exported by ``export_saved_model``) into ``model``."""
    loaded = tf.saved_model.load(str(path))
    # The augmentation layers' seed states were tracked with v1's weights; they are not weights.
    values = [v for v in loaded.variables if "seed_generator" not in v.name]
    if len(values) != len(model.weights):
        raise ValueError(f"{path}: {len(values)} variables, the model has {len(model.weights)}")
    for weight, value in zip(model.weights, values, strict=True):
        weight.assign(value.numpy())


def _base_config() -> digit_classifier.ClassifierConfig:
    return digit_classifier.CONFIGS["default"]


def outlier_images(config: RobustConfig, rng: np.random.Generator) -> np.ndarray:
    """Not-digits for outlier exposure, [N, 28, 28]: glyphs of ``outlier_family`` (no digit
    look-alikes) through the preprocessing (`data.digit_ink`), raw noise and blank frames."""
    glyphs = "".join(c for c in digit_sets.NON_DIGIT_GLYPHS if c not in digit_sets.LOOKALIKES)
    frames = []
    for size in (24, 48):
        pictures, _ = digit_sets.font_non_digits(glyphs, size, family=config.outlier_family)
        for picture in pictures:
            try:
                frames.append(digit_ink.mnist_style(picture.astype(np.float32) / 255.0))
            except digit_ink.NoDigitError:
                continue
    raw = [
        rng.random((1000, 28, 28)),
        np.clip(rng.normal(0.5, 0.25, (500, 28, 28)), 0, 1),
        (rng.random((500, 28, 28)) < rng.uniform(0.02, 0.3, (500, 1, 1))).astype(float),
        np.ones((100, 28, 28)) * rng.uniform(0, 1, (100, 1, 1)),
    ]
    return np.concatenate([np.asarray(frames).reshape(-1, 28, 28), *raw]).astype(np.float32)


def train(
    config: RobustConfig, data: ClassifierData, models_dir: Path | None = None
) -> TrainResult:
    """Fine-tune ``init_version`` on freshly degraded training images every epoch."""
    set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    models_dir = models_dir or REPO_ROOT / "models"
    model = digit_classifier.build_model(_base_config())
    load_weights(model, models_dir / NAME / str(config.init_version))
    trainer = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.RandomTranslation(config.shift, config.shift, fill_mode="constant"),
            keras.layers.RandomRotation(config.rotation_degrees / 360, fill_mode="constant"),
            model,
        ]
    )
    steps = config.epochs * int(np.ceil(len(data.train) / config.batch_size))
    rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=0.01)
    trainer.compile(
        optimizer=keras.optimizers.AdamW(rate, weight_decay=config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    labels = keras.utils.to_categorical(data.train.labels, 10)
    outliers = outlier_images(config, rng) if config.outlier_weight > 0 else np.zeros((0, 28, 28))
    print(f"outlier exposure: {len(outliers)} not-digits", flush=True)
    weights = np.concatenate(
        [np.ones(len(labels)), np.full(2 * len(outliers), config.outlier_weight)]
    ).astype(np.float32)
    targets = np.concatenate([labels, np.full((2 * len(outliers), 10), 0.1, np.float32)])
    validation = (data.validation.images, keras.utils.to_categorical(data.validation.labels, 10))
    history: dict[str, list[float]] = {}
    checkpoint = REPO_ROOT / "training" / "runs" / f"digit_robust-{len(data.train)}.weights.h5"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        images = digit_degrade.augment(data.train.images[..., 0], rng, config.clean_fraction)
        exposed = [digit_degrade.augment(outliers, rng, 0.5) for _ in range(2)]
        images = np.concatenate([images, *exposed]) if len(outliers) else images
        print(f"epoch {epoch + 1}/{config.epochs}: augmented", flush=True)
        fitted = trainer.fit(
            images[..., None],
            targets,
            sample_weight=weights,
            validation_data=validation,
            epochs=1,
            batch_size=config.batch_size,
            shuffle=True,
            verbose=keras_verbosity(),
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        # A long run on shared cores: keep each epoch's weights in case the export fails.
        model.save_weights(checkpoint)
        progress = {"history": history, "seconds": time.perf_counter() - start}
        checkpoint.with_suffix(".json").write_text(json.dumps(progress))
    seconds = time.perf_counter() - start
    return TrainResult(
        task=TASK, config=config, models={"classifier": model}, history=history, seconds=seconds
    )


def features_and_logits(model: keras.Model) -> tuple[keras.Model, Any]:
    """The penultimate-feature model and the final Dense layer (its softmax applied separately)."""
    dense = model.layers[-1]
    return keras.Model(model.inputs, model.layers[-2].output), dense


def _numpy_logits(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features_model, dense = features_and_logits(model)
    features = features_model.predict(images, batch_size=1000, verbose=0)
    kernel, bias = (np.asarray(w) for w in dense.weights)
    return features, features @ kernel + bias


@dataclass(frozen=True)
class Calibration:
    score: str
    temperature: float
    means: np.ndarray  # [10, F]
    precision: np.ndarray  # [F, F]
    threshold: float


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``labels``."""

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(labels)), labels].mean())

    found = optimize.minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded")
    return float(found.x)


def mahalanobis(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """The smallest squared Mahalanobis distance of each row to the class means, [N]."""
    diff = features[:, None, :] - means[None, :, :]
    return np.einsum("nkf,fg,nkg->nk", diff, precision, diff).min(axis=1)


def energy(logits: np.ndarray) -> np.ndarray:
    """The free energy -logsumexp(logits), [N]: high when no class has a large logit."""
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


def fit_calibration(model: keras.Model, config: RobustConfig, data: ClassifierData) -> Calibration:
    """The temperature, the score's statistics (Mahalanobis only) and the threshold."""
    val_features, val_logits = _numpy_logits(model, data.validation.images)
    temperature = fit_temperature(val_logits, data.validation.labels)
    width = val_features.shape[1]
    means, precision = np.zeros((10, width)), np.zeros((width, width))  # unused by "energy"
    if config.score == "energy":
        scores = energy(val_logits)
    elif config.score == "mahalanobis":
        means, precision = _mahalanobis_statistics(model, config, data)
        scores = mahalanobis(val_features, means, precision)
    else:
        raise ValueError(f"unknown score {config.score!r}")
    threshold = float(np.quantile(scores, config.acceptance))
    return Calibration(
        config.score,
        temperature,
        means.astype(np.float32),
        precision.astype(np.float32),
        threshold,
    )


def _mahalanobis_statistics(
    model: keras.Model, config: RobustConfig, data: ClassifierData
) -> tuple[np.ndarray, np.ndarray]:
    """Class means [10, F] and the shared precision [F, F] of the penultimate features."""
    rng = np.random.default_rng(config.seed + 1)
    n = min(config.ood_fit_images // 2, len(data.train))
    clean = data.train.images[:n]
    degraded = digit_degrade.augment(clean[..., 0], rng, clean_fraction=0.0)[..., None]
    features, _ = _numpy_logits(model, np.concatenate([clean, degraded]))
    labels = np.concatenate([data.train.labels[:n]] * 2)
    means = np.stack([features[labels == k].mean(axis=0) for k in range(10)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    # A small ridge: ReLU features have dead units, whose variance is zero.
    covariance += np.eye(len(covariance)) * 1e-3 * np.trace(covariance) / len(covariance)
    return means, np.linalg.inv(covariance)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """ECE over ``ECE_BINS`` equal-width bins of the top probability."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def serving_function(model: keras.Model, calibration: Calibration) -> Any:
    features_model, dense = features_and_logits(model)
    means = tf.constant(calibration.means)
    precision = tf.constant(calibration.precision)
    temperature = tf.constant(calibration.temperature, tf.float32)
    threshold = tf.constant(calibration.threshold, tf.float32)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        features = features_model(images, training=False)
        logits = tf.matmul(features, dense.kernel) + dense.bias
        if calibration.score == "energy":
            score = -tf.reduce_logsumexp(logits, axis=1)
        else:
            diff = features[:, None, :] - means[None, :, :]
            distances = tf.einsum("nkf,fg,nkg->nk", diff, precision, diff)
            score = tf.reduce_min(distances, axis=1)
        return {
            "probabilities": tf.nn.softmax(logits / temperature),
            "ood_score": score,
            "is_digit": score <= threshold,
        }

    return serve


def measure(signature: Any, data: ClassifierData) -> dict[str, float]:
    """Accuracy, calibration and digit acceptance through the exported signature."""
    metrics = digit_classifier.measure(signature, data)
    test = call_batched(signature, data.test.images, "images", "probabilities")
    metrics["test_ece_last_5000"] = expected_calibration_error(test, data.test.labels)
    full = call_batched(signature, data.test_full.images, "images", "probabilities")
    metrics["test_ece"] = expected_calibration_error(full, data.test_full.labels)
    accepted = call_batched(signature, data.test.images, "images", "is_digit")
    metrics["test_digits_accepted_last_5000"] = float(accepted.mean())
    accepted_full = call_batched(signature, data.test_full.images, "images", "is_digit")
    metrics["test_digits_accepted"] = float(accepted_full.mean())
    return metrics


def export(
    result: TrainResult, data: ClassifierData, models_dir: Path, version: int
) -> list[Exported]:
    model = result.models["classifier"]
    config: RobustConfig = result.config
    calibration = fit_calibration(model, config, data)
    _, raw_logits = _numpy_logits(model, data.test_full.images)
    path = models_dir / NAME / str(version)
    export_saved_model(
        path,
        [model],
        serving_function(model, calibration),
        "images",
        tf.TensorSpec([None, *IMAGE_SHAPE]),
    )
    signature = load_signature(path)
    metrics = measure(signature, data)
    uncalibrated = tf.nn.softmax(raw_logits).numpy()
    metrics["test_ece_uncalibrated"] = expected_calibration_error(
        uncalibrated, data.test_full.labels
    )
    metrics["temperature"] = calibration.temperature
    metrics["ood_threshold"] = calibration.threshold
    plot_files = digit_classifier.plot_card(signature, data, result.history, path)
    write_model_card(
        path,
        name=NAME,
        version=version,
        task="MNIST-style digit classification for real inputs, calibrated, with a "
        "not-a-digit score",
        config=config,
        parameters=count_parameters(model),
        training_seconds=result.seconds,
        data=digit_classifier._data_card(data),
        metrics=metrics,
        summary=SUMMARY,
        targets={
            "test_accuracy": ">= 0.996 on all 10,000 test images",
            "test_ece": "<= 0.01 (temperature fitted on the validation split)",
            "test_digits_accepted": ">= 0.99 of MNIST test digits have is_digit true",
        },
        plots=plot_files,
        command=f"python -m training {TASK}",
    )
    # The server's primary output of a version with several (service.registry).
    card_path = path / "metrics.json"
    card = json.loads(card_path.read_text())
    card["primary_output"] = "probabilities"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return [Exported(NAME, version, path, metrics)]


def evaluate(path: Path, data: ClassifierData) -> dict[str, float]:
    return measure(load_signature(path), data)


SUMMARY = (
    "Input: `images` float32 [N, 28, 28, 1] in [0, 1] (light digit on black, MNIST framing; "
    "the service's `service.imaging` makes that from photos and scans). Outputs: "
    "`probabilities` float32 [N, 10] (softmax of the logits divided by a temperature fitted "
    "on the validation split), `ood_score` float32 [N] (the free energy -logsumexp(logits); "
    "higher = less digit-like) and `is_digit` bool [N] (`ood_score <= ood_threshold`, the "
    "threshold accepting 99.5% of the validation split). Fine-tuned from v1 on MNIST training "
    "images with degradations (`training.digit_degrade`) and with outlier exposure: letters "
    "and symbols of the DejaVu fonts (no digit look-alikes), noise and blank frames, trained "
    "towards the uniform distribution. Figures on fonts, degraded MNIST, other handwriting and "
    "non-digits: `python -m training.digits_wild` (README, section Digits in the wild)."
)
