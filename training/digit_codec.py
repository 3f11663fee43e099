"""Part 2 of the notebook: a convolutional autoencoder used as a compression codec for MNIST
digits, exported as two SavedModels that speak one format:

* ``digit_encoder``: ``images`` float32 [N, 28, 28, 1] in [0, 1] -> ``code`` uint8 [N, K];
* ``digit_decoder``: ``code`` uint8 [N, K] -> ``images`` float32 [N, 28, 28, 1] in [0, 1].

The quantisation is inside the models: the encoder's latent z in [0, scale] becomes
``round(255 * z / scale)`` and the decoder reads ``code * scale / 255``. The service prepends a
3-byte header, so a code costs K + 3 bytes (K + 3 <= 64). To make the decoder robust to the
rounding, the default config trains with uniform noise of one quantisation step on the latent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training import plots
from training.common import (
    Exported,
    TrainResult,
    call_batched,
    count_parameters,
    export_saved_model,
    history_dict,
    keras_verbosity,
    load_signature,
    set_seed,
    write_model_card,
)
from training.digit_classifier import ClassifierData as CodecData
from training.digit_classifier import load_data

__all__ = ["CONFIGS", "CodecConfig", "CodecData", "build_models", "export", "load_data", "train"]

ENCODER = "digit_encoder"
DECODER = "digit_decoder"
TASK = "digit-codec"
IMAGE_SHAPE = (28, 28, 1)
#: Bytes the service puts in front of the latent: format (1) + encoder version (2).
HEADER_BYTES = 3
MAX_CODE_BYTES = 64


@dataclass(frozen=True)
class CodecConfig:
    """Hyperparameters. ``architecture``: ``"notebook"`` (2,969 parameters, a 4x4x2 ReLU latent)
    or ``"conv-dense"`` (strided convolutions, a dense sigmoid bottleneck of ``latent`` units)."""

    name: str
    architecture: str
    latent: int
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    #: Cosine decay (after a 5% warm-up) to this; equal to ``learning_rate`` for a constant rate.
    final_learning_rate: float
    width: int = 32
    #: Train with uniform noise of +-half a quantisation step on the latent.
    quantisation_noise: bool = False
    seed: int = 1


CONFIGS = {
    # The notebook: Adadelta with learning rate 1.0, MSE, 30 epochs of batch 128.
    "seed": CodecConfig(
        name="seed",
        architecture="notebook",
        latent=32,
        epochs=30,
        batch_size=128,
        optimizer="adadelta",
        learning_rate=1.0,
        final_learning_rate=1.0,
    ),
    "default": CodecConfig(
        name="default",
        architecture="conv-dense",
        latent=61,
        epochs=20,
        batch_size=128,
        optimizer="adam",
        learning_rate=2e-3,
        final_learning_rate=2e-5,
        width=32,
        quantisation_noise=True,
    ),
}


def build_models(config: CodecConfig) -> tuple[keras.Model, keras.Model]:
    """``(encoder, decoder)``: images -> latent float32 [N, K] -> images, unquantised."""
    images = keras.Input(IMAGE_SHAPE, name="images")
    latent = keras.Input((config.latent,), name="latent")
    if config.architecture == "notebook":
        if config.latent != 32:
            raise ValueError("the notebook's autoencoder has a 4x4x2 = 32 latent")
        h = images
        for filters in (16, 8, 2):
            h = layers.Conv2D(filters, 3, activation="relu", padding="same")(h)
            h = layers.MaxPooling2D(2, padding="same")(h)
        encoded = layers.Flatten()(h)
        d = layers.Reshape((4, 4, 2))(latent)
        d = layers.Conv2D(2, 3, activation="relu", padding="same")(d)
        d = layers.UpSampling2D()(d)
        d = layers.Conv2D(8, 3, activation="relu", padding="same")(d)
        d = layers.UpSampling2D()(d)
        d = layers.Conv2D(16, 3, activation="relu")(d)
        d = layers.UpSampling2D()(d)
        decoded = layers.Conv2D(1, 3, activation="sigmoid", padding="same")(d)
    elif config.architecture == "conv-dense":
        w = config.width
        h = layers.Conv2D(w, 3, strides=2, padding="same", activation="gelu")(images)
        h = layers.Conv2D(2 * w, 3, strides=2, padding="same", activation="gelu")(h)
        h = layers.Flatten()(h)
        h = layers.Dense(256, activation="gelu")(h)
        encoded = layers.Dense(config.latent, activation="sigmoid")(h)
        d = layers.Dense(256, activation="gelu")(latent)
        d = layers.Dense(7 * 7 * 2 * w, activation="gelu")(d)
        d = layers.Reshape((7, 7, 2 * w))(d)
        d = layers.Conv2DTranspose(2 * w, 3, strides=2, padding="same", activation="gelu")(d)
        d = layers.Conv2DTranspose(w, 3, strides=2, padding="same", activation="gelu")(d)
        decoded = layers.Conv2D(1, 3, padding="same", activation="sigmoid")(d)
    else:
        raise ValueError(f"unknown architecture {config.architecture!r}")
    if config.latent + HEADER_BYTES > MAX_CODE_BYTES:
        raise ValueError(f"a latent of {config.latent} bytes + header exceeds {MAX_CODE_BYTES}")
    return (
        keras.Model(images, encoded, name=ENCODER),
        keras.Model(latent, decoded, name=DECODER),
    )


@keras.saving.register_keras_serializable(package="training")
class QuantisationNoise(layers.Layer):
    """Adds U(-step/2, step/2) while training, so the decoder learns to read rounded codes."""

    def __init__(self, step: float = 1 / 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.seed_generator = keras.random.SeedGenerator(0)

    def call(self, z: Any, training: bool = False) -> Any:
        if not training:
            return z
        noise = keras.random.uniform(
            keras.ops.shape(z), -self.step / 2, self.step / 2, seed=self.seed_generator
        )
        return z + noise

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "step": self.step}


def _optimizer(config: CodecConfig, steps: int) -> keras.optimizers.Optimizer:
    if config.optimizer == "adadelta":
        return keras.optimizers.Adadelta(config.learning_rate)
    if config.optimizer != "adam":
        raise ValueError(f"unknown optimizer {config.optimizer!r}")
    rate: Any = config.learning_rate
    if config.final_learning_rate != config.learning_rate:
        warmup = max(1, steps // 20)
        rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 20,
            decay_steps=max(1, steps - warmup),
            alpha=config.final_learning_rate / config.learning_rate,
            warmup_target=config.learning_rate,
            warmup_steps=warmup,
        )
    return keras.optimizers.Adam(rate)


def train(config: CodecConfig, data: CodecData) -> TrainResult:
    """Fit the autoencoder (images -> images, MSE) on the training split."""
    set_seed(config.seed)
    encoder, decoder = build_models(config)
    images = keras.Input(IMAGE_SHAPE)
    z = encoder(images)
    if config.quantisation_noise:
        z = QuantisationNoise()(z)
    autoencoder = keras.Model(images, decoder(z))
    steps = config.epochs * int(np.ceil(len(data.train) / config.batch_size))
    autoencoder.compile(optimizer=_optimizer(config, steps), loss="mse")
    start = time.perf_counter()
    history = autoencoder.fit(
        data.train.images,
        data.train.images,
        validation_data=(data.validation.images, data.validation.images),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=keras_verbosity(),
    )
    seconds = time.perf_counter() - start
    # The quantisation range: [0, 1] for the sigmoid bottleneck; for the notebook's unbounded
    # ReLU latent, the largest value seen on the training images (larger ones are clipped).
    if config.architecture == "notebook":
        latents = encoder.predict(data.train.images, batch_size=1000, verbose=0)
        scale = float(max(latents.max(), 1e-6))
    else:
        scale = 1.0
    return TrainResult(
        task=TASK,
        config=config,
        models={"encoder": encoder, "decoder": decoder},
        history=history_dict(history),
        seconds=seconds,
        extras={"scale": scale},
    )


def _export_pair(
    encoder: keras.Model, decoder: keras.Model, scale: float, encoder_path: Path, decoder_path: Path
) -> None:
    latent = encoder.output_shape[-1]

    def encode(images: tf.Tensor) -> dict[str, tf.Tensor]:
        z = encoder(images, training=False)
        q = tf.round(tf.clip_by_value(z / scale, 0.0, 1.0) * 255.0)
        return {"code": tf.cast(q, tf.uint8)}

    def decode(code: tf.Tensor) -> dict[str, tf.Tensor]:
        z = tf.cast(code, tf.float32) * (scale / 255.0)
        images = decoder(z, training=False)
        return {"images": tf.clip_by_value(images, 0.0, 1.0)}

    export_saved_model(
        encoder_path, [encoder], encode, "images", tf.TensorSpec([None, *IMAGE_SHAPE])
    )
    export_saved_model(
        decoder_path, [decoder], decode, "code", tf.TensorSpec([None, latent], tf.uint8)
    )


def round_trip(encoder: Any, decoder: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, decoded)`` through the exported signatures: what a client of the service gets."""
    codes = call_batched(encoder, images, "images", "code")
    decoded = call_batched(decoder, codes, "code", "images")
    return codes, decoded


