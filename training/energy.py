"""Parts 3 and 4 of the notebook: the ground-state energy of one electron as a functional of the
external potential, E[V], and of the density, E[n], on the 64-point grid of ``data.schrodinger``.

Two tasks share this module: ``energy-from-potential`` (SavedModel ``energy_from_potential``,
input ``potential``) and ``energy-from-density`` (``energy_from_density``, input ``density``);
both output ``energy`` float32 [N] in Hartree. Input standardisation lives inside the models.

Physics the models use:

* ``E[V + c] = E[V] + c`` exactly (a constant shifts every eigenvalue), so the default potential
  model predicts ``E - mean(V)`` from ``V - mean(V)`` and adds ``mean(V)`` back.
* The density does not see the constant: V's random offset ``c = 0.0795 * a_0`` with
  ``a_0 ~ U(-5, 5)`` changes E and leaves n unchanged. No model of n alone can beat
  ``Var(c) = 0.3975**2 / 3 = 0.0527 Ha^2``; the model card reports that floor and the model's
  error on ``E - c``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from data import schrodinger
from training import plots
from training.common import (
    Exported,
    TrainResult,
    call_batched,
    count_parameters,
    export_saved_model,
    history_dict,
    keras_verbosity,
    load_signature,
    set_seed,
    write_model_card,
)

GRID_POINTS = 64
DATASET_COUNT = 100_000
DATASET_SEED = 1
#: Var(c) for the offset c ~ U(-0.3975, 0.3975): the floor of any E[n] model's test MSE.
OFFSET_HALF_WIDTH = 0.0795 * 5
OFFSET_VARIANCE = OFFSET_HALF_WIDTH**2 / 3
#: Densities below this are clipped before the log (the tails reach 1e-33, pure round-off).
LOG_FLOOR = 1e-12


@dataclass(frozen=True)
class EnergyConfig:
    """Hyperparameters of an energy model. ``architecture``: ``"notebook-cnn"`` (parts 3-4 of
    the notebook, raw inputs) or ``"mlp"`` (standardised inputs, dense layers, no dropout)."""

    name: str
    architecture: str
    epochs: int
    batch_size: int
    learning_rate: float
    #: Cosine decay from ``learning_rate`` to this; equal to it for a constant rate.
    final_learning_rate: float
    hidden: tuple[int, ...] = ()
    activation: str = "gelu"
    #: Predict E - mean(V) from V - mean(V) (potential only; exact because E[V + c] = E[V] + c).
    shift_invariant: bool = False
    #: Train on E - mean(V) + (its training average) instead of E (density only; see module doc).
    offset_free_target: bool = False
    #: Also feed log(max(n, LOG_FLOOR)): V - E is a function of the derivatives of log n.
    log_features: bool = False
    seed: int = 1


@dataclass(frozen=True)
class EnergyTask:
    """The constants that tell the two energy tasks apart."""

    task: str
    name: str
    field: str  # attribute of OneElectronDataset: "V" or "n"
    input_name: str
    description: str
    configs: dict[str, EnergyConfig]


POTENTIAL = EnergyTask(
    task="energy-from-potential",
    name="energy_from_potential",
    field="V",
    input_name="potential",
    description="Ground-state energy E[V] of one electron from its external potential V(x)",
    configs={
        "seed": EnergyConfig(
            name="seed",
            architecture="notebook-cnn",
            epochs=50,
            batch_size=250,
            learning_rate=1e-3,
            final_learning_rate=1e-3,
        ),
        "default": EnergyConfig(
            name="default",
            architecture="mlp",
            epochs=150,
            batch_size=256,
            learning_rate=2e-3,
            final_learning_rate=1e-6,
            hidden=(256, 256, 256),
            activation="gelu",
            shift_invariant=True,
        ),
    },
)

DENSITY = EnergyTask(
    task="energy-from-density",
    name="energy_from_density",
    field="n",
    input_name="density",
    description="Ground-state energy E[n] of one electron from its density n(x)",
    configs={
        # Part 4 of the notebook: the same network as part 3, learning rate 1e-4.
        "seed": EnergyConfig(
            name="seed",
            architecture="notebook-cnn",
            epochs=50,
            batch_size=250,
            learning_rate=1e-4,
            final_learning_rate=1e-4,
        ),
        "default": EnergyConfig(
            name="default",
            architecture="mlp",
            epochs=60,
            batch_size=512,
            learning_rate=2e-3,
            final_learning_rate=1e-6,
            hidden=(256, 256, 256),
            activation="gelu",
            offset_free_target=True,
            log_features=True,
        ),
    },
)

TASKS = {POTENTIAL.task: POTENTIAL, DENSITY.task: DENSITY}


@dataclass(frozen=True)
class EnergyData:
    """The notebook's 50/25/25 split of a one-electron dataset, plus where it came from."""

    train: schrodinger.OneElectronDataset
    validation: schrodinger.OneElectronDataset
    test: schrodinger.OneElectronDataset
    source: str
    sha256: dict[str, str]


