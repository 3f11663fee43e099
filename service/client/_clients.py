"""`Client` (blocking) and `AsyncClient` (asyncio) over httpx: one method per endpoint.

Both build the same `Call`s (`service.client._calls`) and differ only in how they send them and
wait between retries. Retries: a 503 (model not ready, replica starting) and a connection that
could not be made are retried with exponential backoff and jitter, a dropped connection only on
GETs; nothing else is retried, so a 4xx is raised at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self, TypeVar

import httpx
import numpy as np

from . import _calls
from ._calls import (
    API_KEY_HEADER,
    ArrayLike,
    Call,
    Classification,
    Energies,
    EnergyMode,
    ExactSolution,
    Inference,
    ModelStatus,
    Options,
    Retries,
    Scale,
)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0


def _headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    merged = {"User-Agent": "mldm-serving-client", **(headers or {})}
    if api_key is not None:
        merged[API_KEY_HEADER] = api_key
    return merged


def _timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(timeout, 10.0) if timeout else None)


class _Base:
    """The constructor both clients share; `_http_class` is httpx's blocking or async client."""

    _http_class: Any
    _http: Any

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        binary: bool | None = None,
        binary_min_items: int = 64,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if retries < 0 or backoff_s < 0 or max_backoff_s < 0 or binary_min_items < 1:
            raise ValueError(
                "retries, backoff_s, max_backoff_s must be >= 0, binary_min_items >= 1"
            )
        self.options = Options(retries, backoff_s, max_backoff_s, binary, binary_min_items)
        self._http = self._http_class(
            base_url=base_url,
            headers=_headers(api_key, headers),
            timeout=_timeout(timeout),
            transport=transport,
        )


class Client(_Base):
    """A blocking client of the mldm-serving API.

    `Client("http://localhost:8000", api_key=None, timeout=30.0, retries=3)`; use it as a context
    manager or call `close()`. Arrays are numpy in and out; a single item (one 28x28 image, one
    64-point potential) is sent as a batch of one and the results always have a batch dimension.

    - `timeout`: seconds per request (or an `httpx.Timeout`); a timed-out request is not retried.
    - `retries`: extra attempts after a 503 or a failed connection; `backoff_s` doubles per
      attempt up to `max_backoff_s`, with jitter; a `Retry-After` header is honoured.
    - `binary`: True to always send and receive `.npy` (`application/x-npy`), False for JSON
      only, None (default) for `.npy` from `binary_min_items` items per request up.
    - `transport`: an httpx transport (tests: `starlette.testclient.TestClient`'s, or a mock).
    """

    _http_class = httpx.Client
    _http: httpx.Client

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[Any]) -> _calls.Outcome:
        try:
            return self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            return exc

    def _execute(self, call: Call[T]) -> T:
        plan = Retries(self.options, call)
        while plan.again(self._send(call)):
            time.sleep(plan.delay)
        return plan.result()

    # Digits -----------------------------------------------------------------------------------

    def classify(self, images: ArrayLike, scale: Scale | None = None) -> Classification:
        """Digits and probabilities of `[N, 28, 28]` (or one `[28, 28]`) images; `scale` is
        `"unit"` (floats in [0, 1]) or `"byte"` (0-255), by default `"byte"` for uint8 arrays."""
        return self._execute(_calls.classify(self.options, images, scale))

    def classify_image(
        self, image: bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> Classification:
        """Classify the PNG or JPEG file `image` of one digit (any size; made MNIST-like)."""
        return self._execute(_calls.classify_image(image, filename, content_type))

    def compress(self, images: ArrayLike, scale: Scale | None = None) -> list[bytes]:
        """One self-describing code per image (format byte, encoder version, latent bytes)."""
        return self._execute(_calls.compress(self.options, images, scale))

    def decompress(self, codes: Sequence[bytes]) -> np.ndarray:
        """float32 `[N, 28, 28]` images in [0, 1], each code decoded by its own version."""
        return self._execute(_calls.decompress(self.options, codes))

    # Energies ---------------------------------------------------------------------------------

    def energy_from_potential(
        self, potentials: ArrayLike, include_exact: bool = False, mode: EnergyMode | None = None
    ) -> Energies:
        """E[V] of `[N, 64]` potentials (Hartree on linspace(-15, 15, 64) bohr); `mode` "model"
        (the server's default), "exact" or "auto" decides who answers (`Energies.answered_by`)."""
        call = _calls.energy_from_potential(self.options, potentials, include_exact, mode)
        return self._execute(call)

    def energy_from_density(
        self,
        densities: ArrayLike,
        potentials: ArrayLike | None = None,
        mode: EnergyMode | None = None,
    ) -> Energies:
        """E[n] of `[N, 64]` densities (1/bohr, normalised); with `potentials`, exact too."""
        call = _calls.energy_from_density(self.options, densities, potentials, mode)
        return self._execute(call)

    def exact(self, potentials: ArrayLike) -> ExactSolution:
        """The exact ground-state energies and densities of `[N, 64]` potentials."""
        return self._execute(_calls.exact(self.options, potentials))

    # Server -----------------------------------------------------------------------------------

    def health(self) -> bool:
        """Liveness: True when the process answers."""
        return self._execute(_calls.live())

    def ready(self) -> bool:
        """Readiness: True when every expected model is loaded (False, not an error, if not)."""
        return self._execute(_calls.ready())

    def models(self) -> list[ModelStatus]:
        """Every model the server knows, ready or not, with loaded and failed versions."""
        return self._execute(_calls.models())

    def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """TensorFlow Serving's metadata of a model version: signature and model card."""
        return self._execute(_calls.metadata(name, version))

    # V2 / Open Inference Protocol --------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: dict[str, ArrayLike],
        *,
        version: int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool | None = None,
    ) -> Inference:
        """V2 `infer`: named input tensors in, every (or the named) output tensor out; `binary`
        uses the binary tensor data extension both ways (None: from `binary_min_items` rows)."""
        return self._execute(_calls.v2_infer(self.options, model, inputs, version, outputs, binary))


