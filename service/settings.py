"""Settings of the model server: one pydantic-settings class, read from `MLDM_*` env vars.

Every limit the service enforces lives here, so that a deployment tunes it in one place and a test
builds an app with `create_app(Settings(...))`. Validators fail at start-up on unsafe values
instead of letting a bad limit surface as a slow or crashing request later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.registry import BackendPolicy

__all__ = ["REPO_ROOT", "BatchingOverride", "ModelLimits", "Settings"]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: What serves a model version (docs/runtimes.md): `auto` runs the compiled model where it verifies.
BackendSetting = Literal["auto", "tensorflow", "onnxruntime", "openvino", "measure"]


class BatchingOverride(BaseModel):
    """Per-model adaptive batching knobs; a field left unset falls back to the global setting."""

    enabled: bool | None = None
    """Switch batching on or off for this model only."""
    max_batch_size: int | None = Field(default=None, ge=1, le=65536)
    """Largest merged batch (items, not requests) sent to the model in one call."""
    max_wait_ms: float | None = Field(default=None, ge=0.0, le=1000.0)
    """How long the first request of a batch waits for others to join it."""


class ModelLimits(BaseModel):
    """Per-model admission limits; a field left unset falls back to the global setting."""

    max_requests: int | None = Field(default=None, ge=1, le=100_000)
    """Most requests queued or running for one version of this model (`queue_max_requests`)."""
    max_wait_ms: float | None = Field(default=None, ge=1.0, le=600_000.0)
    """Longest expected queue wait admitted for this model (`queue_max_wait_ms`)."""


class Settings(BaseSettings):
    """Configuration of the service; each field is the env var `MLDM_<FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix="MLDM_",
        extra="ignore",
        populate_by_name=True,
        protected_namespaces=("settings_",),
    )

    model_dir: Path = REPO_ROOT / "models"
    """TensorFlow Serving layout: `<model_dir>/<name>/<version>/saved_model.pb`."""

    expected_models: tuple[str, ...] | None = None
    """Models that must be loaded for the server to report itself ready; None (the default):
    every model the app's tasks declare (`service.tasks.model_names()`)."""

    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("MLDM_HOST", "HOST"))
    """Interface to bind; plain `HOST` (set by container platforms) is honoured too."""

    port: int = Field(
        default=8000, ge=1, le=65535, validation_alias=AliasChoices("MLDM_PORT", "PORT")
    )
    """TCP port to bind; plain `PORT` (set by container platforms) is honoured too."""

    workers: int = Field(default=1, ge=1, le=64)
    """Uvicorn worker processes; each one loads every model into its own memory."""

    grpc_port: int | None = Field(default=8081, ge=-1, le=65535)
    """TCP port of the gRPC services (Open Inference Protocol, TF Serving, health) on `host`,
    beside REST on `port`: 8081 as KServe's and MLServer's convention; 0 switches gRPC off; -1
    binds a free port (tests). Several workers share it (SO_REUSEPORT)."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Level of the service's and uvicorn's logs."""

    log_format: Literal["json", "text"] = "json"
    """`json`: one JSON object per line (ts, level, logger, message, request_id, ...); `text`:
    one human-readable line per record."""

    metrics_enabled: bool = True
    """Serve Prometheus metrics at `GET /metrics`."""

    metrics_require_api_key: bool = False
    """Ask for the `X-API-Key` header on `/metrics` too (needs `api_key`); off, `/metrics` is open
    like the health routes, for a scraper on the private network."""

    gzip_min_bytes: int = Field(default=4096, ge=0, le=1024**3)
    """Responses of at least this many bytes are gzip-compressed for clients that accept it;
    0 switches compression off."""

    max_items_per_request: int = Field(
        default=16384,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices(
            "MLDM_MAX_ITEMS_PER_REQUEST",
            "max_items_per_request",
            "MLDM_MAX_BATCH_SIZE",  # its old name, deprecated: kept so deployments keep working
            "max_batch_size",
        ),
    )
    """Most items (images, arrays, codes) accepted in one request; more is a 422. (Not the
    batcher's merged size, which is `batch_max_size`.) `MLDM_MAX_BATCH_SIZE`, its old name, is
    still read."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest request body in bytes; a larger one is refused with 413 before it is read in full."""

    max_image_pixels: int = Field(default=4096 * 4096, ge=28 * 28, le=200_000_000)
    """Largest uploaded image (width x height); checked from the header, before decoding."""

    max_read_digits: int = Field(default=64, ge=1, le=4096)
    """Most digits `POST /api/v1/digits/read` reads from one picture; more is a 422 naming
    `file`."""

    request_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    """Longest time one inference may take before the request is answered 504."""

    cors_origins: list[str] = []
    """Origins allowed by CORS; empty (the default) adds no CORS headers at all."""

    api_key: SecretStr | None = None
    """If set, model routes require the header `X-API-Key` with this value."""

    warmup: bool = True
    """Run every model once on a dummy batch at start-up, so the first request is not slow."""

    batching_enabled: bool = True
    """Merge concurrent requests to the same model into one call (adaptive batching)."""

    batch_max_size: int = Field(default=256, ge=1, le=65536)
    """Default largest merged batch, in items, for adaptive batching."""

    batch_max_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """Default longest wait of the first queued request for others to join its batch. 0 (as
    Triton's default) adds no latency: requests that queue while the model is busy form the next
    batch, so batches still grow under load."""

    batch_pad_sizes: tuple[Annotated[int, Field(ge=1)], ...] | None = None
    """The batch sizes a model is called with (TF Serving's `allowed_batch_sizes`): every call,
    a merged batch or a chunk of a bulk request, is padded up to the next one (repeating its
    last row) and the outputs are cut back to the real rows. TensorFlow/oneDNN keep state per
    input shape, so a server called with every size from 1 to 256 grew by ~300 MiB; with a
    few sizes it stays flat after warm-up. None: powers of two up to the model's largest batch
    (`batch_max_size` or its override), and that size itself; `[]`: no padding. A call larger
    than the largest size is not padded."""

    version_labels: dict[str, dict[str, int]] = {}
    """TensorFlow Serving version labels per model, as JSON: `{"digit_classifier": {"stable": 1,
    "canary": 2}}`; `/v1/models/<name>/labels/<label>` then serves that version."""

    batching: dict[str, BatchingOverride] = {}
    """Per-model overrides, as JSON: `{"digit_classifier": {"max_batch_size": 512}}`."""

    inference_threads: int = Field(default=2, ge=1, le=256)
    """Threads that run model calls off the event loop."""

    reload_interval_s: float = Field(default=0.0, ge=0.0, le=86_400.0)
    """Poll `model_dir` for new model versions every this many seconds (a cheap stat of the
    tree; a changed one is loaded in a thread); 0, the default, turns polling off.
    `POST /admin/reload` reloads on demand either way (it needs `api_key` to be set)."""

    shutdown_grace_s: float = Field(default=30.0, ge=0.0, le=3600.0)
    """On SIGTERM, how long requests in flight may take to finish (no new ones are accepted)
    before they are cancelled; set it at least to `request_timeout_s`."""

    keep_alive_s: int = Field(default=5, ge=1, le=3600)
    """Seconds an idle keep-alive connection stays open (uvicorn's default, 5). Behind a balancer
    that keeps upstream connections open (nginx `keepalive`, Envoy), the balancer must close idle
    ones first - its idle timeout below this, or this above it - else a request can be sent on a
    connection the service is closing at that moment, and the balancer answers 502."""

    energy_auto_max_std: float = Field(default=0.0016, gt=0.0, le=10.0)
    """Energy requests with `mode=auto`: the model's answer stands only inside its domain and
    with a 1-sigma uncertainty (`energy_std`) of at most this many Hartree (default 1.6 mHa,
    chemical accuracy); the exact solver answers the rest."""

    backend: BackendSetting = "auto"
    """Which runtime serves each model version (docs/runtimes.md). `auto` (= `onnxruntime`
    today): the compiled `model.onnx` (ONNX Runtime) for every batch size wherever it is the file
    the card records and reproduces TensorFlow's stored outputs, without importing TensorFlow
    unless a version needs it; `openvino`: the same with OpenVINO (an optional package, not in
    the image), ONNX Runtime where OpenVINO is refused or missing; `measure`: TensorFlow and each
    compiled runtime that verifies (OpenVINO where installed) loaded, the fastest per batch size
    as timed at load (1, 8, 64); `tensorflow`: the SavedModel signature only. A compiled model
    that differs from TensorFlow's stored outputs is refused and TensorFlow serves."""

    backends: dict[str, BackendSetting] = {}
    """Per-model overrides of `backend`, as JSON: `{"energy_from_potential": "tensorflow"}`."""

    onnxruntime_threads: int = Field(default=1, ge=1, le=64)
    """Intra-op threads of each ONNX Runtime session; 1 by default, as the server already runs
    `inference_threads` calls side by side."""

    openvino_threads: int = Field(default=1, ge=1, le=64)
    """Inference threads of each OpenVINO compiled model (`backend` `openvino` or `measure`, where
    the optional openvino package is installed); 1 by default, as for ONNX Runtime."""

    inline_max_ms: float = Field(default=1.0, ge=0.0, le=100.0)
    """A model call on a compiled runtime (not TensorFlow) expected to take at most this long
    (its items times the version's measured seconds per item) runs on the event loop instead of
    an inference thread, when nothing else waits for the model: a batch-1 ONNX Runtime call of
    0.05-0.4 ms is shorter than the hop to a thread and back, ~250 us of CPU
    (docs/performance.md, "Request path"). Longer calls, and every call before the first is
    measured, go to a thread. 0: every call in a thread."""

    # Overload, slow clients and shutdown (docs/reliability.md) ----------------------

    queue_max_requests: int = Field(default=64, ge=1, le=100_000)
    """Admission control: most requests one model version holds at once in one worker, queued
    or running; one more is answered 503 with `Retry-After` at once, before any work."""

    queue_max_wait_ms: float = Field(default=250.0, ge=1.0, le=600_000.0)
    """Admission control: a request whose expected wait (the items queued before it times the
    model's measured seconds per item) is over this is answered 503 with `Retry-After`."""

    model_limits: dict[str, ModelLimits] = {}
    """Per-model admission overrides, as JSON: `{"energy_from_potential": {"max_requests": 8}}`."""

    max_in_flight: int = Field(default=512, ge=1, le=1_000_000)
    """Most requests one worker handles at once (every route but health and `/metrics`, which
    are never limited); one more is answered 503 with `Retry-After` before its body is read.
    Below it the server keeps an adaptive limit: the requests it answers in `queue_max_wait_ms`
    at its rate of the last second (Little's law), at least 64."""

    max_connections: int = Field(default=2048, ge=1, le=1_000_000)
    """Most open connections per worker; a connection beyond it gets one 503 and is closed.
    Keep it under the file-descriptor limit (`ulimit -n`)."""

    backlog: int = Field(default=4096, ge=16, le=65535)
    """Listen backlog (connections the kernel completes before the server accepts them); the
    kernel caps it at `net.core.somaxconn`. A full backlog makes the kernel drop or reset new
    connections, so it is sized above `max_connections`' bursts."""

    max_body_bytes_in_flight: int = Field(default=64 * 1024 * 1024, ge=1024, le=64 * 1024**3)
    """Most bytes of request bodies one worker holds at once (declared lengths reserved on
    arrival, chunked bodies counted as they stream); a request past it is answered 503 with
    `Retry-After` at once. A parsed JSON body takes several times its size in memory, so this
    bounds the memory a burst of large uploads can take; one body alone may always reach
    `max_body_bytes`."""

    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest request head (request line + headers); a larger one is answered 431 and the
    connection closed, before the rest is read or parsed."""

    header_timeout_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Longest time to receive a whole request head, counted from the connection (or its first
    byte after a keep-alive pause); a slower client gets 408 and is disconnected."""

    body_timeout_s: float = Field(default=60.0, gt=0.0, le=3600.0)
    """Longest time to receive a whole request body once its head arrived (a total, so a body
    trickled a byte at a time cannot hold the connection); a slower client gets 408."""

    solver_threads: int = Field(default=1, ge=1, le=256)
    """Threads of the exact solver (energy `mode=exact` / `auto`, `/energy/exact`): its own
    pool, so solver work never waits in front of the models in `inference_threads`."""

    solver_max_queue: int = Field(default=8, ge=1, le=100_000)
    """Most solver calls one worker holds at once (running or waiting for a solver thread);
    one more is answered 503 with `Retry-After`."""

    @field_validator("model_dir")
    @classmethod
    def _model_dir_absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("version_labels")
    @classmethod
    def _labels_name_versions(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for model, labels in value.items():
            for label, version in labels.items():
                if version < 1:
                    raise ValueError(f"label {label!r} of {model!r}: versions are positive")
                if not label or not label.replace("_", "").replace("-", "").isalnum():
                    raise ValueError(f"label {label!r} of {model!r}: letters, digits, - and _")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins_explicit(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must start with http:// or https://")
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("api_key must be at least 16 characters")
        # HTTP header values arrive as latin-1 text: a key with other characters (or spaces that
        # proxies trim) could never match, and every request would be refused.
        key = value.get_secret_value() if value is not None else ""
        if key and not (key.isascii() and key.isprintable() and key == key.strip()):
            raise ValueError("api_key must be printable ASCII without leading or trailing spaces")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.metrics_require_api_key and self.api_key is None:
            raise ValueError("metrics_require_api_key needs api_key to be set")
        if self.api_key is not None and "*" in self.cors_origins:
            raise ValueError(
                "cors_origins='*' together with api_key would expose the key to any site"
            )
        return self

    def pad_sizes_for(self, model: str) -> tuple[int, ...]:
        """The allowed batch sizes of one model's calls, ascending (empty: no padding)."""
        if self.batch_pad_sizes is not None:
            return tuple(sorted(set(self.batch_pad_sizes)))
        largest = self.batching_for(model)[1]
        powers = [1 << i for i in range(largest.bit_length()) if 1 << i < largest]
        return (*powers, largest)

    def backend_policy(self) -> BackendPolicy:
        """The registry's backend choice from `backend`, `backends` and the runtimes' threads."""
        return BackendPolicy(
            default=self.backend,
            per_model=dict(self.backends),
            onnxruntime_threads=self.onnxruntime_threads,
            openvino_threads=self.openvino_threads,
        )

    def admission_for(self, model: str) -> tuple[int, float]:
        """(most requests queued or running, longest expected wait in seconds) of one model."""
        limits = self.model_limits.get(model, ModelLimits())
        requests = limits.max_requests or self.queue_max_requests
        wait_ms = limits.max_wait_ms or self.queue_max_wait_ms
        return requests, wait_ms / 1000.0

    def batching_for(self, model: str) -> tuple[bool, int, float]:
        """(enabled, max batch size, max wait in seconds) of adaptive batching for one model."""
        override = self.batching.get(model, BatchingOverride())
        enabled = self.batching_enabled if override.enabled is None else override.enabled
        size = override.max_batch_size or self.batch_max_size
        wait_ms = self.batch_max_wait_ms if override.max_wait_ms is None else override.max_wait_ms
        return enabled, size, wait_ms / 1000.0