def dataset_sha256(ds: schrodinger.OneElectronDataset) -> dict[str, str]:
    """SHA-256 of each float64 array (C order) of a dataset: what the model was trained on."""
    return {
        key: hashlib.sha256(np.ascontiguousarray(getattr(ds, key)).tobytes()).hexdigest()
        for key in ("V", "n", "E")
    }


def make_data(ds: schrodinger.OneElectronDataset, source: str) -> EnergyData:
    parts = schrodinger.splits(ds)
    return EnergyData(
        train=parts["train"],
        validation=parts["validation"],
        test=parts["test"],
        source=source,
        sha256=dataset_sha256(ds),
    )


def load_data(limit: int | None = None) -> EnergyData:
    """The notebook's 100,000 systems (cached under data/generated/), or ``limit`` fresh ones."""
    if limit is not None:
        ds = schrodinger.generate(count=limit, seed=DATASET_SEED)
        return make_data(ds, f"data.schrodinger.generate(count={limit}, seed={DATASET_SEED})")
    ds = schrodinger.load_or_generate(count=DATASET_COUNT, seed=DATASET_SEED, progress=True)
    source = f"data.schrodinger.load_or_generate(count={DATASET_COUNT}, seed={DATASET_SEED})"
    return make_data(ds, source)


def build_model(
    config: EnergyConfig, task: EnergyTask, train: schrodinger.OneElectronDataset | None = None
) -> keras.Model:
    """The inference model: float32 [N, 64] -> energy float32 [N].

    The ``mlp`` architecture standardises its input and output with statistics of ``train``
    (zeros and ones without it, as for a parameter count).
    """
    inputs = keras.Input((GRID_POINTS,), name=task.input_name, dtype="float32")
    if config.architecture == "notebook-cnn":
        h = layers.Reshape((GRID_POINTS, 1))(inputs)
        h = layers.Conv1D(6, 3, activation="relu")(h)
        h = layers.MaxPooling1D()(h)
        h = layers.Conv1D(16, 3, activation="relu")(h)
        h = layers.MaxPooling1D()(h)
        h = layers.Flatten()(h)
        h = layers.Dense(120, activation="relu")(h)
        h = layers.Dropout(0.5)(h)
        h = layers.Dense(50, activation="relu")(h)
        h = layers.Dropout(0.5)(h)
        energy = layers.Reshape(())(layers.Dense(1)(h))
        return keras.Model(inputs, energy, name=task.name)
    if config.architecture != "mlp":
        raise ValueError(f"unknown architecture {config.architecture!r}")

    x_mean, x_std, y_mean, y_std = _statistics(config, task, train)
    shift = ops.mean(inputs, axis=-1, keepdims=True) if config.shift_invariant else None
    h = inputs - shift if shift is not None else inputs
    if config.log_features:
        h = ops.concatenate([h, ops.log(ops.maximum(h, LOG_FLOOR))], axis=-1)
    h = layers.Normalization(mean=x_mean, variance=x_std**2, name="standardise")(h)
    for width in config.hidden:
        h = layers.Dense(width, activation=config.activation)(h)
    y = layers.Dense(1)(h)
    energy = layers.Rescaling(scale=y_std, offset=y_mean, name="energy_scale")(y)
    if shift is not None:
        energy = energy + shift
    energy = layers.Reshape((), name="energy")(energy)
    return keras.Model(inputs, energy, name=task.name)


def _statistics(
    config: EnergyConfig, task: EnergyTask, train: schrodinger.OneElectronDataset | None
) -> tuple[np.ndarray, np.ndarray, float, float]:
    features = GRID_POINTS * (2 if config.log_features else 1)
    if train is None:
        return np.zeros(features), np.ones(features), 0.0, 1.0
    x = getattr(train, task.field)
    y = train.E
    if config.shift_invariant:
        mean_v = x.mean(axis=1, keepdims=True)
        x, y = x - mean_v, y - mean_v[:, 0]
    if config.offset_free_target:
        y = targets(config, train)
    if config.log_features:
        x = np.concatenate([x, np.log(np.maximum(x, LOG_FLOOR))], axis=1)
    # A floor on the per-point spread: grid points where every sample is the same.
    x_std = np.maximum(x.std(axis=0), 1e-6 * max(float(x.std()), 1e-12))
    return x.mean(axis=0), x_std, float(y.mean()), float(y.std())


