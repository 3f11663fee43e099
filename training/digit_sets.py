"""Pictures unlike MNIST's, generated on the fly (never stored): digits rendered from the fonts
installed on the machine, MNIST test digits photographed on unevenly lit paper, the 8x8 scans of
scikit-learn's ``load_digits``, rows of digits, and things that are not digits (letters and
symbols, noise, blank and nearly blank pictures, paper without ink, scribbles).

Every picture is a uint8 grayscale array, as a user would upload it (encode it with
``encode_png``); the labelled sets return ``(pictures, labels)``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
_CANVAS = 64
#: Letters that are drawn like a digit in many typefaces (O/0, I/l/1, S/5, Z/2, B/8, g/q/9, ...).
LOOKALIKES = frozenset("OoDQIilJjSsZzBbgqGT|")
NON_DIGIT_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" + "+-*/=?#@%&$<>()[]{}!~^"


def fonts() -> list[Path]:
    """The TrueType/OpenType fonts installed (DejaVu in the container), math fonts left out."""
    found = sorted(
        p
        for d in FONT_DIRS
        if d.is_dir()
        for p in d.rglob("*")
        if p.suffix.lower() in (".ttf", ".otf") and "Math" not in p.name
    )
    return found


def render_text(
    text: str,
    font: Path,
    size: int,
    *,
    dark_on_light: bool = True,
    pad: int = 12,
) -> np.ndarray:
    """``text`` in ``font`` at ``size`` px, on a canvas with ``pad`` px of paper around it."""
    face = ImageFont.truetype(str(font), size)
    left, top, right, bottom = (round(v) for v in face.getbbox(text))
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    paper, ink = (255, 0) if dark_on_light else (0, 255)
    image = Image.new("L", (width, height), paper)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, fill=ink, font=face)
    return np.asarray(image)


def font_digits(sizes: tuple[int, ...] = (24, 40, 64)) -> tuple[list[np.ndarray], np.ndarray]:
    """Every digit in every installed font and size, in both polarities."""
    pictures, labels = [], []
    for font in fonts():
        for size in sizes:
            for dark in (True, False):
                for digit in range(10):
                    pictures.append(render_text(str(digit), font, size, dark_on_light=dark))
                    labels.append(digit)
    return pictures, np.asarray(labels)


def font_non_digits(
    glyphs: str = NON_DIGIT_GLYPHS, size: int = 40, family: str = ""
) -> tuple[list[np.ndarray], list[str]]:
    """Letters and symbols in every installed font whose file name contains ``family``, dark
    on light; the glyph of each."""
    pictures, names = [], []
    for font in (f for f in fonts() if family in f.name):
        for glyph in glyphs:
            pictures.append(render_text(glyph, font, size))
            names.append(glyph)
    return pictures, names


def on_paper(
    ink: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: int = 3,
    ramp: tuple[float, float] = (170.0, 255.0),
    noise: float = 8.0,
) -> np.ndarray:
    """A light-on-dark ink image (in [0, 1]) as a photo: dark ink on paper whose brightness
    ramps from ``ramp[0]`` to ``ramp[1]`` in a random direction, with sensor noise."""
    big = np.asarray(
        Image.fromarray(ink.astype(np.float32), mode="F").resize(
            (ink.shape[1] * scale, ink.shape[0] * scale), Image.Resampling.BILINEAR
        )
    )
    big = np.clip(big, 0.0, 1.0)
    height, width = big.shape
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width]
    t = np.cos(angle) * x / width + np.sin(angle) * y / height
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    paper = ramp[0] + (ramp[1] - ramp[0]) * t
    ink_level = 0.15 * paper  # ink is dark but lit by the same light
    pixels = paper * (1 - big) + ink_level * big + rng.normal(0, noise, big.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def mnist_photos(
    images: np.ndarray,
    seed: int = 0,
    ramp: tuple[float, float] = (170.0, 255.0),
    noise: float = 8.0,
) -> list[np.ndarray]:
    """MNIST-style images [N, 28, 28] photographed on unevenly lit paper (``on_paper``)."""
    rng = np.random.default_rng(seed)
    padded = np.pad(images, ((0, 0), (6, 6), (6, 6)))
    return [on_paper(im, rng, ramp=ramp, noise=noise) for im in padded]


def sklearn_digits(order: int, margin: int = 2) -> tuple[list[np.ndarray], np.ndarray]:
    """scikit-learn's 1,797 handwritten 8x8 digits (UCI) with ``margin`` pixels of paper around
    them, upscaled 8x (64x64 without a margin, 96x96 with 2 px) dark on light, smooth
    (``order`` 1, bilinear) or blocky (0, nearest). Many of them fill their 8x8 box: without a
    margin, their ink touches the picture's edges."""
    from sklearn.datasets import load_digits  # a dev dependency, only for the bench

    digits = load_digits()
    resample = Image.Resampling.BILINEAR if order else Image.Resampling.NEAREST
    side = 8 * (8 + 2 * margin)
    pictures = []
    for image in digits.images:
        ink = np.pad(image / 16.0, margin)
        big = Image.fromarray(ink.astype(np.float32), mode="F").resize((side, side), resample)
        pictures.append(np.clip(np.rint(255 * (1 - np.asarray(big))), 0, 255).astype(np.uint8))
    return pictures, digits.target.astype(np.int64)