def measure(encoder: Any, decoder: Any, data: CodecData) -> dict[str, float]:
    """Size and quality of the uint8 code on the test split (the notebook's 5,000 digits)."""
    codes, decoded = round_trip(encoder, decoder, data.test.images)
    mse = float(np.mean((decoded.astype(np.float64) - data.test.images) ** 2))
    return {
        "bytes_per_code": float(codes.shape[1] + HEADER_BYTES),
        "latent_bytes": float(codes.shape[1]),
        "test_mse": mse,
        "test_psnr_db": float(10 * np.log10(1 / mse)),
    }


def export(result: TrainResult, data: CodecData, models_dir: Path, version: int) -> list[Exported]:
    """Write both SavedModels, measure the round trip, plot, write both model cards."""
    encoder, decoder = result.models["encoder"], result.models["decoder"]
    encoder_path = models_dir / ENCODER / str(version)
    decoder_path = models_dir / DECODER / str(version)
    _export_pair(encoder, decoder, result.extras["scale"], encoder_path, decoder_path)
    encode, decode = load_signature(encoder_path), load_signature(decoder_path)
    metrics = measure(encode, decode, data)
    shown = data.test.images[:10]
    codes, decoded = round_trip(encode, decode, shown)
    exported = []
    for name, path, model in ((ENCODER, encoder_path, encoder), (DECODER, decoder_path, decoder)):
        plot_files = [
            plots.reconstructions(shown, decoded, codes, path / "reconstructions.png"),
            plots.loss_curves(result.history, path / "loss.png", log=True),
        ]
        write_model_card(
            path,
            name=name,
            version=version,
            task=_TASKS[name],
            config=result.config,
            parameters=count_parameters(model),
            training_seconds=result.seconds,
            data={
                "source": data.source,
                "sha256": data.sha256,
                "splits": {
                    "train": len(data.train),
                    "validation": len(data.validation),
                    "test": len(data.test),
                },
            },
            metrics={**metrics, "latent_scale": result.extras["scale"]},
            summary=_summary(name, version, int(metrics["latent_bytes"])),
            targets={
                "bytes_per_code": "<= 64 (notebook: 32 floats, 128 bytes)",
                "test_psnr_db": ">= 25.6 (notebook: 15.8)",
                "test_mse": "notebook: 0.0263",
            },
            plots=plot_files,
            command=f"python -m training {TASK} --config {result.config.name}",
        )
        exported.append(Exported(name, version, path, metrics))
    return exported