def targets(config: EnergyConfig, ds: schrodinger.OneElectronDataset) -> np.ndarray:
    """What the model is fitted to: E, or with ``offset_free_target`` E - mean(V) + its mean.

    E - mean(V) does not depend on V's constant offset, so it is a function of n alone and the
    density model learns it without the offset's noise; the training average of mean(V) stands in
    for the offset, which n cannot tell. (In a training split it is the mean over that split.)
    """
    if not config.offset_free_target:
        return ds.E
    mean_v = ds.V.mean(axis=1)
    return ds.E - mean_v + mean_v.mean()


def _optimizer(config: EnergyConfig, steps: int) -> keras.optimizers.Optimizer:
    rate: Any = config.learning_rate
    if config.final_learning_rate != config.learning_rate:
        rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate,
            decay_steps=max(steps, 1),
            alpha=config.final_learning_rate / config.learning_rate,
        )
    return keras.optimizers.Adam(rate)


def train(config: EnergyConfig, data: EnergyData, task: EnergyTask) -> TrainResult:
    """Fit ``task``'s model on the training split (validation split for the curves only)."""
    set_seed(config.seed)
    model = build_model(config, task, data.train)
    x_train = getattr(data.train, task.field).astype("float32")
    x_val = getattr(data.validation, task.field).astype("float32")
    steps = config.epochs * int(np.ceil(len(x_train) / config.batch_size))
    model.compile(optimizer=_optimizer(config, steps), loss="mse")
    start = time.perf_counter()
    # Validation on the true E: the curve shows the figure the card reports, floor included.
    history = model.fit(
        x_train,
        targets(config, data.train).astype("float32"),
        validation_data=(x_val, data.validation.E.astype("float32")),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=keras_verbosity(),
    )
    seconds = time.perf_counter() - start
    return TrainResult(
        task=task.task,
        config=config,
        models={"energy": model},
        history=history_dict(history),
        seconds=seconds,
    )


def offsets(V: np.ndarray) -> np.ndarray:
    """The constant offset c of each potential: its constant term in the generator's basis.

    Least squares of ``V - 1e-11 x**10`` on ``{1, cos(i pi x/15), sin(i pi x/15)}``, i = 1, 2,
    the basis ``data.schrodinger`` draws potentials from; used only for the E[n] diagnostics.
    """
    x = schrodinger.GRID
    basis = [np.ones_like(x)]
    for i in (1, 2):
        basis += [np.cos(i * np.pi * x / 15), np.sin(i * np.pi * x / 15)]
    A = np.stack(basis, axis=1)
    coefficients, *_ = np.linalg.lstsq(A, (V - 1e-11 * x**10).T, rcond=None)
    return np.asarray(coefficients[0])


def measure(task: EnergyTask, signature: Any, test: schrodinger.OneElectronDataset) -> dict:
    """Test figures through the exported signature; errors in float64 against the dataset's E."""
    x = getattr(test, task.field).astype("float32")
    predicted = call_batched(signature, x, task.input_name, "energy").astype(np.float64)
    error = predicted - test.E
    metrics = {
        "test_mse": float(np.mean(error**2)),
        "test_rmse_mha": 1000 * float(np.sqrt(np.mean(error**2))),
        "test_mae_mha": 1000 * float(np.mean(np.abs(error))),
        "test_max_abs_error_mha": 1000 * float(np.max(np.abs(error))),
    }
    if task is DENSITY:
        c = offsets(test.V)
        metrics["floor_var_c"] = OFFSET_VARIANCE
        metrics["test_offset_mean_square"] = float(np.mean(c**2))
        # What n does determine: E - c. The model's error on it, the part above the floor.
        metrics["test_mse_on_e_minus_c"] = float(np.mean((predicted - (test.E - c)) ** 2))
    return metrics


def predict(task: EnergyTask, signature: Any, ds: schrodinger.OneElectronDataset) -> np.ndarray:
    x = getattr(ds, task.field).astype("float32")
    return call_batched(signature, x, task.input_name, "energy").astype(np.float64)


