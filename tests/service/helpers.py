"""Small helpers shared by the service tests (assertions and tiny payloads)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families


def assert_error(
    response: httpx.Response, status: int, message: str, field: str | None = None
) -> dict[str, Any]:
    """The response has `status`, the one error shape, and `message` in its error text."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert message in body["error"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


def digit_image(size: tuple[int, int] = (120, 80), dark_on_light: bool = True) -> np.ndarray:
    """A grayscale picture (uint8) of a thick vertical bar, a '1', off-centre."""
    height, width = size
    pixels = np.full((height, width), 255 if dark_on_light else 0, dtype=np.uint8)
    pixels[20 : height - 10, width // 4 : width // 4 + max(2, width // 10)] = (
        0 if dark_on_light else 255
    )
    return pixels


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def images(count: int, seed: int = 0) -> np.ndarray:
    """`count` random 28x28 images in [0, 1] (float64)."""
    return np.random.default_rng(seed).random((count, 28, 28))


def potentials(count: int, seed: int = 0) -> np.ndarray:
    """`count` smooth potentials on the grid: harmonic wells with random centres and depths."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-15, 15, 64)
    centre = rng.uniform(-2, 2, size=(count, 1))
    strength = rng.uniform(0.02, 0.2, size=(count, 1))
    return 0.5 * strength * (x - centre) ** 2


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))
