"""Uploaded images to MNIST-style 28x28 inputs, and model outputs back to PNG.

MNIST digits were made by scaling each digit to fit a 20x20 box (keeping its aspect ratio) and
placing it in a 28x28 frame so that its centre of mass sits at the centre, light strokes on a dark
background. A photo or a drawing is turned into the same kind of picture here, so the classifier
sees what it was trained on. The pixel limit is checked from the header, before any decoding.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from service.errors import InvalidInput, PayloadTooLarge

ACCEPTED_FORMATS = ("PNG", "JPEG")
_BOX = 20  # MNIST's digit box
_FRAME = 28
_INK = 0.15  # after normalisation, darker than this is background (noise, paper texture)


def open_image(data: bytes, max_pixels: int, field: str = "file") -> Image.Image:
    """Open a PNG or JPEG, refusing it from its header alone when it has too many pixels."""
    if not data:
        raise InvalidInput.for_field(field, "a PNG or JPEG file", "an empty file")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard only warns below 2x its limit; make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.UnidentifiedImageError:
        raise InvalidInput.for_field(
            field,
            "a PNG or JPEG image",
            f"{len(data)} bytes of another format or a corrupt file",
            what="not a readable PNG or JPEG image",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's guard fires at open, from the header, before ours: report its numbers.
        raise PayloadTooLarge(
            f"{field}: image too large: {exc}",
            field=field,
            expected=f"at most {max_pixels} pixels",
            received=str(exc).split(" exceeds", 1)[0],
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput.for_field(
            field, "a PNG or JPEG image", f"a corrupt file ({exc})"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{field}: image too large: {width}x{height} = {width * height} pixels, "
            f"limit {max_pixels}",
            field=field,
            expected=f"at most {max_pixels} pixels",
            received=f"{width}x{height} pixels",
        )
    return image


def to_grayscale(image: Image.Image, field: str = "file") -> np.ndarray:
    """Decode fully and return grayscale in [0, 1], upright (EXIF), transparency on white."""
    try:
        if image.format == "JPEG":
            # Decode a far larger photo at a reduced scale: faster, and less memory.
            image.draft("L", (_FRAME * 8, _FRAME * 8))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        gray = image.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput.for_field(
            field,
            "a complete PNG or JPEG image",
            f"a truncated or corrupt file ({exc})",
            what="image could not be decoded",
        ) from None
    return np.asarray(gray, dtype=np.float32) / 255.0


def mnist_style(gray: np.ndarray, field: str = "file") -> np.ndarray:
    """A grayscale picture of one digit as a 28x28 float32 MNIST-style image in [0, 1]."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: make it light on dark, as MNIST
        gray = 1.0 - gray
        border = 1.0 - border
    background = float(np.median(border))
    span = float(gray.max()) - background
    if span < 0.1:
        raise InvalidInput.for_field(
            field, "an image of a digit", "a blank image (no contrast)", what="no digit found"
        )
    ink = np.clip((gray - background) / span, 0.0, 1.0)
    ink[ink < _INK] = 0.0
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    scale = _BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS))
    box = np.clip(box, 0.0, 1.0)
    total = float(box.sum())
    rows_idx, cols_idx = np.indices(box.shape)
    cy = float((rows_idx * box).sum() / total) if total > 0 else box.shape[0] / 2
    cx = float((cols_idx * box).sum() / total) if total > 0 else box.shape[1] / 2
    top = round(_FRAME / 2 - cy - 0.5)
    left = round(_FRAME / 2 - cx - 0.5)
    frame = np.zeros((_FRAME, _FRAME), dtype=np.float32)
    # Clip the paste to the frame: a lopsided digit's centre of mass may push an edge out.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + box.shape[0], _FRAME), min(left + box.shape[1], _FRAME)
    frame[y0:y1, x0:x1] = box[y0 - top : y1 - top, x0 - left : x1 - left]
    return frame


def preprocess_upload(data: bytes, max_pixels: int, field: str = "file") -> np.ndarray:
    """Bytes of an uploaded PNG/JPEG to a 28x28 MNIST-style float32 image in [0, 1]."""
    image = open_image(data, max_pixels, field)
    return mnist_style(to_grayscale(image, field), field)


def to_png(image: np.ndarray) -> bytes:
    """A [28, 28] image in [0, 1] as an 8-bit grayscale PNG."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