def export(
    result: TrainResult, data: EnergyData, task: EnergyTask, models_dir: Path, version: int
) -> list[Exported]:
    """Write the SavedModel, measure it through its signature, plot, write the model card."""
    model = result.models["energy"]
    path = models_dir / task.name / str(version)

    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"energy": model(x, training=False)}

    export_saved_model(path, [model], serve, task.input_name, _spec())
    signature = load_signature(path)
    metrics = measure(task, signature, data.test)
    predicted = predict(task, signature, data.test)
    plot_files = [
        plots.loss_curves(result.history, path / "loss.png", log=True),
        plots.energy_scatter(
            data.test.E, predicted, path / "predicted_vs_true.png", title=task.name
        ),
        plots.energy_systems(
            data.test.x, data.test.V, data.test.n, data.test.E, predicted, path / "systems.png"
        ),
    ]
    write_model_card(
        path,
        name=task.name,
        version=version,
        task=task.description,
        config=result.config,
        parameters=count_parameters(model),
        training_seconds=result.seconds,
        data={
            "source": data.source,
            "sha256": data.sha256,
            "splits": {
                "train": len(data.train),
                "validation": len(data.validation),
                "test": len(data.test),
            },
        },
        metrics=metrics,
        summary=_summary(task),
        targets=_TARGETS[task.task],
        plots=plot_files,
        command=f"python -m training {task.task} --config {result.config.name}",
    )
    return [Exported(task.name, version, path, metrics)]


def evaluate(task: EnergyTask, path: Path, data: EnergyData) -> dict[str, float]:
    """Re-measure an exported SavedModel on the test split, independent of training."""
    return measure(task, load_signature(path), data.test)


def _spec() -> tf.TensorSpec:
    return tf.TensorSpec([None, GRID_POINTS], tf.float32)


_TARGETS = {
    "energy-from-potential": {
        "test_rmse_mha": "<= 1.0 (notebook: 15.6)",
        "test_mse": "notebook: 2.44e-4",
    },
    "energy-from-density": {
        "test_mse": "<= 0.0537 (notebook: 0.0643; floor 0.0527)",
        "floor_var_c": "irreducible: Var(c)",
    },
}


def _summary(task: EnergyTask) -> str:
    if task is POTENTIAL:
        return (
            "Input: the external potential V(x) in Hartree on `linspace(-15, 15, 64)` bohr "
            "(float32 [N, 64]); output: the ground-state energy in Hartree (float32 [N]). "
            "Trained on the notebook's split of the 100,000 systems of `data.schrodinger` "
            "(train 0-49,999, validation 50,000-74,999, test 75,000-99,999). Because a constant "
            "added to V shifts E by the same constant, the model works on V - mean(V) and adds "
            "mean(V) back; the standardisation of its input and output is inside the SavedModel. "
            "Errors are measured in float64 against the exact (LAPACK) energies."
        )
    return (
        "Input: the ground-state density n(x) in 1/bohr on `linspace(-15, 15, 64)` bohr, "
        "`sum(n) * dx = 1` (float32 [N, 64]); output: the ground-state energy in Hartree "
        "(float32 [N]). Same data and split as `energy_from_potential`.\n\n"
        "**The floor.** Every potential carries a random constant offset "
        "c = 0.0795 a_0 with a_0 ~ U(-5, 5), i.e. c ~ U(-0.3975, 0.3975) Ha. A constant shifts "
        "E by c and leaves the density unchanged, so n carries no information about c and no "
        "model of n alone can reach a test MSE below Var(c) = 0.3975^2 / 3 = 0.0527 Ha^2 "
        "(`floor_var_c`; `test_offset_mean_square` is the same quantity measured on this test "
        "split). The best possible model predicts E - c; `test_mse_on_e_minus_c` is this "
        "model's MSE against E - c (c recovered from V by least squares on the generator's "
        "basis), the part of its error that is not the floor.\n\n"
        "**How it is trained.** E itself would be a noisy target (the offset adds variance "
        "0.0527 that n cannot explain). E - mean(V) does not depend on the offset, so it is a "
        "function of n alone: the model (an MLP on the standardised n and log n) is fitted to "
        "E - mean(V) plus the training average of mean(V), which stands in for the offset it "
        "cannot see. The validation curve is against the true E, floor included."
    )


def with_epochs(config: EnergyConfig, epochs: int | None) -> EnergyConfig:
    return config if epochs is None else replace(config, epochs=epochs)
