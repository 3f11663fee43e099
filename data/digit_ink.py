"""Pictures of digits to MNIST-style 28x28 inputs: the ink separated from the paper, its
lighting and noise, then framed as MNIST's digits are.

MNIST digits were made by scaling each digit to fit a 20x20 box (keeping its aspect ratio) and
placing it in a 28x28 frame so that its centre of mass sits at the centre, light strokes on a dark
background. The service (``service.imaging``, for uploads) and the training pipeline (robust
training on photos, ``training.digit_robust``) both turn pictures into the same kind of input
here, so that the classifier sees what it was trained on. Numpy in, numpy out: no HTTP, no
service errors (a picture without a stroke raises `NoDigitError`, a `ValueError`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import filters, measure, morphology, transform

_BOX = 20  # MNIST's digit box
_FRAME = 28
_INK = 0.1  # after normalisation, weaker ink than this is background (noise, paper texture)
WORK_SIDE = 256  # pictures are analysed with their longer side at most this many pixels
_MIN_CONTRAST = 0.06  # the faintest ink accepted, above the paper (1.0 = black on white)
_SPECK = 0.03  # components spanning less than this share of the picture are specks
_MINOR = 0.05  # components with less ink than this share of the heaviest one are dropped
_NEAR = 0.35  # parts within this share of the main digit's size belong to the digit
_LIGHT_PAPER = 0.4  # the paper is light from this score on (`_light_paper`)
_NOISE_PIXELS = 32 * 32  # the noise is measured on pictures of at least this many pixels
_PAPER_DEPTH = 0.25  # a paper edge or shadow lies within this share of the picture from a side,
_PAPER_ALONG = 0.6  # ... runs along at least this share of that side,
_PAPER_SHARE = 0.85  # ... with at least this share of its pixels in that band


class NoDigitError(ValueError):
    """The picture has no stroke to read; ``received`` says what it has instead ("a blank
    image (ink contrast 0.012)")."""

    def __init__(self, received: str) -> None:
        super().__init__(received)
        self.received = received


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


def find_ink(gray: np.ndarray) -> Ink:
    """Separate ink from paper, with or without a margin of paper around the ink.

    Polarity first (`_light_paper`); then the paper's lighting, a smooth surface fitted only to
    the pixels that are paper (`_paper`), so that ink filling the picture or touching its edges
    is never taken for lighting and a lighting ramp without ink leaves only noise. The noise is
    measured on second differences (`_noise_sigma`), robust to strokes and edges, never from
    the spread of all pixels, which ink covering half the picture would inflate. Ink is what
    stands above the paper by more than Otsu's threshold and 4 noise sigmas; connected
    components that are specks, or bands along a side (the desk beside the sheet, a shadow, a
    frame line: `_paper_band`), are dropped. Ink that merely touches an edge stays ink.
    """
    scale = min(1.0, WORK_SIDE / max(gray.shape))
    if scale < 1.0:
        shape = (max(1, round(gray.shape[0] * scale)), max(1, round(gray.shape[1] * scale)))
        gray = transform.resize(gray, shape, anti_aliasing=True, preserve_range=True)
    gray = gray.astype(np.float32)
    if _light_paper(gray):
        gray = 1.0 - gray
    height, width = gray.shape
    blur = max(0.5, min(height, width) / 150)
    background, noise = _paper(gray)
    smooth = filters.gaussian(gray - background, sigma=blur, preserve_range=True)
    sigma = noise * _smoothing_gain(blur)
    peak = float(np.percentile(smooth, 99.9)) if smooth.size > 1000 else float(smooth.max())
    if peak < _MIN_CONTRAST:
        raise NoDigitError(f"a blank image (ink contrast {peak:.3f})")
    if peak < 6 * sigma:
        raise NoDigitError(
            f"only noise (ink contrast {peak:.3f} within 6 noise sigmas of {sigma:.3f})"
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
        if _paper_band(labels == region.label):
            continue  # the edge of the paper, a shadow or a frame line
        kept.append(region)
    if not kept:
        raise NoDigitError("no stroke larger than a speck, only specks or paper edges")
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


def _light_paper(gray: np.ndarray) -> bool:
    """Whether the paper is the lighter side of the picture (dark ink on light paper).

    Otsu's threshold splits the picture (its lighting trend removed) into a darker and a
    lighter class; the paper is the class that most of the picture's border and most of the
    picture are, the border counting twice (ink may touch the edges, but seldom runs along
    them). Ties go to light paper, by far the commonest upload.
    """
    flat = gray - _surface(gray, np.ones(gray.shape, bool), degree=1)
    if float(np.ptp(flat)) < 1e-6:
        return float(gray.mean()) > 0.5
    lighter = flat > filters.threshold_otsu(flat)
    border = np.concatenate([lighter[0], lighter[-1], lighter[1:-1, 0], lighter[1:-1, -1]])
    score = (2 * float(border.mean()) + float(lighter.mean())) / 3
    return score >= _LIGHT_PAPER


def _paper(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """The paper's level under every pixel (ink bright, paper dark) and the noise sigma.

    A quadratic surface is fitted to the pixels that are paper: first those below Otsu's
    threshold, then those less than the ink threshold above the surface, twice more. A picture
    that is mostly ink gets a flat paper level (too few paper pixels to fit a surface to).
    """
    noise = _noise_sigma(gray)
    paper = gray <= filters.threshold_otsu(gray) if float(np.ptp(gray)) > 1e-6 else gray == gray
    background = np.zeros_like(gray)
    for _ in range(3):
        degree = 2 if paper.mean() >= 0.3 else 0
        background = _surface(gray, paper, degree)
        residual = gray - background
        if float(np.ptp(residual)) <= 1e-6:
            break
        cut = max(float(filters.threshold_otsu(residual)), 4 * noise, _MIN_CONTRAST / 2)
        paper = residual < cut
        if not paper.any():
            break
    return background, noise


def _surface(values: np.ndarray, where: np.ndarray, degree: int) -> np.ndarray:
    """The least-squares polynomial surface of ``degree`` (0, 1 or 2) in x and y through
    ``values[where]``, evaluated everywhere."""
    height, width = values.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / max(height - 1, 1) - 0.5, x / max(width - 1, 1) - 0.5
    terms = [np.ones_like(x)]
    if degree >= 1:
        terms += [x, y]
    if degree >= 2:
        terms += [x * x, x * y, y * y]
    basis = np.stack(terms, axis=-1)
    rows = np.flatnonzero(where.ravel())
    if rows.size > 20000:  # a fixed subsample is plenty for six coefficients
        rows = rows[:: rows.size // 20000]
    design = basis.reshape(-1, len(terms))[rows].astype(np.float64)
    # The normal equations of a 6-term fit: far cheaper than a general least-squares solver,
    # and well conditioned on coordinates centred in [-0.5, 0.5].
    gram = design.T @ design + 1e-9 * np.eye(len(terms))
    coefficients = np.linalg.solve(gram, design.T @ values.ravel()[rows].astype(np.float64))
    surface: np.ndarray = basis @ coefficients.astype(np.float32)
    return surface


def _noise_sigma(gray: np.ndarray) -> float:
    """The sensor noise's sigma, from the median absolute second difference (Immerkaer's mask):
    strokes, edges and a lighting ramp leave most second differences at zero."""
    if gray.size < _NOISE_PIXELS:
        # A small picture (a tight crop of a digit of MNIST's size) is nearly all stroke edges:
        # its noise cannot be told from them, so only the contrast test applies.
        return 0.0
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = np.abs(ndimage.convolve(gray, mask, mode="nearest")[1:-1, 1:-1])
    # White noise of sigma s gives a response of sigma 6 s (the mask's L2 norm).
    sigma = 1.4826 * float(np.median(response)) / 6.0
    # A small tight crop is nearly all stroke edges: measured on the paper's side of Otsu's
    # threshold alone as well, and the smaller taken (noise shows on either side).
    if float(np.ptp(gray)) > 1e-6:
        paper = (gray <= filters.threshold_otsu(gray))[1:-1, 1:-1]
        if paper.sum() >= 16:
            sigma = min(sigma, 1.4826 * float(np.median(response[paper])) / 6.0)
    return sigma


def _smoothing_gain(sigma: float) -> float:
    """How much a Gaussian blur of ``sigma`` pixels scales white noise's sigma."""
    radius = int(4 * sigma) + 1
    delta = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
    delta[radius, radius] = 1.0
    kernel = filters.gaussian(delta, sigma=sigma, preserve_range=True)
    return float(np.sqrt((kernel**2).sum()))


def _paper_band(mask: np.ndarray) -> bool:
    """Whether a component is a band along a side of the picture (the desk beside the sheet, a
    shadow, a frame line) rather than ink that touches the edge: it runs along most of a side
    and nearly all of it lies close to the sides it runs along."""
    height, width = mask.shape
    depth_y = max(1, round(_PAPER_DEPTH * height))
    depth_x = max(1, round(_PAPER_DEPTH * width))
    sides = [
        (mask[0].mean(), (slice(0, depth_y), slice(None))),
        (mask[-1].mean(), (slice(height - depth_y, height), slice(None))),
        (mask[:, 0].mean(), (slice(None), slice(0, depth_x))),
        (mask[:, -1].mean(), (slice(None), slice(width - depth_x, width))),
    ]
    band = np.zeros_like(mask)
    for along, where in sides:
        if along >= _PAPER_ALONG:
            band[where] = True
    if not band.any():
        return False
    return float((mask & band).sum()) >= _PAPER_SHARE * float(mask.sum())


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


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """A grayscale picture of one digit (in [0, 1]) as a 28x28 float32 MNIST-style image in
    [0, 1]; `NoDigitError` where it has no stroke."""
    return frame_digit(digit_region(find_ink(gray)))
