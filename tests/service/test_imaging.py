"""MNIST-style preprocessing of uploads, the pixel limit before decoding, PNG output."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

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


def _drawn_four(size: int = 96) -> np.ndarray:
    """A pen-drawn '4' (uint8, dark on white), strokes 7% of the picture wide."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    s = size / 96
    width = max(2, round(7 * s))
    draw.line([(60 * s, 14 * s), (20 * s, 58 * s), (76 * s, 58 * s)], fill=0, width=width)
    draw.line([(60 * s, 14 * s), (60 * s, 84 * s)], fill=0, width=width)
    return np.asarray(image)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28x28 frames (1 = identical up to brightness)."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _clean_frame() -> np.ndarray:
    return imaging.preprocess_upload(encode(_drawn_four()), max_pixels=10**6)


@pytest.mark.parametrize(("low", "sigma"), [(200, 4), (170, 8), (90, 12)])
def test_preprocess_upload_removes_ramped_lighting_and_noise(low: int, sigma: float) -> None:
    rng = np.random.default_rng(0)
    ink = 1.0 - _drawn_four() / 255.0
    paper = np.linspace(low, 255, ink.shape[1])[None, :] * np.ones_like(ink)
    pixels = paper * (1 - ink) + 0.15 * paper * ink + rng.normal(0, sigma, ink.shape)
    photo = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    frame = imaging.preprocess_upload(encode(photo), max_pixels=10**6)

    assert _similarity(frame, _clean_frame()) > 0.9
    assert frame[:3].max() == 0.0 and frame[-3:].max() == 0.0  # no lit paper left as ink


def test_preprocess_upload_drops_specks_and_paper_edge() -> None:
    rng = np.random.default_rng(1)
    photo = _drawn_four().copy()
    ys, xs = rng.integers(0, 96, (2, 40))
    photo[ys, xs] = 0  # dust
    photo[:, :5] = 30  # the dark desk beside the sheet
    photo[-4:, :] = 60  # a shadow along the bottom

    frame = imaging.preprocess_upload(encode(photo), max_pixels=10**6)

    assert _similarity(frame, _clean_frame()) > 0.95


def test_preprocess_upload_composites_alpha_on_white() -> None:
    ink = 255 - _drawn_four()
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., 3] = ink  # black ink whose opacity is the stroke, the rest transparent
    la = np.stack([np.zeros_like(ink), ink], axis=-1)
    for pixels, mode in ((rgba, "RGBA"), (la, "LA")):
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")

        frame = imaging.preprocess_upload(buffer.getvalue(), max_pixels=10**6)

        assert _similarity(frame, _clean_frame()) > 0.99


def test_preprocess_upload_turns_photo_upright_from_exif() -> None:
    upright = Image.fromarray(_drawn_four())
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as the camera's sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)

    frame = imaging.preprocess_upload(buffer.getvalue(), max_pixels=10**6)

    without_exif = imaging.preprocess_upload(encode(np.asarray(stored), "JPEG"), 10**6)
    assert _similarity(frame, _clean_frame()) > 0.95
    assert _similarity(without_exif, _clean_frame()) < 0.6


def test_preprocess_upload_reads_16_bit_and_palette_png() -> None:
    deep = (_drawn_four().astype(np.uint16) * 257).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I")
    palette = io.BytesIO()
    Image.fromarray(_drawn_four()).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(
        palette, format="PNG"
    )
    assert Image.open(io.BytesIO(palette.getvalue())).mode == "P"

    for data in (buffer.getvalue(), palette.getvalue()):
        frame = imaging.preprocess_upload(data, max_pixels=10**6)
        assert _similarity(frame, _clean_frame()) > 0.99


