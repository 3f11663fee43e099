"""What each endpoint call sends and how its answer is read, shared by `Client` and `AsyncClient`.

A `Call` is a plain description of one HTTP request plus the function that turns the response
into the result; the two clients only differ in how they send it (and sleep between retries).
Arrays go as JSON for small batches and as `.npy` bodies (`application/x-npy`, with the scalar
options in the query string) for batches of `binary_min_items` or more, the answer then coming
back as `.npy` too; `.npy` is read with `allow_pickle=False`.
"""

from __future__ import annotations

import base64
import io
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from . import _v2
from .errors import ServiceConnectionError, ServiceError, error_for_status

T = TypeVar("T")

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"  # every per-item field as named arrays (classify and energy routes)
API_KEY_HEADER = "X-API-Key"
REQUEST_ID_HEADER = "X-Request-ID"
#: Statuses worth a retry: the server (or a balancer) says "not now", nothing was computed.
RETRY_STATUSES = frozenset({503})

Scale = Literal["unit", "byte"]
EnergyMode = Literal["model", "exact", "auto"]
"""Who answers an energy request: the model, the exact solver, or the model where it keeps its
promise and the solver elsewhere (`auto`)."""
ArrayLike = Any  # numpy arrays, nested lists: anything np.asarray takes


# Results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """The model version that answered."""

    name: str
    version: int


@dataclass(frozen=True)
class Classification:
    """One row per image: the most probable digit and the ten probabilities."""

    digits: np.ndarray
    """int64 `[N]`."""
    probabilities: np.ndarray
    """float32 `[N, 10]`."""
    model: ModelRef | None
    is_digit: np.ndarray | None = None
    """bool `[N]`: false where the picture does not look like a digit (the digit is then only a
    guess); None from versions without the flag (v1) and from .npy answers."""
    ood_score: np.ndarray | None = None
    """float64 `[N]`: the classifier's out-of-distribution score (higher: less digit-like)."""
    not_digit_score: np.ndarray | None = None
    """float64 `[N]` in [0, 1]: the score of the not-a-digit rule that decides `is_digit` (the
    classifier's signals and the ink's geometry; higher: less digit-like); None from versions
    without the rule."""


@dataclass(frozen=True)
class Energies:
    """Ground-state energies in Hartree, one per input row."""

    energies: np.ndarray
    """Predicted, float64 `[N]`."""
    model: ModelRef | None
    exact: np.ndarray | None = None
    """Exact energies, float64 `[N]` (when asked for)."""
    errors: np.ndarray | None = None
    """Predicted - exact, float64 `[N]` (when asked for)."""
    answered_by: list[str] | None = None
    """Who answered each item: "model" or "exact solver" (JSON answers)."""
    energy_std: np.ndarray | None = None
    """float64 `[N]`: calibrated 1-sigma uncertainty, Hartree (0 where the exact solver answered,
    NaN where the version gives none)."""
    energy_interval_95: np.ndarray | None = None
    """float64 `[N, 2]`: the 95% interval [low, high], Hartree (NaN where there is none)."""
    in_domain: np.ndarray | None = None
    """bool `[N]`: whether the input lies in the model's training domain."""
    domain_reason_text: list[str] | None = None
    """The domain verdict of each item in words."""
    mode: str | None = None
    """The mode the server answered in: "model", "exact" or "auto"."""


@dataclass(frozen=True)
class ExactSolution:
    """The exact ground state of each potential."""

    energies: np.ndarray
    """float64 `[N]`, Hartree."""
    densities: np.ndarray
    """float64 `[N, 64]`, 1/bohr."""


@dataclass(frozen=True)
class Inference:
    """A V2 `infer` answer: every output the model version returned, by name."""

    model_name: str
    model_version: str | None
    outputs: dict[str, np.ndarray]
    id: str | None = None


@dataclass(frozen=True)
class ModelStatus:
    """One model as `GET /api/v1/models` lists it."""

    name: str
    ready: bool
    state: str
    versions: list[int]
    failed_versions: dict[int, str] = field(default_factory=dict)
    error: str | None = None


