"""MNIST-style preprocessing of uploads, the pixel limit before decoding, PNG output."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service import imaging
from service.errors import InvalidInput, PayloadTooLarge
from tests.service.helpers import digit_image, encode


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header is rewritten to claim width x height pixels."""
    data = bytearray(encode(np.zeros((8, 8), np.uint8)))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_preprocess_upload_makes_light_digit_centred_in_20px_box() -> None:
    frame = imaging.preprocess_upload(encode(digit_image()), max_pixels=10**6)
    assert frame.shape == (28, 28) and frame.dtype == np.float32
    assert frame.max() == pytest.approx(1.0, abs=0.05)
    assert frame[0].max() == 0.0 and frame[:, 0].max() == 0.0  # dark background
    rows = np.flatnonzero(frame.max(axis=1) > 0.5)
    assert rows[-1] - rows[0] + 1 == pytest.approx(20, abs=1)  # longer side scaled to 20 px
    ys, xs = np.indices(frame.shape)
    cy, cx = (ys * frame).sum() / frame.sum(), (xs * frame).sum() / frame.sum()
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0


def test_preprocess_upload_gives_same_frame_for_light_on_dark_and_dark_on_light() -> None:
    dark_on_light = imaging.preprocess_upload(encode(digit_image()), max_pixels=10**6)
    light_on_dark = imaging.preprocess_upload(
        encode(digit_image(dark_on_light=False)), max_pixels=10**6
    )
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-6)


def test_preprocess_upload_reads_jpeg_and_rgba() -> None:
    rgb = np.stack([digit_image()] * 3, axis=-1)
    assert imaging.preprocess_upload(encode(rgb, "JPEG"), max_pixels=10**6).max() > 0.9
    rgba = np.zeros((60, 40, 4), np.uint8)
    rgba[10:50, 18:22] = (0, 0, 0, 255)  # black strokes on a transparent background
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    assert imaging.preprocess_upload(buffer.getvalue(), max_pixels=10**6).max() > 0.9


def test_open_image_rejects_huge_image_from_header_before_decoding() -> None:
    bomb = _png_claiming(20000, 20000)
    assert len(bomb) < 200
    expected = r"image too large: Image size \(400000000 pixels\)"
    with pytest.raises(PayloadTooLarge, match=expected) as info:
        imaging.open_image(bomb, max_pixels=4096 * 4096)
    assert info.value.status_code == 413


def test_open_image_rejects_non_image_bytes() -> None:
    with pytest.raises(InvalidInput, match="not a readable PNG or JPEG"):
        imaging.open_image(b"GIF89a" + b"\x00" * 64, max_pixels=10**6)


def test_preprocess_upload_rejects_truncated_png() -> None:
    data = encode(digit_image((300, 300)))
    with pytest.raises(InvalidInput, match=r"image could not be decoded.*truncated"):
        imaging.preprocess_upload(data[: len(data) // 2], max_pixels=10**6)


def test_preprocess_upload_rejects_blank_image() -> None:
    with pytest.raises(InvalidInput, match="no digit found"):
        imaging.preprocess_upload(encode(np.full((50, 50), 200, np.uint8)), max_pixels=10**6)


def test_to_png_round_trips_bytes() -> None:
    image = np.linspace(0, 1, 784).reshape(28, 28)
    decoded = np.asarray(Image.open(io.BytesIO(imaging.to_png(image))))
    assert decoded.shape == (28, 28)
    np.testing.assert_array_equal(decoded, np.rint(image * 255).astype(np.uint8))


def test_open_image_rejects_image_over_configured_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="image too large: 2000x1000") as info:
        imaging.open_image(_png_claiming(2000, 1000), max_pixels=1_000_000)
    assert info.value.expected == "at most 1000000 pixels"
