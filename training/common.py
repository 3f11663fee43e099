"""Plumbing shared by the four training tasks: seeding, fitting, SavedModel export and loading,
batched calls through a signature, model versions and model cards (``metrics.json`` +
``MODEL_CARD.md``)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_DIR = REPO_ROOT / "models"
SIGNATURE = "serving_default"


@dataclass
class TrainResult:
    """What ``train(config, data)`` returns: the trained inference models and how they got there.

    ``models`` maps a role (``"classifier"``, ``"encoder"``, ...) to the Keras model that is
    exported; ``history`` holds the per-epoch curves Keras recorded; ``extras`` carries
    task-specific values needed at export time (for example a latent scale).
    """

    task: str
    config: Any
    models: dict[str, keras.Model]
    history: dict[str, list[float]]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exported:
    """One exported SavedModel and the figures measured through its signature."""

    name: str
    version: int
    path: Path
    metrics: dict[str, float]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow; same command, same model (up to float noise)."""
    keras.utils.set_random_seed(seed)


def keras_verbosity() -> int:
    """Progress bars on a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def history_dict(history: keras.callbacks.History) -> dict[str, list[float]]:
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def count_parameters(model: keras.Model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def export_saved_model(
    path: Path,
    tracked: Sequence[keras.Model],
    fn: Callable[[tf.Tensor], dict[str, tf.Tensor]],
    input_name: str,
    input_spec: tf.TensorSpec,
) -> None:
    """Write ``fn`` as the only signature, ``serving_default``, of a SavedModel at ``path``.

    Only the variables of ``tracked`` are saved (no optimizer state); ``fn`` takes one tensor
    whose signature name is ``input_name`` and returns a dict of named outputs.
    """
    # A bare tf.Module rather than keras.export.ExportArchive: the archive tracks every variable
    # twice (as `variables` and `_all_variables`), which doubles the size of variables/.
    module = tf.Module()
    module.weights = [_backing_variable(v) for model in tracked for v in model.weights]
    spec = tf.TensorSpec(input_spec.shape, input_spec.dtype, name=input_name)
    module.serve = tf.function(fn, input_signature=[spec])
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(
        module, str(path), signatures={SIGNATURE: module.serve.get_concrete_function()}
    )


def _backing_variable(variable: Any) -> tf.Variable:
    """The tf.Variable behind a Keras 3 variable (what a traced function captures)."""
    value = getattr(variable, "value", variable)
    return value if isinstance(value, tf.Variable) else variable


def load_signature(path: Path) -> Any:
    """The ``serving_default`` concrete function of the SavedModel at ``path``."""
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures[SIGNATURE]
    # The signature does not hold a reference to its SavedModel; keep it alive.
    signature._loaded_model = loaded
    return signature


def signature_description(signature: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"inputs": {name: {dtype, shape}}, "outputs": {...}}`` of a loaded signature."""

    def describe(spec: tf.TensorSpec) -> dict[str, Any]:
        return {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}

    _, inputs = signature.structured_input_signature
    return {
        "inputs": {name: describe(spec) for name, spec in inputs.items()},
        "outputs": {name: describe(spec) for name, spec in signature.structured_outputs.items()},
    }


def call_batched(
    signature: Any, inputs: np.ndarray, input_name: str, output_name: str, batch_size: int = 1000
) -> np.ndarray:
    """Run ``inputs`` through a signature in batches and concatenate ``output_name``."""
    dtype = signature.structured_input_signature[1][input_name].dtype
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = tf.constant(inputs[start : start + batch_size], dtype=dtype)
        outputs.append(signature(**{input_name: batch})[output_name].numpy())
    return np.concatenate(outputs)


def version_dirs(models_dir: Path, name: str) -> list[int]:
    """The integer versions of model ``name`` under ``models_dir``, ascending."""
    base = models_dir / name
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(models_dir: Path, names: Sequence[str]) -> int:
    """One more than the highest existing version of any of ``names`` (1 when there is none)."""
    return max((v for name in names for v in version_dirs(models_dir, name)), default=0) + 1


def latest_version(models_dir: Path, name: str) -> int:
    versions = version_dirs(models_dir, name)
    if not versions:
        raise FileNotFoundError(f"no exported versions of {name!r} under {models_dir}")
    return versions[-1]


def git_commit() -> str:
    """The commit the code was trained from, suffixed ``-dirty`` if training/ has local edits."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training", "data"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


#: The commit this process's code came from, taken at import (before training starts), so that a
#: commit made while a long run is going does not end up in its model card.
STARTED_FROM = git_commit()


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def config_dict(config: Any) -> dict[str, Any]:
    return {key: (list(v) if isinstance(v, tuple) else v) for key, v in asdict(config).items()}


def write_model_card(
    path: Path,
    *,
    name: str,
    version: int,
    task: str,
    config: Any,
    parameters: int,
    training_seconds: float,
    data: Mapping[str, Any],
    metrics: Mapping[str, float],
    summary: str,
    targets: Mapping[str, str],
    plots: Sequence[str],
    command: str,
) -> dict[str, Any]:
    """Write ``metrics.json`` and ``MODEL_CARD.md`` into the version folder ``path``."""
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": task,
        "config": config.name,
        "hyperparameters": config_dict(config),
        "parameters": parameters,
        "training_seconds": round(training_seconds, 1),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "git_commit": STARTED_FROM,
        "data": dict(data),
        "signature": signature_description(load_signature(path)),
        "metrics": {key: float(value) for key, value in metrics.items()},
        "created": utc_now(),
        "command": command,
    }
    (path / "metrics.json").write_text(json.dumps(card, indent=2) + "\n")
    (path / "MODEL_CARD.md").write_text(_markdown_card(card, summary, targets, plots))
    return card


def _markdown_card(
    card: Mapping[str, Any], summary: str, targets: Mapping[str, str], plots: Sequence[str]
) -> str:
    sig = card["signature"]
    lines = [
        f"# {card['name']} v{card['version']}",
        "",
        f"{card['task']}",
        "",
        summary.strip(),
        "",
        "## Figures on the test split",
        "",
        "| metric | value | target |",
        "| --- | --- | --- |",
    ]
    for key, value in card["metrics"].items():
        lines.append(f"| {key} | {value:.6g} | {targets.get(key, '')} |")
    lines += [
        "",
        "## Signature `serving_default`",
        "",
        "| direction | name | dtype | shape |",
        "| --- | --- | --- | --- |",
    ]
    for direction in ("inputs", "outputs"):
        for key, spec in sig[direction].items():
            shape = "[" + ", ".join("N" if d is None else str(d) for d in spec["shape"]) + "]"
            lines.append(f"| {direction[:-1]} | `{key}` | {spec['dtype']} | {shape} |")
    lines += [
        "",
        "## Provenance",
        "",
        f"- config: `{card['config']}` ({json.dumps(card['hyperparameters'])})",
        f"- parameters: {card['parameters']:,}",
        f"- training time: {card['training_seconds']:.0f} s",
        f"- TensorFlow {card['tensorflow']}, Keras {card['keras']}",
        f"- git commit: `{card['git_commit']}`",
        f"- data: {card['data']['source']}; splits {json.dumps(card['data']['splits'])}",
        f"- created: {card['created']}",
        f"- reproduce: `{card['command']}`",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{plot}]({plot})" for plot in plots]
    return "\n".join(lines) + "\n"


def read_card(path: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((path / "metrics.json").read_text())
    return card