# Options and calls ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Settings shared by both clients (see `Client` for their meaning)."""

    retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    binary: bool | None = None
    binary_min_items: int = 64

    def use_binary(self, items: int) -> bool:
        if self.binary is None:
            return items >= self.binary_min_items
        return self.binary

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before retry `attempt` (0-based): exponential, capped, with jitter so that
        many clients refused together do not come back together; `Retry-After` is honoured
        (within the cap)."""
        cap = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        if retry_after is not None:
            try:
                return min(self.max_backoff_s, max(float(retry_after), 0.0))
            except ValueError:
                pass
        return cap / 2 + random.uniform(0, cap / 2)


@dataclass
class Call(Generic[T]):
    """One request and the reader of its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Error statuses that `read` handles itself instead of raising (readiness 503).
    answers: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        # One id for every attempt, so the server's logs tie the retries together.
        self.headers.setdefault(REQUEST_ID_HEADER, uuid.uuid4().hex)

    @property
    def request_id(self) -> str:
        return self.headers[REQUEST_ID_HEADER]

    @property
    def safe_to_resend(self) -> bool:
        """Whether a request that may have reached the server can be sent again (GETs only;
        a request that never connected can always be)."""
        return self.method == "GET"

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(
            self.method,
            self.path,
            params=self.params,
            content=self.content,
            files=self.files,
            headers=self.headers,
        )


def should_retry_status(call: Call[Any], response: httpx.Response) -> bool:
    return response.status_code in RETRY_STATUSES and response.status_code not in call.answers


def should_retry_error(call: Call[Any], error: httpx.TransportError) -> bool:
    """Connection failures (nothing was sent) always; a failure after sending only for GETs.
    A timeout is never retried: the server may still be working on the request."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    if isinstance(error, httpx.TimeoutException):
        return False
    return call.safe_to_resend


Outcome = httpx.Response | httpx.TransportError
"""What one attempt gave: a response, or the transport error of a request that failed."""


class Retries(Generic[T]):
    """The retry plan of one call, for either client's loop:

    ``while plan.again(send()): sleep(plan.delay)``, then ``plan.result()``."""

    def __init__(self, options: Options, call: Call[T]) -> None:
        self.options, self.call = options, call
        self.attempt, self.delay = 0, 0.0
        self.outcome: Outcome | None = None

    def again(self, outcome: Outcome) -> bool:
        """Whether to try again after `outcome` (then wait `delay` seconds first)."""
        self.outcome = outcome
        if self.attempt >= self.options.retries:
            return False
        if isinstance(outcome, httpx.TransportError):
            if not should_retry_error(self.call, outcome):
                return False
            self.delay = self.options.delay(self.attempt)
        elif should_retry_status(self.call, outcome):
            self.delay = self.options.delay(self.attempt, outcome.headers.get("retry-after"))
        else:
            return False
        self.attempt += 1
        return True

    def result(self) -> T:
        """The call's answer from the final outcome, or the `ServiceError` to raise."""
        outcome = self.outcome
        if isinstance(outcome, httpx.TransportError):
            raise connection_error(self.call, outcome) from outcome
        assert outcome is not None, "result() before any attempt"
        return finish(self.call, outcome)


def finish(call: Call[T], response: httpx.Response) -> T:
    """The result of a final response, or the `ServiceError` of its status."""
    if response.is_success or response.status_code in call.answers:
        return call.read(response)
    raise error_from(response, call.request_id)


def error_from(response: httpx.Response, request_id: str | None = None) -> ServiceError:
    body: dict[str, Any] = {}
    try:
        parsed = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        body = parsed
    message = body.get("error")
    if not isinstance(message, str):  # not our server's shape (a proxy's HTML page, ...)
        text = response.text.strip()
        message = text[:300] if text else response.reason_phrase or "no error message"
    return error_for_status(
        response.status_code,
        body,
        message,
        response.headers.get(REQUEST_ID_HEADER) or request_id,
    )


def connection_error(call: Call[Any], error: httpx.TransportError) -> ServiceConnectionError:
    detail = str(error) or "no detail"
    return ServiceConnectionError(
        f"{call.method} {call.path}: {type(error).__name__}: {detail}", request_id=call.request_id
    )


# Encoding -------------------------------------------------------------------------------------