def tight_crops(images: np.ndarray) -> list[np.ndarray]:
    """MNIST-style images [N, 28, 28] (light on dark, in [0, 1]) cropped to their ink, dark on
    light: a digit that touches all four edges of its picture."""
    pictures = []
    for image in images:
        rows = np.flatnonzero(image.max(axis=1) > 0)
        cols = np.flatnonzero(image.max(axis=0) > 0)
        crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        pictures.append(np.clip(np.rint(255 * (1 - crop)), 0, 255).astype(np.uint8))
    return pictures


def shapes(count: int, seed: int = 0) -> list[np.ndarray]:
    """Geometric shapes, dark on light, 64x64: squares, rectangles, triangles, circles,
    ellipses, stars and crosses of random size and position, outlined or filled."""
    rng = np.random.default_rng(seed)
    pictures = []
    for i in range(count):
        image = Image.new("L", (_CANVAS, _CANVAS), 255)
        draw = ImageDraw.Draw(image)
        cx, cy = rng.uniform(24, 40, 2)
        r = float(rng.uniform(12, 22))
        width = int(rng.integers(2, 6))
        fill = 0 if rng.random() < 0.3 else None
        kind = i % 7
        box = (
            cx - r,
            cy - r * (0.6 if kind == 1 else 1.0),
            cx + r,
            cy + r * (0.6 if kind == 1 else 1.0),
        )
        if kind in (0, 1):
            draw.rectangle(box, outline=0, width=width, fill=fill)
        elif kind == 2:
            draw.polygon(_regular(cx, cy, r, 3, rng), outline=0, width=width, fill=fill)
        elif kind == 3:
            draw.ellipse(box, outline=0, width=width, fill=fill)
        elif kind == 4:
            draw.ellipse((cx - r, cy - 0.55 * r, cx + r, cy + 0.55 * r), outline=0, width=width)
        elif kind == 5:
            outer = _regular(cx, cy, r, 5, rng)
            star = [outer[(2 * k) % 5] for k in range(5)]
            draw.line([*star, star[0]], fill=0, width=width)
        else:
            draw.line([(cx - r, cy), (cx + r, cy)], fill=0, width=width)
            draw.line([(cx, cy - r), (cx, cy + r)], fill=0, width=width)
        pictures.append(np.asarray(image))
    return pictures


