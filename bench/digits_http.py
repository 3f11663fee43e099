"""The digit task routes as `bench.digits_wild` sees a classifier, measured through HTTP.

`HttpClassifier` answers the same three questions as an in-process `bench.digits_wild.Model`
(28x28 arrays, uploaded pictures, rows of digits) by asking a running server what a client
would: `POST /api/v1/digits/classify` with .npy bodies, `POST /api/v1/digits/classify/image`
with one PNG file per request (the route takes one), `POST /api/v1/digits/read` with a PNG of a
row. Uploads go on a few connections at once so that the server's two inference threads and
its preprocessing stay busy.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.bodies import npy_bytes
from bench.harness import our_server, running
from training import digit_sets

NAME = "digit_classifier"
API = "/api/v1/digits"


def _flag(value: Any) -> bool:
    """`is_digit` as the JSON carries it: a boolean, or a list of one."""
    return bool(np.ravel(np.asarray(value))[0])


class HttpClassifier:
    """The classifier the server's task routes serve (its latest version), over HTTP."""

    def __init__(self, url: str, connections: int = 4, chunk: int = 1000) -> None:
        self.url = url
        self.connections = connections
        self.chunk = chunk
        self._client = httpx.Client(
            base_url=url,
            timeout=120.0,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self.version = 0
        self.has_is_digit = False
        self.requests = 0
        # One probe tells the version and whether it has the not-a-digit flag.
        probe = self._classify_arrays(np.zeros((1, 28, 28), np.float32))
        self.version = int(probe["model"]["version"])
        self.has_is_digit = "is_digit" in probe["predictions"][0]

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        return self._client.post(API + path, **kwargs)

    def _classify_arrays(self, images: np.ndarray) -> dict[str, Any]:
        response = self._post(
            "/classify",
            params={"scale": "unit"},
            content=npy_bytes(images.astype(np.float32)),
            headers={"Content-Type": "application/x-npy", "Accept": "application/json"},
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def _outputs(self, predictions: list[dict[str, Any] | None]) -> dict[str, np.ndarray]:
        """The JSON predictions as arrays; None (a refused upload) is zeros and not a digit."""
        probabilities = np.zeros((len(predictions), 10), np.float64)
        is_digit = np.zeros(len(predictions), bool)
        for i, p in enumerate(predictions):
            if p is not None:
                probabilities[i] = p["probabilities"]
                is_digit[i] = _flag(p["is_digit"]) if self.has_is_digit else True
        out: dict[str, np.ndarray] = {"probabilities": probabilities}
        if self.has_is_digit:
            out["is_digit"] = is_digit
        return out

    def arrays(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions for 28x28 images [N, 28, 28] in [0, 1], `chunk` per request."""
        predictions: list[dict[str, Any] | None] = []
        for start in range(0, len(images), self.chunk):
            predictions += self._classify_arrays(images[start : start + self.chunk])["predictions"]
        return self._outputs(predictions)

    def _upload(self, path: str, picture: np.ndarray) -> dict[str, Any] | None:
        """The JSON answer to one PNG upload; None for a 422 (the picture was refused)."""
        files = {"file": ("picture.png", digit_sets.encode_png(picture), "image/png")}
        response = self._post(path, files=files)
        if response.status_code == 422:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def _uploads(self, path: str, pictures: list[np.ndarray]) -> list[dict[str, Any] | None]:
        with ThreadPoolExecutor(self.connections) as pool:
            return list(pool.map(lambda p: self._upload(path, p), pictures))

    def uploads(self, pictures: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Predictions for pictures uploaded as PNG; `accepted` is false where refused (422)."""
        answers = self._uploads("/classify/image", pictures)
        out = self._outputs([a["predictions"][0] if a else None for a in answers])
        out["accepted"] = np.array([a is not None for a in answers], bool)
        return out

    def read(self, pictures: list[np.ndarray]) -> list[list[int]]:
        """The digits `/digits/read` finds in each row picture ([] for a 422)."""
        answers = self._uploads("/read", pictures)
        return [[int(d["digit"]) for d in a["digits"]] if a else [] for a in answers]


@contextmanager
def serving(models_dir: Path, log_dir: Path) -> Iterator[HttpClassifier]:
    """The service (`python -m service`, one worker) on a free loopback port with the models
    of `models_dir`, and a client of its digit routes."""
    server = our_server(models_dir, [NAME], 1, log_dir, max_items=1000)
    with running(server):
        client = HttpClassifier(server.url)
        try:
            yield client
        finally:
            client.close()
