"""Degradations of MNIST-style digits (light ink on black, 28x28 in [0, 1]): what real inputs do to
a digit before it reaches the classifier. Used to augment classifier v2's training images and,
with fixed settings, to build the degraded copies of the MNIST test set it is measured on.

All of them are array operations from SciPy / scikit-image; every one takes and returns float32
[N, 28, 28] and a ``numpy.random.Generator``, so a seed gives the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

Degradation = Callable[[np.ndarray, np.random.Generator], np.ndarray]
_SIZE = 28
_ZOOM: dict[str, Any] = {"prefilter": False, "grid_mode": True, "mode": "grid-constant"}


def blur(images: np.ndarray, rng: np.random.Generator, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur (out of focus, motion-free), sigma drawn per image in [0.5, 1.5] px."""
    sigmas = rng.uniform(0.5, 1.5, len(images)) if sigma is None else np.full(len(images), sigma)
    out = np.stack([ndimage.gaussian_filter(im, s) for im, s in zip(images, sigmas, strict=True)])
    return _renormalise(out)


def low_resolution(
    images: np.ndarray, rng: np.random.Generator, size: int | None = None, order: int | None = None
) -> np.ndarray:
    """Down to ``size`` px (drawn in [7, 14]) and back to 28, smooth (order 1) or blocky (0)."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        small = int(rng.integers(7, 15)) if size is None else size
        k = int(rng.integers(0, 2)) if order is None else order
        down = ndimage.zoom(im, small / _SIZE, order=1, **_ZOOM)
        up = ndimage.zoom(down, _SIZE / down.shape[0], order=k, **_ZOOM)
        out[i] = _fit(up)
    return _renormalise(out)


def stroke_width(
    images: np.ndarray, rng: np.random.Generator, change: int | None = None
) -> np.ndarray:
    """Thinner (grey erosion) or thicker (grey dilation) strokes, by a 2x2 or 3x3 footprint."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        k = int(rng.choice([-2, -1, 1, 2])) if change is None else change
        size = 2 if abs(k) == 1 else 3
        if k > 0:
            out[i] = ndimage.grey_dilation(im, size=(size, size))
        else:
            thin = ndimage.grey_erosion(im, size=(size, size))
            # A 3x3 erosion can erase a thin digit: keep the original where nothing is left.
            out[i] = thin if thin.max() > 0.3 else ndimage.grey_erosion(im, size=(2, 2))
    return _renormalise(out)


def elastic(
    images: np.ndarray, rng: np.random.Generator, alpha: float = 18.0, sigma: float = 4.0
) -> np.ndarray:
    """Simard et al.'s elastic distortion: a smoothed random displacement field, alpha px."""
    n = len(images)
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (n, _SIZE, _SIZE)), (0, sigma, sigma))
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (n, _SIZE, _SIZE)), (0, sigma, sigma))
    scale = alpha / np.maximum(np.abs(np.stack([dx, dy])).max(axis=(0, 2, 3)), 1e-6) / 4
    dx *= scale[:, None, None]
    dy *= scale[:, None, None]
    b, y, x = np.meshgrid(np.arange(n), np.arange(_SIZE), np.arange(_SIZE), indexing="ij")
    coords = np.stack([b, y + dy, x + dx])
    return ndimage.map_coordinates(images, coords, order=1, mode="constant").astype(np.float32)


def contrast(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faint or washed-out ink: peak in [0.35, 1], a gamma in [0.6, 1.6], a grey floor to 0.2."""
    n = len(images)
    peak = rng.uniform(0.35, 1.0, (n, 1, 1))
    gamma = rng.uniform(0.6, 1.6, (n, 1, 1))
    floor = rng.uniform(0.0, 0.2, (n, 1, 1))
    return (floor + (peak - floor) * images**gamma).astype(np.float32)


def noise(images: np.ndarray, rng: np.random.Generator, sigma: float | None = None) -> np.ndarray:
    """Additive Gaussian sensor noise, sigma drawn in [0.02, 0.15], clipped to [0, 1]."""
    sigmas = rng.uniform(0.02, 0.15, (len(images), 1, 1)) if sigma is None else sigma
    noisy = images + rng.normal(0.0, 1.0, images.shape) * sigmas
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def lighting(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A linear illumination ramp across the frame (background up to 0.3, ink up to 30% less)."""
    n = len(images)
    angle = rng.uniform(0, 2 * np.pi, n)
    y, x = np.mgrid[0:_SIZE, 0:_SIZE] / (_SIZE - 1) - 0.5
    ramp = np.cos(angle)[:, None, None] * x + np.sin(angle)[:, None, None] * y + 0.5
    level = rng.uniform(0.05, 0.3, (n, 1, 1))
    dim = 1.0 - rng.uniform(0.0, 0.3, (n, 1, 1)) * ramp
    return np.clip(images * dim + level * (1 - ramp), 0.0, 1.0).astype(np.float32)


#: The training augmentations, each drawn with equal probability (one or two per image).
AUGMENTATIONS: dict[str, Degradation] = {
    "blur": blur,
    "low_resolution": low_resolution,
    "stroke_width": stroke_width,
    "elastic": elastic,
    "contrast": contrast,
    "noise": noise,
    "lighting": lighting,
}


def augment(
    images: np.ndarray, rng: np.random.Generator, clean_fraction: float = 0.4
) -> np.ndarray:
    """A copy of ``images`` where ``1 - clean_fraction`` of them got one or two degradations."""
    out = images.astype(np.float32, copy=True)
    names = list(AUGMENTATIONS)
    degraded = np.flatnonzero(rng.random(len(images)) >= clean_fraction)
    first = rng.integers(0, len(names), len(degraded))
    second = rng.integers(-len(names), len(names), len(degraded))  # negative: no second one
    for step in (first, second):
        for k, name in enumerate(names):
            idx = degraded[step == k]
            if len(idx):
                out[idx] = AUGMENTATIONS[name](out[idx], rng)
    return out


def _fit(image: np.ndarray) -> np.ndarray:
    """Crop or pad a zoomed image back to 28x28 (zoom rounding can be off by a pixel)."""
    out = np.zeros((_SIZE, _SIZE), np.float32)
    h, w = min(_SIZE, image.shape[0]), min(_SIZE, image.shape[1])
    out[:h, :w] = image[:h, :w]
    return out


def _renormalise(images: np.ndarray) -> np.ndarray:
    """Peak back to the original's range after a filter spread the ink (max 1)."""
    peak = images.max(axis=(1, 2), keepdims=True)
    return np.clip(images / np.maximum(peak, 1e-6), 0.0, 1.0).astype(np.float32)
