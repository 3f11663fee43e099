"""The model repository: finds SavedModels under `model_dir`, loads every version, tracks state.

TensorFlow Serving's layout (`<name>/<version>/saved_model.pb`). Each version's `serving_default`
signature is looked up once at load time; its input and output specs (names, dtypes, shapes) are
read from the signature itself, so nothing about a model is hard-coded here beyond its name.
A model or version that fails to load is recorded with its error and never stops the others.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.backends.base import COMPILED, ONNX_FILE, OPTIONAL
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.backends.openvino import OpenVinoBackend
from service.backends.select import MEASURE_SIZES, Plan, choose, measure
from service.backends.tensorflow import TensorFlowBackend
from service.backends.verify import VerificationBatch, compare
from service.errors import ModelNotReady, NotFound

if TYPE_CHECKING:
    from service.backends.base import Backend

logger = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
#: Settings that load a verified compiled model alone, without TensorFlow (docs/runtimes.md):
#: the compiled runtimes each tries in turn; TensorFlow serves when all are refused.
COMPILED_FIRST: dict[str, tuple[str, ...]] = {
    "auto": ("onnxruntime",),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino", "onnxruntime"),
}
NOT_COMPILED = "no model.onnx beside saved_model.pb (make compile-models)"


class ModelState(enum.StrEnum):
    """TensorFlow Serving's model version states (the ones this server goes through)."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    FAILED = "END"  # TF Serving reports a version that failed to load as END with an error


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature: numpy dtype and shape (None for a free dimension)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...]

    @property
    def item_shape(self) -> tuple[int | None, ...]:
        """The shape of one item, without the batch dimension."""
        return self.shape[1:]


@dataclass(frozen=True)
class BackendPolicy:
    """How the registry picks the backend of each version (docs/runtimes.md)."""

    default: str = "auto"
    """`auto` or `onnxruntime` (the compiled model wherever it verifies, TensorFlow only where it
    does not), `openvino` (the same with OpenVINO, then ONNX Runtime), `measure` (every verified
    runtime loaded, the fastest per batch size at load) or `tensorflow`."""
    per_model: Mapping[str, str] = field(default_factory=dict)
    """Overrides of `default` by model name."""
    onnxruntime_threads: int = 1
    """Intra-op threads of each ONNX Runtime session."""
    openvino_threads: int = 1
    """Inference threads of each OpenVINO compiled model."""
    measure_sizes: tuple[int, ...] = MEASURE_SIZES
    """The batch sizes `measure` times each backend at."""
    measure_repeats: int = 9
    """Calls per backend and size whose median `measure` compares."""

    def for_model(self, name: str) -> str:
        return self.per_model.get(name, self.default)


@dataclass
class ModelVersion:
    """One loaded SavedModel version: its backends, the plan that picks one per batch size, and
    its model card (with a `serving` section saying which backend serves what, and why)."""

    name: str
    version: int
    path: Path
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    card: dict[str, Any]
    card_markdown: str | None
    backends: dict[str, Backend] = field(repr=False)
    plan: Plan = field(default_factory=lambda: Plan.single("tensorflow"))
    refused: dict[str, str] = field(default_factory=dict)
    """Compiled backends refused for this version: name -> reason (a differing output, a
    missing package or file)."""

    @property
    def input(self) -> TensorSpec:
        """The single input of the contract's signatures."""
        return next(iter(self.inputs.values()))

    @property
    def output(self) -> TensorSpec:
        """The primary output: the one the model card names as ``primary_output`` (a version
        with extra outputs, such as digit_classifier v2's ``ood_score`` and ``is_digit``),
        otherwise the first (for single-output models, the only) one."""
        primary = self.card.get("primary_output")
        if isinstance(primary, str) and primary in self.outputs:
            return self.outputs[primary]
        return next(iter(self.outputs.values()))

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the backend the plan names for this batch size, on arrays already of the
        signature's dtype and shape (blocking)."""
        items = len(next(iter(inputs.values())))
        return self.backends[self.plan.for_size(items)].run(inputs)

    def backend_for(self, items: int) -> str:
        """The name of the backend that serves a batch of `items`."""
        return self.plan.for_size(items)

    def predict_one(self, array: np.ndarray) -> np.ndarray:
        """Call a one-input, one-output signature: array in, array out (blocking)."""
        return self.predict({self.input.name: array})[self.output.name]

    def warm_up(self) -> None:
        """Run every backend in use once on zeros, so the first request does not pay for
        tracing or session set-up."""
        dummy = {
            spec.name: np.zeros([1 if d is None else d for d in spec.shape], dtype=spec.dtype)
            for spec in self.inputs.values()
        }
        for name in self.plan.backends:
            self.backends[name].run(dummy)