class AsyncClient(_Base):
    """The asyncio twin of `Client`: the same constructor (with an async `transport`, e.g.
    `httpx.ASGITransport(app=app)`) and the same methods, awaited; `async with` or `aclose()`."""

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[Any]) -> _calls.Outcome:
        try:
            return await self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            return exc

    async def _execute(self, call: Call[T]) -> T:
        plan = Retries(self.options, call)
        while plan.again(await self._send(call)):
            await asyncio.sleep(plan.delay)
        return plan.result()

    async def classify(self, images: ArrayLike, scale: Scale | None = None) -> Classification:
        """See `Client.classify`."""
        return await self._execute(_calls.classify(self.options, images, scale))

    async def classify_image(
        self, image: bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> Classification:
        """See `Client.classify_image`."""
        return await self._execute(_calls.classify_image(image, filename, content_type))

    async def compress(self, images: ArrayLike, scale: Scale | None = None) -> list[bytes]:
        """See `Client.compress`."""
        return await self._execute(_calls.compress(self.options, images, scale))

    async def decompress(self, codes: Sequence[bytes]) -> np.ndarray:
        """See `Client.decompress`."""
        return await self._execute(_calls.decompress(self.options, codes))

    async def energy_from_potential(
        self, potentials: ArrayLike, include_exact: bool = False, mode: EnergyMode | None = None
    ) -> Energies:
        """See `Client.energy_from_potential`."""
        call = _calls.energy_from_potential(self.options, potentials, include_exact, mode)
        return await self._execute(call)

    async def energy_from_density(
        self,
        densities: ArrayLike,
        potentials: ArrayLike | None = None,
        mode: EnergyMode | None = None,
    ) -> Energies:
        """See `Client.energy_from_density`."""
        call = _calls.energy_from_density(self.options, densities, potentials, mode)
        return await self._execute(call)

    async def exact(self, potentials: ArrayLike) -> ExactSolution:
        """See `Client.exact`."""
        return await self._execute(_calls.exact(self.options, potentials))

    async def health(self) -> bool:
        """See `Client.health`."""
        return await self._execute(_calls.live())

    async def ready(self) -> bool:
        """See `Client.ready`."""
        return await self._execute(_calls.ready())

    async def models(self) -> list[ModelStatus]:
        """See `Client.models`."""
        return await self._execute(_calls.models())

    async def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """See `Client.metadata`."""
        return await self._execute(_calls.metadata(name, version))

    async def infer(
        self,
        model: str,
        inputs: dict[str, ArrayLike],
        *,
        version: int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool | None = None,
    ) -> Inference:
        """See `Client.infer`."""
        return await self._execute(
            _calls.v2_infer(self.options, model, inputs, version, outputs, binary)
        )
