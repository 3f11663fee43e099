"""Uploaded images to MNIST-style 28x28 inputs, and model outputs back to PNG.

MNIST digits were made by scaling each digit to fit a 20x20 box (keeping its aspect ratio) and
placing it in a 28x28 frame so that its centre of mass sits at the centre, light strokes on a dark
background. A photo or a drawing is turned into the same kind of picture here, so the classifier
sees what it was trained on. The pixel limit is checked from the header, before any decoding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from skimage import filters, measure, morphology, transform

from service.errors import InvalidInput, PayloadTooLarge

ACCEPTED_FORMATS = ("PNG", "JPEG")
_BOX = 20  # MNIST's digit box
_FRAME = 28
_INK = 0.1  # after normalisation, weaker ink than this is background (noise, paper texture)
_WORK = 256  # pictures are analysed with their longer side at most this many pixels
_MIN_CONTRAST = 0.06  # the faintest ink accepted, above the paper (1.0 = black on white)
_SPECK = 0.03  # components spanning less than this share of the picture are specks
_EDGE = 0.3  # components along more than this share of a side are paper edges or shadows
_MINOR = 0.05  # components with less ink than this share of the heaviest one are dropped
_NEAR = 0.35  # parts within this share of the main digit's size belong to the digit
# 16-bit (and 32-bit integer, which Pillow uses for some 16-bit PNGs) full scale.
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


@dataclass(frozen=True)
class Ink:
    """The ink of a picture, light on dark, paper and illumination removed.

    ``image``: ink strength in [0, 1] at the working scale (0 = paper), only inside kept
    components; ``labels``: the kept connected components (0 = none), numbered from 1;
    ``boxes[k - 1]``: (top, left, bottom, right), bottom/right exclusive, of component ``k``;
    ``masses[k - 1]``: its summed ink; ``scale``: working pixels per original pixel.
    """

    image: np.ndarray
    labels: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    masses: list[float]
    scale: float


def find_ink(gray: np.ndarray, field: str = "file") -> Ink:
    """Separate ink from paper: polarity, background (illumination) estimation, a threshold
    above the noise, then connected components without specks and paper edges.

    The background is a morphological opening with a window a quarter of the picture wide
    (wider than any stroke, narrower than a lighting gradient), smoothed; what stays above it is
    ink. The threshold is Otsu's on the result, at least 4 noise sigmas.
    """
    scale = min(1.0, _WORK / max(gray.shape))
    if scale < 1.0:
        shape = (max(1, round(gray.shape[0] * scale)), max(1, round(gray.shape[1] * scale)))
        gray = transform.resize(gray, shape, anti_aliasing=True, preserve_range=True)
    gray = gray.astype(np.float32)
    median = float(np.median(gray))
    low, high = np.percentile(gray, [0.1, 99.9])
    darker, lighter = median - low, high - median
    # Ink is the rare pixels far from the paper's level: dark ink on light paper when those are
    # darker (ties, as in a picture of one dot: by the paper's brightness).
    if darker > lighter + 1e-3 or (abs(darker - lighter) <= 1e-3 and median > 0.5):
        gray = 1.0 - gray
    height, width = gray.shape
    window = max(3, round(min(height, width) / 4)) | 1
    background = morphology.opening(gray, morphology.footprint_rectangle((window, window)))
    background = filters.gaussian(background, sigma=window / 4, preserve_range=True)
    flat = gray - background
    smooth = filters.gaussian(flat, sigma=max(0.5, min(height, width) / 150), preserve_range=True)
    level = float(np.median(smooth))
    sigma = 1.4826 * float(np.median(np.abs(smooth - level)))
    smooth = smooth - level
    peak = float(np.percentile(smooth, 99.9)) if smooth.size > 1000 else float(smooth.max())
    if peak < _MIN_CONTRAST:
        raise _no_digit(field, f"a blank image (ink contrast {peak:.3f})")
    if peak < 6 * sigma:
        raise _no_digit(
            field, f"only noise (ink contrast {peak:.3f} within 6 noise sigmas of {sigma:.3f})"
        )
    threshold = max(float(filters.threshold_otsu(smooth)), 4 * sigma, _MIN_CONTRAST / 2)
    mask = smooth > threshold
    labels = measure.label(mask, connectivity=2)
    regions = measure.regionprops(labels, intensity_image=np.clip(smooth, 0, None))
    kept = []
    for region in regions:
        top, left, bottom, right = region.bbox
        if max(bottom - top, right - left) < max(3, _SPECK * max(height, width)):
            continue  # a speck of dust or noise
        if _border_contact(labels == region.label) > _EDGE:
            continue  # the edge of the paper, a shadow or a frame line
        kept.append(region)
    if not kept:
        raise _no_digit(field, "no stroke larger than a speck away from the paper's edge")
    largest = max(r.image_intensity.sum() for r in kept)
    kept = [r for r in kept if r.image_intensity.sum() >= _MINOR * largest]
    out_labels = np.zeros(labels.shape, np.int32)
    for k, region in enumerate(kept, start=1):
        out_labels[labels == region.label] = k
    # Keep the anti-aliased rim of the strokes (one pixel around each kept component).
    rim = morphology.dilation(out_labels, morphology.footprint_rectangle((3, 3)))
    strength = float(np.percentile(smooth[out_labels > 0], 95))
    ink = np.clip(smooth / max(strength, 1e-6), 0.0, 1.0) * (rim > 0)
    ink[ink < _INK] = 0.0
    return Ink(
        image=ink.astype(np.float32),
        labels=rim,
        boxes=[tuple(int(v) for v in r.bbox) for r in kept],  # type: ignore[misc]
        masses=[float(r.image_intensity.sum()) for r in kept],
        scale=scale,
    )


def digit_region(ink: Ink) -> np.ndarray:
    """The ink of the main digit: the heaviest component and the parts close to it (the bar of
    a 5, a broken stroke), cropped."""
    main = int(np.argmax(ink.masses))
    top, left, bottom, right = ink.boxes[main]
    reach = _NEAR * max(bottom - top, right - left)
    chosen = [main]
    for k, (t, l_, b, r) in enumerate(ink.boxes):
        gap = max(t - bottom, top - b, l_ - right, left - r, 0)
        if k != main and gap <= reach:
            chosen.append(k)
    keep = np.isin(ink.labels, [k + 1 for k in chosen])
    rows = np.flatnonzero(keep.any(axis=1))
    cols = np.flatnonzero(keep.any(axis=0))
    region = (ink.image * keep)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return region


def frame_digit(ink: np.ndarray) -> np.ndarray:
    """A cropped digit (light on dark) in MNIST's framing: longer side scaled to 20 px, centre of
    mass at the centre of a 28x28 frame."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    height, width = ink.shape
    scale = _BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS))
    # MNIST's strokes peak at full intensity; resampling a thin stroke lowers its peak.
    box = np.clip(box / max(float(box.max()), 1e-6), 0.0, 1.0)
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


def mnist_style(gray: np.ndarray, field: str = "file") -> np.ndarray:
    """A grayscale picture of one digit as a 28x28 float32 MNIST-style image in [0, 1]."""
    return frame_digit(digit_region(find_ink(gray, field)))


def preprocess_upload(data: bytes, max_pixels: int, field: str = "file") -> np.ndarray:
    """Bytes of an uploaded PNG/JPEG to the 28x28 MNIST-style float32 image in [0, 1] that the
    model is given (return it to the user to show what the model saw)."""
    image = open_image(data, max_pixels, field)
    return mnist_style(to_grayscale(image, field), field)


def _border_contact(mask: np.ndarray) -> float:
    """The largest share of one side of the picture that a component lies along."""
    height, width = mask.shape
    return max(
        mask[0].sum() / width,
        mask[-1].sum() / width,
        mask[:, 0].sum() / height,
        mask[:, -1].sum() / height,
    )


def _no_digit(field: str, received: str) -> InvalidInput:
    return InvalidInput.for_field(field, "an image of a digit", received, what="no digit found")


def to_png(image: np.ndarray) -> bytes:
    """A [28, 28] image in [0, 1] as an 8-bit grayscale PNG."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
