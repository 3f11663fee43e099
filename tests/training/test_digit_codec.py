"""The codec task: the notebook's autoencoder, and the encoder/decoder pair it exports."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from training import digit_codec


def test_build_models_seed_config_matches_notebook_parameter_count() -> None:
    encoder, decoder = digit_codec.build_models(digit_codec.CONFIGS["seed"])

    assert encoder.count_params() + decoder.count_params() == 2_969
    assert encoder.output_shape == (None, 32)


def test_build_models_default_code_fits_in_64_bytes_with_header() -> None:
    encoder, _ = digit_codec.build_models(digit_codec.CONFIGS["default"])

    assert encoder.output_shape[-1] + digit_codec.HEADER_BYTES <= 64


def _signature(path):
    loaded = tf.saved_model.load(str(path))
    assert list(loaded.signatures) == ["serving_default"]
    return loaded, loaded.signatures["serving_default"]


def test_export_tiny_run_round_trips_uint8_code(tmp_path, tiny_mnist) -> None:
    config = dataclasses.replace(digit_codec.CONFIGS["default"], epochs=1, batch_size=16)
    result = digit_codec.train(config, tiny_mnist)

    exported = digit_codec.export(result, tiny_mnist, tmp_path, 2)

    assert [e.name for e in exported] == ["digit_encoder", "digit_decoder"]
    _enc, encode = _signature(tmp_path / "digit_encoder" / "2")
    _dec, decode = _signature(tmp_path / "digit_decoder" / "2")
    [image_spec] = encode.structured_input_signature[1].values()
    assert image_spec.name == "images" and image_spec.dtype == tf.float32
    [code_spec] = decode.structured_input_signature[1].values()
    assert code_spec.name == "code" and code_spec.dtype == tf.uint8
    assert code_spec.shape.as_list() == [None, config.latent]
    code = encode(images=tf.constant(tiny_mnist.test.images[:4]))["code"]
    assert code.dtype == tf.uint8 and code.shape == (4, config.latent)
    images = decode(code=code)["images"].numpy()
    assert images.dtype == np.float32 and images.shape == (4, 28, 28, 1)
    assert np.all(np.isfinite(images)) and images.min() >= 0.0 and images.max() <= 1.0
    assert exported[0].metrics["bytes_per_code"] == config.latent + 3


def test_export_seed_config_quantises_relu_latent_within_its_scale(tmp_path, tiny_mnist) -> None:
    config = dataclasses.replace(digit_codec.CONFIGS["seed"], epochs=1)
    result = digit_codec.train(config, tiny_mnist)
    digit_codec.export(result, tiny_mnist, tmp_path, 1)
    _enc, encode = _signature(tmp_path / "digit_encoder" / "1")

    code = encode(images=tf.constant(tiny_mnist.train.images[:16]))["code"].numpy()

    latent = result.models["encoder"].predict(tiny_mnist.train.images[:16], verbose=0)
    expected = np.round(np.clip(latent / result.extras["scale"], 0, 1) * 255)
    np.testing.assert_allclose(code, expected, atol=1)
    assert code.shape == (16, 32)