def test_preprocess_upload_refuses_faint_dust_and_inkless_paper() -> None:
    rng = np.random.default_rng(2)
    ramp = np.linspace(150, 255, 80)[None, :] * np.ones((80, 1))
    for pixels in (
        ramp + rng.normal(0, 6, ramp.shape),  # a photo of blank paper
        np.full((80, 80), 230.0) + rng.normal(0, 2, (80, 80)),  # faint noise
    ):
        upload = encode(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
        with pytest.raises(InvalidInput, match="no digit found"):
            imaging.preprocess_upload(upload, max_pixels=10**6)
    dust = np.full((80, 80), 240, np.uint8)
    dust[40, 40] = dust[10, 60] = 0
    with pytest.raises(InvalidInput, match="no digit found"):
        imaging.preprocess_upload(encode(dust), max_pixels=10**6)


def _tight(picture: np.ndarray) -> np.ndarray:
    """A picture cropped to its ink (pixels darker than the paper): no margin at all."""
    rows = np.flatnonzero((picture < 128).any(axis=1))
    cols = np.flatnonzero((picture < 128).any(axis=0))
    return picture[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _drawn_seven(size: int = 96) -> np.ndarray:
    """A pen-drawn '7' cropped tightly: its bar runs along the whole top edge."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    width = max(2, round(0.08 * size))
    draw.line([(10, 12), (84, 12), (40, 88)], fill=0, width=width)
    return _tight(np.asarray(image))


@pytest.mark.parametrize("dark_on_light", [True, False])
def test_preprocess_upload_reads_digit_touching_every_edge(dark_on_light: bool) -> None:
    tight = _tight(_drawn_four())
    assert (tight[0] < 128).any() and (tight[:, -1] < 128).any()  # ink on the edges
    picture = tight if dark_on_light else 255 - tight

    frame = imaging.preprocess_upload(encode(picture), max_pixels=10**6)

    assert _similarity(frame, _clean_frame()) > 0.95


def test_preprocess_upload_keeps_a_bar_along_the_top_edge() -> None:
    seven = _drawn_seven()
    margin = np.pad(seven, 12, constant_values=255)

    frame = imaging.preprocess_upload(encode(seven), max_pixels=10**6)

    assert (seven[0] < 128).mean() > 0.8  # the bar lies along the top edge
    assert _similarity(frame, imaging.preprocess_upload(encode(margin), 10**6)) > 0.95


def test_preprocess_upload_reads_ink_filling_most_of_the_picture() -> None:
    # A bold digit scaled up with no margin (scikit-learn's 8x8 scans upscaled): more than a
    # third of the pixels are ink and every side is touched.
    glyph = np.zeros((8, 8))
    glyph[1:7, 1:3] = glyph[1:7, 5:7] = glyph[0:2, 1:7] = glyph[6:8, 1:7] = 1.0  # a '0'
    big = Image.fromarray(glyph.astype(np.float32), mode="F").resize(
        (64, 64), Image.Resampling.BILINEAR
    )
    picture = np.clip(np.rint(255 * (1 - np.asarray(big))), 0, 255).astype(np.uint8)
    assert (picture < 128).mean() > 0.35

    frame = imaging.preprocess_upload(encode(picture), max_pixels=10**6)

    margin = imaging.preprocess_upload(encode(np.pad(picture, 16, constant_values=255)), 10**6)
    assert _similarity(frame, margin) > 0.9  # the blur cut off at the edges differs


@pytest.mark.parametrize("angle", [0.0, 0.7, 1.6, 2.5, 3.9, 5.5])
def test_preprocess_upload_refuses_lit_blank_paper(angle: float) -> None:
    rng = np.random.default_rng(int(angle * 10))
    y, x = np.mgrid[0:96, 0:128]
    t = np.cos(angle) * x / 128 + np.sin(angle) * y / 96
    t = (t - t.min()) / np.ptp(t)
    pixels = 110 + 145 * t + rng.normal(0, 8, t.shape)  # a steep lighting ramp and noise

    upload = encode(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))

    with pytest.raises(InvalidInput, match="no digit found"):
        imaging.preprocess_upload(upload, max_pixels=10**6)
