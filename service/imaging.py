"""Uploaded images to MNIST-style 28x28 inputs, and model outputs back to PNG.

Uploads are opened and decoded here (the pixel limit checked from the header, before any
decoding); the ink is found and framed as MNIST's digits are by `data.digit_ink`, which the
training pipeline shares, and a picture without a stroke becomes the service's 422 "no digit
found" naming the field.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from data import digit_ink
from data.digit_ink import Ink, digit_region, frame_digit
from service.errors import InvalidInput, PayloadTooLarge

ACCEPTED_FORMATS = ("PNG", "JPEG")
_WORK = digit_ink.WORK_SIDE  # a JPEG is decoded at a reduced scale near the working size
_HIGH_DEPTH = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0}


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
    """Decode fully and return grayscale in [0, 1]: upright (EXIF), transparency composited on
    white, 16-bit depth kept (not clipped to 8 bits), palettes expanded."""
    try:
        if image.format == "JPEG":
            # Decode a far larger photo at a reduced scale: faster, and less memory.
            image.draft("L", (_WORK * 2, _WORK * 2))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        if image.mode in _HIGH_DEPTH:
            # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
            return np.clip(np.asarray(image, dtype=np.float32) / _HIGH_DEPTH[image.mode], 0, 1)
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


def find_ink(gray: np.ndarray, field: str = "file") -> Ink:
    """`data.digit_ink.find_ink`, with a picture without a stroke refused for ``field``."""
    try:
        return digit_ink.find_ink(gray)
    except digit_ink.NoDigitError as exc:
        raise _no_digit(field, exc.received) from None


def mnist_style(gray: np.ndarray, field: str = "file") -> np.ndarray:
    """A grayscale picture of one digit as a 28x28 float32 MNIST-style image in [0, 1]."""
    return frame_digit(digit_region(find_ink(gray, field)))


def preprocess_upload(data: bytes, max_pixels: int, field: str = "file") -> np.ndarray:
    """Bytes of an uploaded PNG/JPEG to the 28x28 MNIST-style float32 image in [0, 1] that the
    model is given (return it to the user to show what the model saw)."""
    image = open_image(data, max_pixels, field)
    return mnist_style(to_grayscale(image, field), field)


def _no_digit(field: str, received: str) -> InvalidInput:
    return InvalidInput.for_field(field, "an image of a digit", received, what="no digit found")


def to_png(image: np.ndarray) -> bytes:
    """A [28, 28] image in [0, 1] as an 8-bit grayscale PNG."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