def _json(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_headers() -> dict[str, str]:
    return {"Content-Type": JSON, "Accept": JSON}


def _npy_headers() -> dict[str, str]:
    return {"Content-Type": NPY, "Accept": NPY}


def dump_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npz_headers() -> dict[str, str]:
    return {"Content-Type": NPY, "Accept": NPZ}


def load_npy(response: httpx.Response, kind: str = NPY) -> np.ndarray:
    answered = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if answered != kind:
        raise ServiceError(
            f"expected an {kind} answer, got {answered or 'no content type'}",
            status_code=response.status_code,
            request_id=response.headers.get(REQUEST_ID_HEADER),
        )
    array: np.ndarray = np.load(io.BytesIO(response.content), allow_pickle=False)
    return array


def load_npz(response: httpx.Response) -> dict[str, np.ndarray]:
    """A .npz answer's named arrays."""
    archive: Any = load_npy(response, NPZ)
    with archive:
        return {name: archive[name] for name in archive.files}


def read_json(response: httpx.Response) -> Any:
    return orjson.loads(response.content)


def batch(values: ArrayLike, item_ndim: int, what: str) -> np.ndarray:
    """`values` as a numeric array with a batch dimension (one item gets a batch of one)."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{what}: expected numbers, got an array of dtype {array.dtype}")
    if array.dtype.kind == "f" and array.dtype.itemsize < 4:
        array = array.astype(np.float32)  # orjson and the server read float32/float64
    if array.ndim == item_ndim:
        array = array[np.newaxis]
    return np.ascontiguousarray(array)


def images_batch(images: ArrayLike) -> np.ndarray:
    array = batch(images, 2, "images")
    if array.ndim == 3 and array.shape[1:] == (28, 28, 1):  # one image with a channel axis
        array = array[np.newaxis]
    return array


def infer_scale(array: np.ndarray, scale: Scale | None) -> Scale:
    """`byte` for uint8 pixels, `unit` for anything else, unless given."""
    if scale is not None:
        return scale
    return "byte" if array.dtype == np.uint8 else "unit"


def _model_from_headers(response: httpx.Response) -> ModelRef | None:
    name = response.headers.get("x-model-name")
    version = response.headers.get("x-model-version")
    if name and version and version.isdigit():
        return ModelRef(name, int(version))
    return None


def _model_from_json(body: dict[str, Any]) -> ModelRef | None:
    model = body.get("model")
    if isinstance(model, dict):
        return ModelRef(str(model["name"]), int(model["version"]))
    return None


# The calls ------------------------------------------------------------------------------------


def _images_npy(
    path: str,
    array: np.ndarray,
    scale: str,
    read: Callable[[httpx.Response], T],
    accept: str = NPY,
) -> Call[T]:
    """Images [N, 28, 28] sent as one .npy body, the answer read as `accept` (.npy or .npz)."""
    headers = {"Content-Type": NPY, "Accept": accept}
    return Call(
        "POST", path, read, params={"scale": scale}, content=dump_npy(array), headers=headers
    )


def _images_json(
    path: str, array: np.ndarray, scale: str, read: Callable[[httpx.Response], T]
) -> Call[T]:
    """Images [N, 28, 28] sent as JSON, the answer read as JSON."""
    payload = _json({"images": array, "scale": scale})
    return Call("POST", path, read, content=payload, headers=_json_headers())


def classify(options: Options, images: ArrayLike, scale: Scale | None) -> Call[Classification]:
    array = images_batch(images)
    scale = infer_scale(array, scale)
    path = "/api/v1/digits/classify"
    if options.use_binary(len(array)):

        def read_npz(response: httpx.Response) -> Classification:
            arrays = load_npz(response)
            return Classification(
                arrays["digits"].astype(np.int64),
                arrays["probabilities"].astype(np.float32, copy=False),
                _model_from_headers(response),
                arrays["is_digit"].reshape(-1).astype(bool) if "is_digit" in arrays else None,
                _optional(arrays, "ood_score"),
                _optional(arrays, "not_digit_score"),
            )

        return _images_npy(path, array, scale, read_npz, accept=NPZ)
    return _images_json(path, array, scale, _read_classification)


def _read_classification(response: httpx.Response) -> Classification:
    body = read_json(response)
    predictions = body["predictions"]
    digits = np.array([p["digit"] for p in predictions], dtype=np.int64)
    probabilities = np.array([p["probabilities"] for p in predictions], dtype=np.float32)
    flags = [p.get("is_digit") for p in predictions]
    return Classification(
        digits,
        probabilities.reshape(len(predictions), 10),
        _model_from_json(body),
        None if None in flags else np.array(flags, dtype=bool),
        _column(predictions, "ood_score"),
        _column(predictions, "not_digit_score"),
    )


def _optional(arrays: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    return arrays[name].reshape(-1).astype(np.float64) if name in arrays else None


def _column(predictions: list[dict[str, Any]], name: str) -> np.ndarray | None:
    values = [p.get(name) for p in predictions]
    return None if None in values else np.array(values, dtype=np.float64)


def _sniff_image(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "digit.png", "image/png"
    if data.startswith(b"\xff\xd8"):
        return "digit.jpg", "image/jpeg"
    return "digit", "application/octet-stream"


def classify_image(
    image: bytes, filename: str | None, content_type: str | None
) -> Call[Classification]:
    name, kind = _sniff_image(image)
    return Call(
        "POST",
        "/api/v1/digits/classify/image",
        _read_classification,
        files={"file": (filename or name, bytes(image), content_type or kind)},
        headers={"Accept": JSON},
    )


def compress(options: Options, images: ArrayLike, scale: Scale | None) -> Call[list[bytes]]:
    array = images_batch(images)
    scale = infer_scale(array, scale)
    path = "/api/v1/digits/compress"
    if options.use_binary(len(array)):

        def read_npy(response: httpx.Response) -> list[bytes]:
            return [row.tobytes() for row in load_npy(response).astype(np.uint8, copy=False)]

        return _images_npy(path, array, scale, read_npy)

    def read(response: httpx.Response) -> list[bytes]:
        return [base64.b64decode(code) for code in read_json(response)["codes"]]

    return _images_json(path, array, scale, read)


def decompress(options: Options, codes: Sequence[bytes]) -> Call[np.ndarray]:
    codes = [bytes(code) for code in codes]
    path = "/api/v1/digits/decompress"
    lengths = {len(code) for code in codes}
    # A .npy body is one [N, L] array, so codes of different lengths (versions) go as JSON.
    if options.use_binary(len(codes)) and len(lengths) == 1:
        matrix = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(codes), -1)

        def read_npy(response: httpx.Response) -> np.ndarray:
            return load_npy(response).astype(np.float32, copy=False)

        return Call("POST", path, read_npy, content=dump_npy(matrix), headers=_npy_headers())

    def read(response: httpx.Response) -> np.ndarray:
        images = read_json(response)["images"]
        return np.array(images, dtype=np.float32).reshape(len(images), 28, 28)

    payload = {"codes": [base64.b64encode(code).decode("ascii") for code in codes]}
    return Call("POST", path, read, content=_json(payload), headers=_json_headers())


def _read_energies(response: httpx.Response) -> Energies:
    body = read_json(response)
    exact = body.get("exact_energies")
    errors = body.get("errors")
    energies = np.array(body["energies"], dtype=np.float64)
    std = body.get("energy_std")
    intervals = body.get("energy_interval_95")
    in_domain = body.get("in_domain")
    return Energies(
        energies,
        _model_from_json(body),
        None if exact is None else np.array(exact, dtype=np.float64),
        None if errors is None else np.array(errors, dtype=np.float64),
        answered_by=body.get("answered_by"),
        energy_std=None if std is None else _floats(std),
        energy_interval_95=None
        if intervals is None
        else np.array(
            [[np.nan, np.nan] if i is None else i for i in intervals], dtype=np.float64
        ).reshape(len(energies), 2),
        in_domain=None if in_domain is None else np.array(in_domain, dtype=bool),
        domain_reason_text=body.get("domain_reason_text"),
        mode=body.get("mode"),
    )


def _floats(values: Sequence[float | None]) -> np.ndarray:
    """A JSON list with nulls as float64, null as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _read_energies_npz(response: httpx.Response) -> Energies:
    """A .npz energy answer: the same fields as the JSON one."""
    arrays = load_npz(response)

    def optional(name: str, dtype: Any) -> np.ndarray | None:
        return arrays[name].astype(dtype) if name in arrays else None

    answered_by, reasons = optional("answered_by", str), optional("domain_reason_text", str)
    return Energies(
        arrays["energies"].astype(np.float64),
        _model_from_headers(response),
        optional("exact_energies", np.float64),
        optional("errors", np.float64),
        answered_by=None if answered_by is None else answered_by.tolist(),
        energy_std=optional("energy_std", np.float64),
        energy_interval_95=optional("energy_interval_95", np.float64),
        in_domain=optional("in_domain", bool),
        domain_reason_text=None if reasons is None else reasons.tolist(),
        mode=str(arrays["mode"]) if "mode" in arrays else None,
    )


def energy_from_potential(
    options: Options, potentials: ArrayLike, include_exact: bool, mode: EnergyMode | None = None
) -> Call[Energies]:
    array = batch(potentials, 1, "potentials")
    path = "/api/v1/energy/from-potential"
    if options.use_binary(len(array)):
        params = {"include_exact": "true" if include_exact else "false"}
        if mode is not None:
            params["mode"] = mode
        return Call(
            "POST",
            path,
            _read_energies_npz,
            params=params,
            content=dump_npy(array),
            headers=_npz_headers(),
        )
    payload: dict[str, Any] = {"potentials": array, "include_exact": include_exact}
    if mode is not None:
        payload["mode"] = mode
    return Call("POST", path, _read_energies, content=_json(payload), headers=_json_headers())


def energy_from_density(
    options: Options,
    densities: ArrayLike,
    potentials: ArrayLike | None,
    mode: EnergyMode | None = None,
) -> Call[Energies]:
    array = batch(densities, 1, "densities")
    path = "/api/v1/energy/from-density"
    # The .npy form carries one array, so densities that come with potentials go as JSON.
    if potentials is None and options.use_binary(len(array)):
        return Call(
            "POST",
            path,
            _read_energies_npz,
            params={} if mode is None else {"mode": mode},
            content=dump_npy(array),
            headers=_npz_headers(),
        )
    payload: dict[str, Any] = {"densities": array}
    if mode is not None:
        payload["mode"] = mode
    if potentials is not None:
        payload["potentials"] = batch(potentials, 1, "potentials")
    return Call("POST", path, _read_energies, content=_json(payload), headers=_json_headers())


def exact(options: Options, potentials: ArrayLike) -> Call[ExactSolution]:
    array = batch(potentials, 1, "potentials")
    path = "/api/v1/energy/exact"
    if options.use_binary(len(array)):

        def read_npy(response: httpx.Response) -> ExactSolution:
            columns = load_npy(response).astype(np.float64, copy=False)
            return ExactSolution(columns[:, 0], columns[:, 1:])

        return Call("POST", path, read_npy, content=dump_npy(array), headers=_npy_headers())

    def read(response: httpx.Response) -> ExactSolution:
        body = read_json(response)
        energies = np.array(body["energies"], dtype=np.float64)
        densities = np.array(body["densities"], dtype=np.float64).reshape(len(energies), -1)
        return ExactSolution(energies, densities)

    return Call("POST", path, read, content=_json({"potentials": array}), headers=_json_headers())


def live() -> Call[bool]:
    return Call("GET", "/v2/health/live", lambda response: response.is_success)


def ready() -> Call[bool]:
    # A 503 here is the answer "not ready", not a failure to retry.
    return Call(
        "GET", "/v2/health/ready", lambda response: response.is_success, answers=frozenset({503})
    )


def models() -> Call[list[ModelStatus]]:
    def read(response: httpx.Response) -> list[ModelStatus]:
        return [
            ModelStatus(
                name=m["name"],
                ready=bool(m["ready"]),
                state=m["state"],
                versions=[int(v) for v in m["versions"]],
                failed_versions={int(v): e for v, e in (m.get("failed_versions") or {}).items()},
                error=m.get("error"),
            )
            for m in read_json(response)["models"]
        ]

    return Call("GET", "/api/v1/models", read)


def metadata(name: str, version: int | None) -> Call[dict[str, Any]]:
    path = f"/v1/models/{quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"

    def read(response: httpx.Response) -> dict[str, Any]:
        body: dict[str, Any] = read_json(response)
        return body

    return Call("GET", f"{path}/metadata", read)


def v2_infer(
    options: Options,
    model: str,
    inputs: dict[str, ArrayLike],
    version: int | None,
    outputs: Sequence[str] | None,
    binary: bool | None,
) -> Call[Inference]:
    """`POST /v2/models/{model}[/versions/{version}]/infer`; binary tensor data when `binary`
    (or, when None, from `binary_min_items` rows of the first input up), for inputs and outputs.
    Arrays keep their dtype (the server says which it expects: `GET /v2/models/{model}`)."""
    if not inputs:
        raise ValueError("inputs: expected at least one named tensor, got none")
    arrays = {name: np.asarray(value) for name, value in inputs.items()}
    first = next(iter(arrays.values()))
    rows = first.shape[0] if first.ndim else 1
    use_binary = options.use_binary(rows) if binary is None else binary
    path = f"/v2/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    request_id = uuid.uuid4().hex
    content, headers = _v2.encode_request(arrays, outputs, use_binary, use_binary, request_id)

    def read(response: httpx.Response) -> Inference:
        header, tensors = _v2.decode_response(
            response.content, response.headers.get(_v2.HEADER_LENGTH)
        )
        version_answered = header.get("model_version")
        return Inference(
            model_name=str(header.get("model_name", model)),
            model_version=None if version_answered is None else str(version_answered),
            outputs=tensors,
            id=header.get("id"),
        )

    headers = {**headers, "Accept": f"{JSON}, {_v2.BINARY_CONTENT_TYPE}"}
    headers[REQUEST_ID_HEADER] = request_id
    return Call("POST", f"{path}/infer", read, content=content, headers=headers)