def evaluate(encoder_path: Path, decoder_path: Path, data: CodecData) -> dict[str, float]:
    """Re-measure an exported encoder/decoder pair, independent of training."""
    return measure(load_signature(encoder_path), load_signature(decoder_path), data)


_TASKS = {
    ENCODER: "MNIST digit compression, encoder: 28x28 grey image -> uint8 latent code",
    DECODER: "MNIST digit compression, decoder: uint8 latent code -> 28x28 grey image",
}


def _summary(name: str, version: int, latent: int) -> str:
    pair = DECODER if name == ENCODER else ENCODER
    return (
        f"One half of the digit codec; its other half is `{pair}` v{version}, trained with it. "
        f"The encoder maps `images` float32 [N, 28, 28, 1] in [0, 1] to `code` uint8 "
        f"[N, {latent}]; the decoder maps that code back to `images` float32 [N, 28, 28, 1] in "
        f"[0, 1]. The quantisation (latent in [0, scale] -> round(255 * z / scale)) is inside the "
        f"SavedModels. With the service's 3-byte header (format, encoder version) a compressed "
        f"digit is {latent + HEADER_BYTES} bytes. `test_mse` and `test_psnr_db` "
        f"(10 log10(1 / MSE), pixels in [0, 1]) are measured on the notebook's 5,000 test digits "
        f"through both exported signatures, i.e. through the uint8 code the service sends."
    )