def _regular(
    cx: float, cy: float, r: float, sides: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
    turn = float(rng.uniform(0, 2 * np.pi))
    return [
        (
            cx + r * np.cos(turn + 2 * np.pi * k / sides),
            cy + r * np.sin(turn + 2 * np.pi * k / sides),
        )
        for k in range(sides)
    ]


def noise_pictures(kind: str, count: int, seed: int = 0) -> list[np.ndarray]:
    """``uniform`` or ``gaussian`` (mean 128, sigma 40) noise pictures, 64x64."""
    rng = np.random.default_rng(seed)
    pixels: np.ndarray
    if kind == "uniform":
        pixels = rng.integers(0, 256, (count, _CANVAS, _CANVAS))
    elif kind == "gaussian":
        pixels = rng.normal(128, 40, (count, _CANVAS, _CANVAS))
    else:
        raise ValueError(f"unknown noise {kind!r}")
    return list(np.clip(pixels, 0, 255).astype(np.uint8))


def blank_pictures(count: int, seed: int = 0) -> list[np.ndarray]:
    """Blank and nearly blank pictures: flat grey levels, faint noise, a dot, a faint smudge."""
    rng = np.random.default_rng(seed)
    pictures = []
    for i in range(count):
        level = rng.uniform(0, 255)
        pixels = np.full((_CANVAS, _CANVAS), level)
        kind = i % 4
        if kind == 1:
            pixels += rng.normal(0, 2, pixels.shape)
        elif kind == 2:
            y, x = rng.integers(8, _CANVAS - 8, 2)
            pixels[y : y + 2, x : x + 2] = 255 - level
        elif kind == 3:
            y, x = np.mgrid[0:_CANVAS, 0:_CANVAS]
            cy, cx = rng.uniform(16, 48, 2)
            blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 8.0**2))
            pixels += np.sign(127.5 - level) * 6 * blob
        pictures.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return pictures


def paper_pictures(count: int, seed: int = 0) -> list[np.ndarray]:
    """Photos of paper without ink: a brightness ramp (random direction and depth) plus noise."""
    rng = np.random.default_rng(seed)
    blank = np.zeros((28, 28), np.float32)
    return [
        on_paper(
            blank,
            rng,
            ramp=(float(rng.uniform(120, 220)), 255.0),
            noise=float(rng.uniform(2, 10)),
        )
        for _ in range(count)
    ]


def scribbles(count: int, seed: int = 0) -> list[np.ndarray]:
    """Random pen scribbles: 3-7 random strokes of random width, dark on light, 64x64."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        image = Image.new("L", (_CANVAS, _CANVAS), 255)
        draw = ImageDraw.Draw(image)
        points = rng.uniform(8, _CANVAS - 8, (int(rng.integers(4, 9)), 2))
        draw.line([tuple(p) for p in points], fill=0, width=int(rng.integers(2, 6)), joint="curve")
        pictures.append(np.asarray(image))
    return pictures


def mnist_row(
    images: np.ndarray, rng: np.random.Generator, *, gap: tuple[int, int] = (3, 14)
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """MNIST-style digits [K, 28, 28] side by side, dark on light paper: each cropped to its ink,
    separated by a random gap (never touching), jittered vertically. Returns the picture and
    the (left, right) column span of each digit."""
    crops = []
    for image in images:
        cols = np.flatnonzero(image.max(axis=0) > 0.1)
        crops.append(image[:, cols[0] : cols[-1] + 1])
    widths = [c.shape[1] for c in crops]
    gaps = rng.integers(gap[0], gap[1] + 1, len(crops) + 1)
    gaps[0] = gaps[-1] = 10
    canvas = np.zeros((40, int(sum(widths) + gaps.sum())), np.float32)
    spans = []
    x = int(gaps[0])
    for crop, g in zip(crops, gaps[1:], strict=True):
        dy = int(rng.integers(0, 12))
        canvas[dy : dy + 28, x : x + crop.shape[1]] = np.maximum(
            canvas[dy : dy + 28, x : x + crop.shape[1]], crop
        )
        spans.append((x, x + crop.shape[1]))
        x += crop.shape[1] + int(g)
    return np.clip(np.rint(255 * (1 - canvas)), 0, 255).astype(np.uint8), spans


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


#: The non-digit sets of the bench and the tests: name -> ``f(count, seed)``.
NON_DIGIT_SETS: dict[str, Callable[[int, int], list[np.ndarray]]] = {
    "uniform noise": lambda n, s: noise_pictures("uniform", n, s),
    "gaussian noise": lambda n, s: noise_pictures("gaussian", n, s),
    "blank and nearly blank": blank_pictures,
    "paper without ink": paper_pictures,
    "scribbles": scribbles,
    "geometric shapes": shapes,
}