@dataclass
class ModelEntry:
    """Everything the server knows about one model name: its versions and their states."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    error: str | None = None
    loading: bool = False

    @property
    def state(self) -> ModelState:
        if self.loading:
            return ModelState.LOADING
        return ModelState.AVAILABLE if self.versions else ModelState.FAILED

    @property
    def ready(self) -> bool:
        return self.state is ModelState.AVAILABLE

    @property
    def latest(self) -> ModelVersion:
        return self.versions[max(self.versions)]

    def status_message(self) -> str:
        if self.loading:
            return f"model {self.name!r} is still loading"
        if self.error:
            return f"model {self.name!r} is not available: {self.error}"
        reasons = "; ".join(f"version {v}: {e}" for v, e in sorted(self.failed.items()))
        return f"model {self.name!r} is not available: {reasons or 'no version loaded'}"


def _numpy_dtype(tf_dtype: Any) -> np.dtype[Any]:
    return np.dtype(tf_dtype.as_numpy_dtype)


def _spec(name: str, tf_spec: Any) -> TensorSpec:
    shape = tuple(None if d is None else int(d) for d in tf_spec.shape.as_list())
    return TensorSpec(name=name, dtype=_numpy_dtype(tf_spec.dtype), shape=shape)


def _read_card(version_dir: Path) -> tuple[dict[str, Any], str | None]:
    card: dict[str, Any] = {}
    metrics = version_dir / "metrics.json"
    if metrics.is_file():
        try:
            loaded = json.loads(metrics.read_text(encoding="utf-8"))
            card = loaded if isinstance(loaded, dict) else {"metrics.json": loaded}
        except (OSError, ValueError) as exc:
            logger.warning("unreadable model card %s: %s", metrics, exc)
            card = {"error": f"metrics.json is unreadable: {exc}"}
    markdown = version_dir / "MODEL_CARD.md"
    text = markdown.read_text(encoding="utf-8") if markdown.is_file() else None
    return card, text


@dataclass(frozen=True)
class _Source:
    """A version's folder and card: what every loader's `ModelVersion` shares."""

    name: str
    version: int
    path: Path
    card: dict[str, Any]
    markdown: str | None

    def model(
        self,
        inputs: dict[str, TensorSpec],
        outputs: dict[str, TensorSpec],
        backends: dict[str, Backend],
    ) -> ModelVersion:
        return ModelVersion(
            name=self.name,
            version=self.version,
            path=self.path,
            inputs=inputs,
            outputs=outputs,
            card=self.card,
            card_markdown=self.markdown,
            backends=backends,
        )


def load_version(
    name: str, version: int, path: Path, policy: BackendPolicy | None = None
) -> ModelVersion:
    """Load one SavedModel version, its signature's specs and, as the policy asks, a compiled
    backend verified against TensorFlow's stored outputs.

    With `auto` (the default), `onnxruntime` or `openvino`, a version whose compiled model
    verifies is loaded without TensorFlow at all (specs from the model card's signature);
    TensorFlow is imported only for a version whose compiled model is refused or missing, which
    it then serves."""
    policy = policy or BackendPolicy()
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"no saved_model.pb in {path}")
    card, markdown = _read_card(path)
    source = _Source(name, version, path, card, markdown)
    refused: dict[str, str] | None = None
    setting = policy.for_model(name)
    if setting in COMPILED_FIRST:
        compiled, refused = _load_compiled_only(source, policy, setting)
        if compiled is not None:
            return compiled

    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if SIGNATURE_NAME not in loaded.signatures:
        raise ValueError(f"no {SIGNATURE_NAME!r} signature (found {sorted(loaded.signatures)})")
    signature = loaded.signatures[SIGNATURE_NAME]
    _, input_specs = signature.structured_input_signature
    if not input_specs:
        raise ValueError("the serving signature has no named inputs")
    inputs = {key: _spec(key, spec) for key, spec in sorted(input_specs.items())}
    outputs = {key: _spec(key, spec) for key, spec in sorted(signature.structured_outputs.items())}
    # The signature needs its SavedModel object (variables) alive.
    reference = TensorFlowBackend(signature, keepalive=loaded)
    model = source.model(inputs, outputs, {"tensorflow": reference})
    if refused is not None:
        for backend, reason in refused.items():
            _refuse(model, backend, reason)
        model.card["serving"] = {"setting": setting}
        if not refused:
            model.card["serving"]["not_compiled"] = NOT_COMPILED
        _serve_with(model, Plan.single("tensorflow"), model.card["serving"])
    else:
        _choose_backend(model, policy)
    return model


def _card_specs(card: Mapping[str, Any], side: str) -> dict[str, TensorSpec]:
    """`{name: TensorSpec}` of the card's `signature.inputs` or `.outputs` (KeyError if none)."""
    described = card["signature"][side]
    return {
        key: TensorSpec(
            name=key,
            dtype=np.dtype(spec["dtype"]),
            shape=tuple(None if d is None else int(d) for d in spec["shape"]),
        )
        for key, spec in sorted(described.items())
    }


def _load_compiled(name: str, path: Path, policy: BackendPolicy) -> Backend:
    """One compiled backend over `<path>/model.onnx` (ImportError without its package)."""
    if name == "openvino":
        return OpenVinoBackend.load(path / ONNX_FILE, policy.openvino_threads)
    return OnnxRuntimeBackend.load(path / ONNX_FILE, policy.onnxruntime_threads)


def _unrecorded(card: Mapping[str, Any], onnx_path: Path) -> str | None:
    """Why `model.onnx` cannot be trusted as this version's, or None. The card is rewritten by
    every export: a model.onnx whose hash the card does not hold was compiled from another
    SavedModel (and its verification file is as stale)."""
    compiled = card.get("compiled", {}).get("onnxruntime", {})
    if compiled.get("sha256") != hashlib.sha256(onnx_path.read_bytes()).hexdigest():
        return "model.onnx is not the one this version's card records (recompile it)"
    return None


def _load_compiled_only(
    source: _Source, policy: BackendPolicy, setting: str
) -> tuple[ModelVersion | None, dict[str, str]]:
    """The version served by the first of the setting's compiled runtimes that verifies, without
    importing TensorFlow; otherwise None and why each was refused (none for a version never
    compiled, which is no refusal)."""
    path, card = source.path, source.card
    onnx_path = path / ONNX_FILE
    if not onnx_path.is_file():
        return None, {}
    candidates = COMPILED_FIRST[setting]
    if stale := _unrecorded(card, onnx_path):
        return None, dict.fromkeys(candidates, stale)
    # The specs and the verification batch are the version's, whichever runtime is tried.
    try:
        inputs, outputs = _card_specs(card, "inputs"), _card_specs(card, "outputs")
        batch = VerificationBatch.load(path)
    except Exception as exc:  # any broken file costs only the compiled backends
        return None, dict.fromkeys(candidates, f"{type(exc).__name__}: {exc}")
    if sorted(batch.reference) != sorted(outputs):
        wrong = f"verification.npz has outputs {sorted(batch.reference)}, not {sorted(outputs)}"
        return None, dict.fromkeys(candidates, wrong)
    refused: dict[str, str] = {}
    for name in candidates:
        try:
            backend = _load_compiled(name, path, policy)
            result = compare(batch.reference, backend.run(batch.inputs))
        except ImportError as exc:
            refused[name] = f"the {name} package is not importable ({exc})"
            continue
        except Exception as exc:  # any broken file costs only the compiled backend
            refused[name] = f"{type(exc).__name__}: {exc}"
            continue
        if not result.equal:
            refused[name] = "differs from TensorFlow: " + "; ".join(result.problems)
            continue
        model = source.model(inputs, outputs, {name: backend})
        for other, reason in refused.items():
            _refuse(model, other, reason, serves=name)
        serving: dict[str, Any] = {
            "setting": setting,
            "tensorflow": "not loaded (the compiled model verified against the stored outputs)",
            "verification": {
                "items": len(next(iter(batch.inputs.values()))),
                f"{name}_max_abs_diff": result.differences,
            },
        }
        model.card["serving"] = serving
        _serve_with(model, Plan.single(name), serving)
        return model, {}
    return None, refused


def _choose_backend(model: ModelVersion, policy: BackendPolicy) -> None:
    """`tensorflow` or `measure`: with `measure`, add each compiled backend that reproduces
    TensorFlow's stored outputs (while TensorFlow still does) and keep the fastest per batch
    size; set the plan; record the facts in the card's `serving` section."""
    wanted = policy.for_model(model.name)
    serving: dict[str, Any] = {"setting": wanted}
    model.card["serving"] = serving
    verified = None if wanted == "tensorflow" else _verified_compiled(model, policy, serving)
    if verified is None:
        model.plan = Plan.single("tensorflow")
    else:
        compiled, batch = verified
        model.backends.update(compiled)
        timings = measure(
            {key: backend.run for key, backend in model.backends.items()},
            batch.inputs,
            policy.measure_sizes,
            policy.measure_repeats,
        )
        model.plan = choose(timings)
        serving["measured_us"] = {
            key: {str(size): round(s * 1e6, 1) for size, s in per_size.items()}
            for key, per_size in timings.items()
        }
    _serve_with(model, model.plan, serving)


def _serve_with(model: ModelVersion, plan: Plan, serving: dict[str, Any]) -> None:
    model.plan = plan
    serving["backend"] = "+".join(plan.backends)
    serving["by_batch_size"] = plan.describe()
    if model.refused:
        serving["refused"] = dict(model.refused)
    logger.info(
        "model %s version %s served by %s (setting %s)",
        model.name,
        model.version,
        serving["by_batch_size"],
        serving["setting"],
    )


def _verified_compiled(
    model: ModelVersion, policy: BackendPolicy, serving: dict[str, Any]
) -> tuple[dict[str, Backend], VerificationBatch] | None:
    """The compiled backends of a version (`COMPILED`) that load and equal TensorFlow on the
    stored verification batch, with that batch (the one their timing uses); None if none does.
    Each refused one has its reason in `model.refused` and a log line; a version never compiled
    says so in `serving["not_compiled"]`; an optional runtime whose package is not installed is
    only noted in `serving["not_installed"]`."""
    if not (model.path / ONNX_FILE).is_file():
        serving["not_compiled"] = NOT_COMPILED
        return None
    # The same two staleness checks as without TensorFlow (the card's hash of model.onnx), and
    # with it (the stored outputs are still this SavedModel's, below).
    if unrecorded := _unrecorded(model.card, model.path / ONNX_FILE):
        for name in _installed(COMPILED):
            _refuse(model, name, unrecorded)
        return None
    try:
        batch = VerificationBatch.load(model.path)
    except Exception as exc:  # an unreadable file must only cost the compiled backends
        for name in _installed(COMPILED):
            _refuse(model, name, f"{type(exc).__name__}: {exc}")
        return None
    # The stored reference must still be this SavedModel's: a stale verification file (a model
    # re-exported without `make compile-models`) proves nothing about the compiled one.
    stale = compare(batch.reference, model.backends["tensorflow"].run(batch.inputs))
    if not stale.equal:
        reason = "verification.npz is not this SavedModel's: " + "; ".join(stale.problems)
        for name in _installed(COMPILED):
            _refuse(model, name, reason)
        return None
    verified: dict[str, Backend] = {}
    checked: dict[str, Any] = {"items": len(next(iter(batch.inputs.values())))}
    for name in COMPILED:
        try:
            backend = _load_compiled(name, model.path, policy)
        except ImportError as exc:
            if name in OPTIONAL:
                serving.setdefault("not_installed", {})[name] = str(exc)
            else:
                _refuse(model, name, f"the {name} package is not importable ({exc})")
            continue
        except Exception as exc:
            _refuse(model, name, f"{type(exc).__name__}: {exc}")
            continue
        try:
            outputs = backend.run(batch.inputs)
        except Exception as exc:
            _refuse(model, name, f"fails on the verification batch: {type(exc).__name__}: {exc}")
            continue
        result = compare(batch.reference, outputs)
        checked[f"{name}_max_abs_diff"] = result.differences
        if not result.equal:
            _refuse(model, name, "differs from TensorFlow: " + "; ".join(result.problems))
            continue
        verified[name] = backend
    serving["verification"] = checked
    return (verified, batch) if verified else None


def _installed(names: Iterable[str]) -> list[str]:
    """The names whose package is importable, or is not optional (their absence is a refusal)."""
    return [n for n in names if n not in OPTIONAL or importlib.util.find_spec(n) is not None]


def _refuse(model: ModelVersion, backend: str, reason: str, serves: str = "TensorFlow") -> None:
    model.refused[backend] = reason
    logger.error(
        "model %s version %s: %s refused, %s serves it: %s",
        model.name,
        model.version,
        backend,
        serves,
        reason,
    )


def parse_version(text: str, field: str = "version") -> int:
    """A version as a client writes it (a path segment, gRPC's `model_version`) as a positive
    integer; anything else is a 404 naming `field`."""
    # ASCII digits only: str.isdigit() accepts '²', which int() then refuses (a 500).
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise NotFound(
            f"version must be a positive integer, received {text!r}",
            field=field,
            expected="a positive integer",
            received=repr(text),
        )
    return int(text)


def discover_versions(model_path: Path) -> list[int]:
    """Version numbers under `<model_dir>/<name>/`: positive-integer folder names, ascending."""
    versions = []
    for child in model_path.iterdir():
        # ASCII digits only: a folder named '²' passes str.isdigit() but not int().
        name = child.name
        if child.is_dir() and name.isascii() and name.isdigit() and int(name) > 0:
            versions.append(int(name))
    return sorted(versions)


class ModelRegistry:
    """All models of one server: loaded at start-up, looked up per request, reloadable."""

    def __init__(
        self,
        model_dir: Path,
        expected: Iterable[str] = (),
        backends: BackendPolicy | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.expected = tuple(expected)
        self.backends = backends or BackendPolicy()
        self._entries: dict[str, ModelEntry] = {
            name: ModelEntry(name=name, loading=True) for name in self.expected
        }
        self._lock = threading.Lock()
        self.loaded = False

    # Loading ---------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Expected models first (contract order), then any other model found on disk."""
        extra = sorted(set(self._entries) - set(self.expected))
        return [*self.expected, *extra]

    def load(self, warm_up: bool = False) -> None:
        """Scan `model_dir` and load every version not loaded yet (also a reload)."""
        names = set(self.expected)
        if self.model_dir.is_dir():
            names |= {
                p.name
                for p in self.model_dir.iterdir()
                if p.is_dir() and not p.name.startswith(".")
            }
        for name in sorted(names):
            self.load_model(name, warm_up=warm_up)
        self.loaded = True

    def load_model(self, name: str, warm_up: bool = False) -> ModelEntry:
        """Load the versions of one model that are new on disk; keep the ones already loaded."""
        with self._lock:
            old = self._entries.get(name)
        loaded = dict(old.versions) if old else {}
        entry = ModelEntry(name=name, versions=loaded)
        model_path = self.model_dir / name
        if not model_path.is_dir():
            entry.error = f"no directory {name}/ in the model directory"
        else:
            versions = discover_versions(model_path)
            if not versions and not loaded:
                entry.error = f"no version folders in {name}/"
            for version in versions:
                if version in loaded:
                    continue
                try:
                    model = load_version(name, version, model_path / str(version), self.backends)
                    if warm_up:
                        model.warm_up()
                except Exception as exc:  # any broken file must only disable this version
                    logger.error("model %s version %s failed to load: %s", name, version, exc)
                    # Clients see this text: name the folder, not the server's file system.
                    text = str(exc).replace(str(self.model_dir), "<model_dir>")
                    entry.failed[version] = f"{type(exc).__name__}: {text}"
                else:
                    entry.versions[version] = model
                    logger.info("loaded model %s version %s from %s", name, version, model.path)
        with self._lock:
            self._entries[name] = entry
        return entry

    # Lookup ----------------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        """The entry of a known model; unknown names are a 404."""
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(
                f"model {name!r} not found; known models: {', '.join(self.model_names())}",
                field="model",
                expected=" | ".join(self.model_names()),
                received=repr(name),
            )
        return entry

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """A servable version (the latest when `version` is None); 404 unknown, 503 not ready."""
        entry = self.entry(name)
        if version is None:
            if not entry.ready:
                raise ModelNotReady(entry.status_message())
            return entry.latest
        if version in entry.versions:
            return entry.versions[version]
        if version in entry.failed:
            raise ModelNotReady(
                f"model {name!r} version {version} failed to load: {entry.failed[version]}"
            )
        if entry.loading:
            raise ModelNotReady(entry.status_message())
        available = ", ".join(map(str, sorted(entry.versions))) or "none"
        raise NotFound(
            f"model {name!r} has no version {version}; loaded versions: {available}",
            field="version",
            expected=available,
            received=str(version),
        )

    def entries(self) -> list[ModelEntry]:
        return [self._entries[name] for name in self.model_names()]

    @property
    def ready(self) -> bool:
        """True when every expected model has at least one loaded version."""
        return all(self._entries[name].ready for name in self.expected)

    def not_ready(self) -> list[str]:
        return [name for name in self.expected if not self._entries[name].ready]
