"""`Client` (blocking) and `AsyncClient` (asyncio) over httpx: one method per endpoint.

Every endpoint is written once, in `_Base`, as the `Call` it makes (`service.client._calls`
builds the request and parses the answer); `_endpoint` turns it into a blocking method on
`Client` and an awaitable one on `AsyncClient`, which differ only in how they send a call and
wait between retries (`_execute`). Retries: a 503 (model not ready, replica starting) and a
connection that could not be made are retried with exponential backoff and jitter, a dropped
connection only on GETs; nothing else is retried, so a 4xx is raised at once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

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
P = ParamSpec("P")

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


class _Endpoint(Generic[P, T]):
    """One endpoint, written once as the `Call` it makes: read on a `Client` it is a method
    that sends the call and returns its result; on an `AsyncClient`, the same method awaited."""

    def __init__(self, build: Callable[Concatenate[Any, P], Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__
        self.__wrapped__ = build
        # What `help()` shows of a bound method: the endpoint's parameters (no `self`, no `Call`).
        signature = inspect.signature(build)
        parameters = list(signature.parameters.values())[1:]
        self.signature = signature.replace(parameters=parameters, return_annotation=signature.empty)

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: Client, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, client: _Base | None, owner: type) -> Any:
        if client is None:
            return self
        build = self.build
        if isinstance(client, Client):
            sync = client

            def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
                return sync._execute(build(sync, *args, **kwargs))

            return self._named(blocking)
        assert isinstance(client, AsyncClient)
        asynchronous = client

        async def awaited(*args: P.args, **kwargs: P.kwargs) -> T:
            return await asynchronous._execute(build(asynchronous, *args, **kwargs))

        return self._named(awaited)

    def _named(self, method: Callable[P, Any]) -> Callable[P, Any]:
        functools.update_wrapper(method, self.build)
        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


def _endpoint(build: Callable[Concatenate[Any, P], Call[T]]) -> _Endpoint[P, T]:
    return _Endpoint(build)


class _Base:
    """What both clients share: the constructor and every endpoint (`_http_class` is httpx's
    blocking or async client)."""

    _http_class: Any
    _http: Any
    options: Options

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

    # Digits -----------------------------------------------------------------------------------

    @_endpoint
    def classify(self, images: ArrayLike, scale: Scale | None = None) -> Call[Classification]:
        """Digits and probabilities of `[N, 28, 28]` (or one `[28, 28]`) images; `scale` is
        `"unit"` (floats in [0, 1]) or `"byte"` (0-255), by default `"byte"` for uint8 arrays."""
        return _calls.classify(self.options, images, scale)

    @_endpoint
    def classify_image(
        self, image: bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> Call[Classification]:
        """Classify the PNG or JPEG file `image` of one digit (any size; made MNIST-like)."""
        return _calls.classify_image(image, filename, content_type)

    @_endpoint
    def compress(self, images: ArrayLike, scale: Scale | None = None) -> Call[list[bytes]]:
        """One self-describing code per image (format byte, encoder version, latent bytes)."""
        return _calls.compress(self.options, images, scale)

    @_endpoint
    def decompress(self, codes: Sequence[bytes]) -> Call[np.ndarray]:
        """float32 `[N, 28, 28]` images in [0, 1], each code decoded by its own version."""
        return _calls.decompress(self.options, codes)

    # Energies ---------------------------------------------------------------------------------

    @_endpoint
    def energy_from_potential(
        self, potentials: ArrayLike, include_exact: bool = False, mode: EnergyMode | None = None
    ) -> Call[Energies]:
        """E[V] of `[N, 64]` potentials (Hartree on linspace(-15, 15, 64) bohr); `mode` "model"
        (the server's default), "exact" or "auto" decides who answers (`Energies.answered_by`)."""
        return _calls.energy_from_potential(self.options, potentials, include_exact, mode)

    @_endpoint
    def energy_from_density(
        self,
        densities: ArrayLike,
        potentials: ArrayLike | None = None,
        mode: EnergyMode | None = None,
    ) -> Call[Energies]:
        """E[n] of `[N, 64]` densities (1/bohr, normalised); with `potentials`, exact too."""
        return _calls.energy_from_density(self.options, densities, potentials, mode)

    @_endpoint
    def exact(self, potentials: ArrayLike) -> Call[ExactSolution]:
        """The exact ground-state energies and densities of `[N, 64]` potentials."""
        return _calls.exact(self.options, potentials)

    # Server -----------------------------------------------------------------------------------

    @_endpoint
    def health(self) -> Call[bool]:
        """Liveness: True when the process answers."""
        return _calls.live()

    @_endpoint
    def ready(self) -> Call[bool]:
        """Readiness: True when every expected model is loaded (False, not an error, if not)."""
        return _calls.ready()

    @_endpoint
    def models(self) -> Call[list[ModelStatus]]:
        """Every model the server knows, ready or not, with loaded and failed versions."""
        return _calls.models()

    @_endpoint
    def metadata(self, name: str, version: int | None = None) -> Call[dict[str, Any]]:
        """TensorFlow Serving's metadata of a model version: signature and model card."""
        return _calls.metadata(name, version)

    # V2 / Open Inference Protocol --------------------------------------------------------------

    @_endpoint
    def infer(
        self,
        model: str,
        inputs: dict[str, ArrayLike],
        *,
        version: int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool | None = None,
    ) -> Call[Inference]:
        """V2 `infer`: named input tensors in, every (or the named) output tensor out; `binary`
        uses the binary tensor data extension both ways (None: from `binary_min_items` rows)."""
        return _calls.v2_infer(self.options, model, inputs, version, outputs, binary)


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
