"""Version 2 of the two energy models: trained on the broad dataset of ``data.potentials``, an
ensemble for the uncertainty, and a domain of validity derived from the training data, all in one
SavedModel per model (see /work/notes/interfaces.md and the model cards).

``energy_from_potential`` v2, input ``potential`` float32 [N, 64], outputs:

* ``energy`` [N] (Ha) = a variational baseline + the ensemble's mean learned correction.
  The baseline is physics, computed in the graph: the best of 3,048 grid Gaussians (127 centres,
  24 widths) as a trial function, refined by one Lanczos step (the Ritz value in the span of g
  and H g); it is an upper bound of E, MAE 0.4 to 19 mHa on the held-out families. The members
  (MLPs) learn E - baseline from ``u = V - min(V)`` compressed as ``S (1 - exp(-u / S))``
  (S = 30 Ha), the trial-energy profile over the centres, the optimal widths and the baseline.
  Exact symmetries are built in: ``E[V + c] = E[V] + c`` and the average over ``V(x)``, ``V(-x)``;
* ``energy_std`` [N] (Ha): ``sqrt((k * spread)**2 + s0**2)``, spread = the members' standard
  deviation, ``k`` and ``s0`` calibrated on fresh systems of the training distribution (seeds not
  used in training) so that the 95% interval ``energy +- 1.96 energy_std`` covers the exact E for
  at least 96% of every training family there;
* ``domain_score`` [N] (1 = the calibrated edge), ``in_domain`` [N] bool, ``domain_reason`` [N]
  int32 (0 in domain, else the 1-based index of the criterion in ``metrics.json``
  ``domain.criteria`` that is furthest past its threshold).

``energy_from_density`` v2, input ``density`` float32 [N, 64]: a constant added to V changes E and
leaves n unchanged, so the part of E that n determines is the kinetic energy
``T[n] = E - sum(n V) dx`` (offset-free). For one electron T[n] is the von Weizsacker functional,
computed exactly in the graph with the solver's kinetic matrix (phi = sqrt(n dx)); a small
ensemble learns the remaining correction (round-off) and gives the uncertainty. Outputs
``kinetic_energy``, ``kinetic_energy_std``, ``energy`` = T + the training mean of
``sum(n V) dx`` (a stand-in for the potential energy n cannot tell), ``energy_std`` (including the
irreducible ``offset_std``), ``offset_std`` (the standard deviation of ``sum(n V) dx`` over the
training data, the same for every item), and the three domain outputs. With the potential known,
``E = kinetic_energy + sum(n V) dx``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from data import heldout, potentials, schrodinger
from training.common import (
    DEFAULT_MODELS_DIR,
    Exported,
    TrainResult,
    count_parameters,
    export_saved_model,
    history_dict,
    keras_verbosity,
    load_signature,
    read_card,
    set_seed,
    write_model_card,
)

GRID_POINTS = schrodinger.GRID_POINTS
DX = schrodinger.DX
#: Scale (Ha) of the compression of V - min(V): values far above it look alike to the model.
WALL_SCALE = 30.0
#: Curvature is checked where V - min(V) is below this (Ha): where the electron is.
LOW_REGION = 5.0
LOG_FLOOR = 1e-12
#: The 95% interval's half-width in standard deviations.
Z95 = 1.959964
#: The calibration asks this coverage of every training family of the calibration set.
CALIBRATION_COVERAGE = 0.96
#: Each of the domain's criteria accepts all but this fraction of the calibration set (so the
#: union of the three rejects at most 0.1%).
DOMAIN_TAIL = 0.0003
PCA_COMPONENTS = 16
#: The row of the per-family table for fresh systems of the training distribution.
CHECK = "check_training_distribution"


@dataclass(frozen=True)
class BroadConfig:
    """Hyper-parameters of a v2 energy model (``name`` is the CLI's ``--config``)."""

    name: str = "default"
    members: int = 4
    hidden: tuple[int, ...] = (128, 128, 128)
    activation: str = "gelu"
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 2e-3
    final_learning_rate: float = 1e-5
    train_count: int = 200_000
    calibration_count: int = 20_000
    train_seed: int = 1
    calibration_seed: int = 2
    check_seed: int = 3
    heldout_count: int = 1000
    seed: int = 1


@dataclass(frozen=True)
class BroadTask:
    task: str
    name: str
    input_name: str
    description: str
    #: The name of the learned output (``energy`` or ``kinetic_energy``).
    learned: str
    configs: dict[str, BroadConfig] = field(default_factory=lambda: {"default": BroadConfig()})


POTENTIAL = BroadTask(
    task="energy-from-potential-broad",
    name="energy_from_potential",
    input_name="potential",
    description="Ground-state energy E[V] of one electron from its external potential V(x), "
    "trained on many potential shapes, with uncertainty and domain of validity",
    learned="energy",
)
DENSITY = BroadTask(
    task="energy-from-density-broad",
    name="energy_from_density",
    input_name="density",
    description="Kinetic energy T[n] (the offset-free part of E) and E of one electron from its "
    "density n(x), trained on many potential shapes, with uncertainty and domain of validity",
    learned="kinetic_energy",
    # The von Weizsacker baseline is exact up to round-off: a small correction network suffices.
    configs={"default": BroadConfig(hidden=(32, 32), epochs=3)},
)
TASKS = {POTENTIAL.task: POTENTIAL, DENSITY.task: DENSITY}


@dataclass(frozen=True)
class BroadData:
    train: potentials.BroadDataset
    calibration: potentials.BroadDataset
    check: potentials.BroadDataset
    heldout: dict[str, heldout.Family]
    source: str


def load_data(limit: int | None = None, config: BroadConfig | None = None) -> BroadData:
    """The broad training set (cached), the calibration and check sets, the held-out families.

    ``limit``: that many systems per set and per family, generated in memory (tiny runs, tests).
    """
    config = config or BroadConfig()
    if limit is not None:
        make = lambda n, s: potentials.generate(n, s)  # noqa: E731
        counts = (limit, limit, limit, limit)
    else:
        make = lambda n, s: potentials.load_or_generate(n, s)  # noqa: E731
        counts = (
            config.train_count,
            config.calibration_count,
            config.calibration_count,
            config.heldout_count,
        )
    families = heldout.families(counts[3], notebook_count=25_000 if limit is None else limit)
    return BroadData(
        train=make(counts[0], config.train_seed),
        calibration=make(counts[1], config.calibration_seed),
        check=make(counts[2], config.check_seed),
        heldout=families,
        source=(
            f"data.potentials seeds {config.train_seed} (train, {counts[0]}), "
            f"{config.calibration_seed} (calibration, {counts[1]}), {config.check_seed} "
            f"(check, {counts[2]}); data.heldout ({counts[3]} per family, notebook test split)"
        ),
    )


# --------------------------------------------------------------------------------------------
# Features (TensorFlow, so that training, calibration and the SavedModel share one definition)
# --------------------------------------------------------------------------------------------


def _gaussian_bank() -> tuple[np.ndarray, np.ndarray]:
    """Grid Gaussians ``exp(-(x - c)**2 / (4 s**2))``, unit norm on the grid: their densities
    [64, C * S] and kinetic energies [C * S] under the solver's own kinetic matrix."""
    x = schrodinger.GRID
    phi = np.exp(
        -((x[:, None, None] - BANK_CENTRES[None, :, None]) ** 2)
        / (4 * BANK_WIDTHS[None, None, :] ** 2)
    ).reshape(GRID_POINTS, -1)
    phi /= np.sqrt((phi**2).sum(axis=0))
    kinetic = np.einsum("im,ij,jm->m", phi, schrodinger.kinetic_matrix(), phi)
    return phi**2, kinetic


#: Centres (every half grid step, symmetric about 0) and widths (bohr) of the trial Gaussians.
BANK_CENTRES = np.linspace(-15, 15, 127)
BANK_WIDTHS = np.exp(np.linspace(np.log(0.3), np.log(6.0), 24))
_BANK_DENSITY, _BANK_KINETIC = _gaussian_bank()


def _bank_functions(dtype: tf.DType) -> tf.Tensor:
    """The trial Gaussians [64, C * S] (unit norm), built in the graph from the 127 centres and
    24 widths: as a constant the table would add 1.5 MB per copy to the SavedModel."""
    x = tf.constant(schrodinger.GRID, dtype)[:, None, None]
    c = tf.constant(BANK_CENTRES, dtype)[None, :, None]
    w = tf.constant(BANK_WIDTHS, dtype)[None, None, :]
    phi = tf.reshape(tf.exp(-((x - c) ** 2) / (4 * w**2)), [GRID_POINTS, -1])
    return phi / tf.sqrt(tf.reduce_sum(phi**2, axis=0, keepdims=True))


#: Softness (Ha) of the soft-min over widths that gives each centre a smooth optimal width.
BANK_SOFTNESS = 0.01


def variational_baseline(u: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The best grid-Gaussian trial energy of ``-1/2 D2 + diag(u)``: ``(baseline [N], profile
    [N, C], log_width [N, C])``, the profile being the best trial energy at each centre.

    A Rayleigh quotient of a grid vector, so ``baseline >= E`` exactly; it shifts with a constant
    and mirrors with the potential, like E.
    """
    trial = tf.matmul(u, _bank_functions(tf.float32) ** 2) + tf.constant(_BANK_KINETIC, tf.float32)
    trial = tf.reshape(trial, [-1, len(BANK_CENTRES), len(BANK_WIDTHS)])
    profile = tf.reduce_min(trial, axis=2)
    weights = tf.nn.softmax(-(trial - profile[:, :, None]) / BANK_SOFTNESS, axis=2)
    log_width = tf.reduce_sum(weights * tf.constant(np.log(BANK_WIDTHS), tf.float32), axis=2)
    return tf.reduce_min(profile, axis=1), profile, log_width


def krylov_refinement(u: tf.Tensor) -> tf.Tensor:
    """The Ritz value of ``H = -1/2 D2 + diag(u)`` in the span of the best trial Gaussian g and
    ``H g`` (one Lanczos step, float64): still an upper bound of E, much closer to it."""
    u64 = tf.cast(u, tf.float64)
    phi = _bank_functions(tf.float64)
    trial = tf.matmul(u64, phi**2) + tf.constant(_BANK_KINETIC)
    g = tf.gather(tf.transpose(phi), tf.argmin(trial, axis=1))  # [N, 64]
    kinetic = tf.constant(schrodinger.kinetic_matrix())

    def h(v: tf.Tensor) -> tf.Tensor:
        return tf.matmul(v, kinetic) + u64 * v

    hg = h(g)
    a = tf.reduce_sum(g * hg, axis=1)
    w = hg - a[:, None] * g
    b = tf.norm(w, axis=1)
    q = w / tf.maximum(b, 1e-300)[:, None]
    c = tf.reduce_sum(q * h(q), axis=1)
    ritz = 0.5 * (a + c) - tf.sqrt(0.25 * (a - c) ** 2 + b**2)
    return tf.cast(tf.minimum(ritz, a), tf.float32)


def _compress(u: tf.Tensor) -> tf.Tensor:
    return WALL_SCALE * (1 - tf.exp(-u / WALL_SCALE))


def _kinetic_vw(n: tf.Tensor) -> tf.Tensor:
    """The von Weizsacker kinetic energy of n on the grid with the solver's kinetic matrix:
    for one electron's ground state this is T exactly (phi = sqrt(n dx) is the eigenvector)."""
    phi = tf.sqrt(n * DX)
    kphi = tf.matmul(phi, tf.constant(schrodinger.kinetic_matrix(), tf.float32))
    return tf.reduce_sum(phi * kphi, axis=1) / tf.reduce_sum(phi * phi, axis=1)


def _base(task: BroadTask, x: tf.Tensor) -> tf.Tensor:
    """The input as the domain's PCA sees it: compressed V - min V, or [sqrt(n dx), log n]."""
    x = tf.cast(x, tf.float32)
    if task is POTENTIAL:
        return _compress(x - tf.reduce_min(x, axis=1, keepdims=True))
    n = tf.maximum(x, 0.0)
    return tf.concat([tf.sqrt(n * DX), tf.math.log(tf.maximum(n, LOG_FLOOR))], axis=1)


def _features(task: BroadTask, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(features, reference)``: the members' input and the baseline their output corrects.

    Potential: ``[compressed u, compressed (profile - baseline), log widths, baseline - min V]``
    with u = V - min V, reference = the variational baseline. Density: ``[sqrt(n dx), log n]``,
    reference = the von Weizsacker kinetic energy.
    """
    x = tf.cast(x, tf.float32)
    if task is POTENTIAL:
        vmin = tf.reduce_min(x, axis=1, keepdims=True)
        u = x - vmin
        baseline, profile, log_width = variational_baseline(u)
        refined = krylov_refinement(u)
        feats = tf.concat(
            [
                _compress(u),
                _compress(profile - baseline[:, None]),
                log_width,
                baseline[:, None],
                (baseline - refined)[:, None],
            ],
            axis=1,
        )
        return feats, refined + vmin[:, 0]
    return _base(task, x), _kinetic_vw(tf.maximum(x, 0.0))


def _blocks(task: BroadTask) -> list[int]:
    if task is POTENTIAL:
        return [GRID_POINTS, len(BANK_CENTRES), len(BANK_CENTRES), 1, 1]
    return [GRID_POINTS, GRID_POINTS]


def _mirror(task: BroadTask, features: tf.Tensor, blocks: list[int] | None = None) -> tf.Tensor:
    """The features of the mirror image ``x(-x)``: every grid-shaped block reversed."""
    parts = tf.split(features, blocks or _blocks(task), axis=1)
    return tf.concat([tf.reverse(p, axis=[1]) if p.shape[1] > 1 else p for p in parts], axis=1)


def _domain_features(task: BroadTask, x: tf.Tensor) -> tf.Tensor:
    """[N, 1]: the domain's per-item quantity besides PCA: the sharpest curvature where the
    electron is (of V where V - min V < LOW_REGION; of log n where n > 1e-4)."""
    x = tf.cast(x, tf.float32)
    if task is POTENTIAL:
        u = x - tf.reduce_min(x, axis=1, keepdims=True)
        curvature = tf.abs(x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]) / DX**2
        low = u[:, 1:-1] < LOW_REGION
        sharp = tf.reduce_max(tf.where(low, curvature, tf.zeros_like(curvature)), axis=1)
        return sharp[:, None]
    # Density: the curvature of log n where n is not negligible (sharp features in V show there).
    n = tf.maximum(x, LOG_FLOOR)
    logn = tf.math.log(n)
    curvature = tf.abs(logn[:, 2:] - 2 * logn[:, 1:-1] + logn[:, :-2]) / DX**2
    big = n[:, 1:-1] > 1e-4
    sharp = tf.reduce_max(tf.where(big, curvature, tf.zeros_like(curvature)), axis=1)
    return sharp[:, None]


# --------------------------------------------------------------------------------------------
# The ensemble
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mldm")
class EnsembleDense(keras.layers.Layer):
    """``members`` independent dense layers in one einsum: [B, in] or [B, M, in] -> [B, M, out]."""

    def __init__(self, members: int, units: int, activation: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.members, self.units = members, units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: Any) -> None:
        fan_in = int(input_shape[-1])
        self.kernel = self.add_weight(
            shape=(self.members, fan_in, self.units), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.members, self.units), initializer="zeros")

    def call(self, x: Any) -> Any:
        if len(x.shape) == 2:
            y = ops.einsum("bi,mio->bmo", x, self.kernel)
        else:
            y = ops.einsum("bmi,mio->bmo", x, self.kernel)
        return self.activation(y + self.bias)

    def get_config(self) -> dict[str, Any]:
        activation = keras.activations.serialize(self.activation)
        return {**super().get_config(), "members": self.members, "units": self.units,
                "activation": activation}  # fmt: skip


def build_core(config: BroadConfig, features: int, stats: dict[str, Any]) -> keras.Model:
    """features [B, F] -> standardised members' outputs mapped back to Ha: [B, M]."""
    inputs = keras.Input((features,), dtype="float32")
    h = layers.Normalization(mean=stats["x_mean"], variance=stats["x_std"] ** 2)(inputs)
    for width in config.hidden:
        h = EnsembleDense(config.members, width, config.activation)(h)
    y = EnsembleDense(config.members, 1)(h)
    y = layers.Reshape((config.members,))(y)
    y = layers.Rescaling(scale=stats["y_std"], offset=stats["y_mean"])(y)
    return keras.Model(inputs, y, name="ensemble")


def _numpy(t: tf.Tensor) -> np.ndarray:
    return np.asarray(t.numpy())


def targets(task: BroadTask, ds: potentials.BroadDataset) -> np.ndarray:
    """E, or for the density model the kinetic energy ``T = E - sum(n V) dx`` (float64)."""
    if task is POTENTIAL:
        return ds.E
    return np.asarray(ds.E - (ds.n * ds.V).sum(axis=1) * DX)


def _inputs(task: BroadTask, ds: potentials.BroadDataset) -> np.ndarray:
    return (ds.V if task is POTENTIAL else ds.n).astype(np.float32)


def features_of(task: BroadTask, x: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_features` in chunks (the trial-energy table is [N, 3048] per chunk)."""
    parts = [_features(task, tf.constant(x[i : i + chunk])) for i in range(0, len(x), chunk)]
    if not parts:
        width = sum(_blocks(task))
        return np.empty((0, width), np.float32), np.empty(0, np.float32)
    return (
        np.concatenate([_numpy(f) for f, _ in parts]),
        np.concatenate([_numpy(r) for _, r in parts]),
    )


def _training_set(
    task: BroadTask, config: BroadConfig, data: BroadData
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features, targets and the standardisation statistics (baked into the model) of training."""
    feats, reference = features_of(task, _inputs(task, data.train))
    # Half the systems mirrored (E is the same): the symmetry the served model averages over.
    flip = np.random.default_rng(config.seed).random(len(feats)) < 0.5
    feats[flip] = _numpy(_mirror(task, tf.constant(feats[flip])))
    y = (targets(task, data.train) - reference).astype(np.float32)
    stats = {
        "x_mean": feats.mean(axis=0),
        "x_std": np.maximum(feats.std(axis=0), 1e-6),
        "y_mean": float(y.mean()),
        "y_std": float(y.std()) or 1.0,
    }
    return feats, y, stats


def train(config: BroadConfig, data: BroadData, task: BroadTask) -> TrainResult:
    """Fit the ensemble (every member on every batch, its own initialisation) on the train set."""
    set_seed(config.seed)
    x = _inputs(task, data.train)
    feats, y, stats = _training_set(task, config, data)
    core = build_core(config, feats.shape[1], stats)
    steps = config.epochs * int(np.ceil(len(x) / config.batch_size))
    rate = keras.optimizers.schedules.CosineDecay(
        config.learning_rate,
        decay_steps=max(steps, 1),
        alpha=config.final_learning_rate / config.learning_rate,
    )
    core.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
    xc = _inputs(task, data.calibration)
    fc, rc = features_of(task, xc)
    yc = (targets(task, data.calibration) - rc).astype(np.float32)
    start = time.perf_counter()
    history = core.fit(
        feats,
        np.repeat(y[:, None], config.members, axis=1),
        validation_data=(fc, np.repeat(yc[:, None], config.members, axis=1)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=keras_verbosity(),
    )
    return TrainResult(
        task=task.task,
        config=config,
        models={"ensemble": core},
        history=history_dict(history),
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------
# Serving graph: ensemble + calibrated uncertainty + domain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """The domain of validity: PCA of the members' features, curvature and span thresholds."""

    mean: np.ndarray  # [F]
    components: np.ndarray  # [F, K]
    scales: np.ndarray  # [K] sqrt of the PCA variances
    #: Thresholds of the criteria, in the order of CRITERIA.
    thresholds: np.ndarray  # [3]


#: (key, human-readable reason) of each domain criterion, in the order of ``domain_reason``.
CRITERIA: tuple[tuple[str, str], ...] = (
    ("mahalanobis", "its shape is far from the training inputs (PCA Mahalanobis distance)"),
    ("residual", "its shape is not spanned by the training inputs (PCA residual)"),
    ("curvature", "it has features sharper than the training data and the grid resolve"),
)


def _domain_raw(task: BroadTask, domain: Domain, x: tf.Tensor) -> tf.Tensor:
    """[N, 3] criteria values (before division by the thresholds)."""
    feats = _base(task, x)
    centred = feats - tf.constant(domain.mean, tf.float32)
    z = tf.matmul(centred, tf.constant(domain.components, tf.float32))
    recon = tf.matmul(z, tf.constant(domain.components.T, tf.float32))
    d = tf.sqrt(tf.reduce_sum((z / tf.constant(domain.scales, tf.float32)) ** 2, axis=1))
    residual = tf.sqrt(tf.reduce_mean((centred - recon) ** 2, axis=1))
    extra = _domain_features(task, x)
    return tf.concat([tf.stack([d, residual], axis=1), extra], axis=1)


def fit_domain(task: BroadTask, train_x: np.ndarray, calibration_x: np.ndarray) -> Domain:
    """PCA on the training features (both mirror images), thresholds on the calibration set."""
    feats = _base(task, tf.constant(train_x))
    blocks = [GRID_POINTS] * (feats.shape[1] // GRID_POINTS)
    mirrored = _mirror(task, feats, blocks)
    both = np.concatenate([_numpy(feats), _numpy(mirrored)]).astype(np.float64)
    mean = both.mean(axis=0)
    _, s, vt = np.linalg.svd(both - mean, full_matrices=False)
    k = min(PCA_COMPONENTS, len(s))
    scales = np.maximum(s[:k] / np.sqrt(max(len(both) - 1, 1)), 1e-6)
    provisional = Domain(mean, vt[:k].T.copy(), scales, np.ones(len(CRITERIA)))
    raw = _numpy(_domain_raw(task, provisional, tf.constant(calibration_x)))
    thresholds = np.quantile(raw, 1 - DOMAIN_TAIL, axis=0) if len(raw) else np.ones(len(CRITERIA))
    return replace(provisional, thresholds=np.maximum(thresholds, 1e-6))


@dataclass(frozen=True)
class Calibration:
    scale: float  # k
    floor: float  # s0 (Ha)


def serve_fn(task: BroadTask, core: keras.Model, domain: Domain, cal: Calibration,
             offset: tuple[float, float] = (0.0, 0.0)) -> Any:  # fmt: skip
    """The SavedModel's function: input tensor -> dict of named outputs."""
    thresholds = tf.constant(domain.thresholds, tf.float32)

    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        feats, reference = _features(task, x)
        members = 0.5 * (core(feats, training=False) + core(_mirror(task, feats), training=False))
        mean = tf.reduce_mean(members, axis=1) + reference
        spread = tf.math.reduce_std(members, axis=1)
        std = tf.sqrt((cal.scale * spread) ** 2 + cal.floor**2)
        ratios = _domain_raw(task, domain, x) / thresholds
        score = tf.reduce_max(ratios, axis=1)
        inside = score <= 1.0
        reason = tf.where(inside, 0, tf.cast(tf.argmax(ratios, axis=1), tf.int32) + 1)
        out = {"domain_score": score, "in_domain": inside, "domain_reason": reason}
        if task is POTENTIAL:
            return {"energy": mean, "energy_std": std, **out}
        offset_std = tf.fill(tf.shape(mean), tf.constant(offset[1], tf.float32))
        return {
            "energy": mean + offset[0],
            "energy_std": tf.sqrt(std**2 + offset_std**2),
            "kinetic_energy": mean,
            "kinetic_energy_std": std,
            "offset_std": offset_std,
            **out,
        }

    return serve


def calibrate(
    error: np.ndarray, spread: np.ndarray, family: np.ndarray, coverage: float
) -> Calibration:
    """The smallest mean interval ``sqrt((k spread)**2 + s0**2)`` covering ``coverage`` of every
    family: a grid over s0, the smallest k for each."""
    best: tuple[float, Calibration] | None = None
    floors = np.concatenate([[0.0], np.quantile(np.abs(error), np.linspace(0.05, 0.95, 19))])
    for s0 in floors:
        lo, hi = 0.0, 1e4
        for _ in range(60):
            k = 0.5 * (lo + hi)
            std = np.sqrt((k * spread) ** 2 + s0**2)
            covered = np.abs(error) <= Z95 * np.maximum(std, 1e-12)
            if all(covered[family == f].mean() >= coverage for f in np.unique(family)):
                hi = k
            else:
                lo = k
        mean_width = float(np.mean(np.sqrt((hi * spread) ** 2 + s0**2)))
        if best is None or mean_width < best[0]:
            best = (mean_width, Calibration(scale=float(hi), floor=float(s0)))
    assert best is not None
    return best[1]


def _members(task: BroadTask, core: keras.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, spread) of the members (mirror-averaged), in Ha, batched."""
    means, spreads = [], []
    for start in range(0, len(x), 4096):
        feats, reference = _features(task, tf.constant(x[start : start + 4096]))
        m = 0.5 * (core(feats, training=False) + core(_mirror(task, feats), training=False))
        means.append(_numpy(tf.reduce_mean(m, axis=1) + reference))
        spreads.append(_numpy(tf.math.reduce_std(m, axis=1)))
    if not means:
        return np.empty(0), np.empty(0)
    return np.concatenate(means), np.concatenate(spreads)


# --------------------------------------------------------------------------------------------
# Export and evaluation
# --------------------------------------------------------------------------------------------


def _call(signature: Any, task: BroadTask, x: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), 2000):
        batch = tf.constant(x[start : start + 2000].astype(np.float32))
        for key, value in signature(**{task.input_name: batch}).items():
            out.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(v) for key, v in out.items()}


def _row(error: np.ndarray, std: np.ndarray | None, inside: np.ndarray | None) -> dict[str, float]:
    row = {
        "count": float(len(error)),
        "mae_mha": 1000 * float(np.mean(np.abs(error))),
        "rmse_mha": 1000 * float(np.sqrt(np.mean(error**2))),
        "max_mha": 1000 * float(np.max(np.abs(error))),
    }
    if std is not None:
        row["coverage95"] = float(np.mean(np.abs(error) <= Z95 * std))
        row["mean_std_mha"] = 1000 * float(np.mean(std))
    if inside is not None:
        row["in_domain_rate"] = float(np.mean(inside))
    return row


def family_table(task: BroadTask, path: Path, data: BroadData) -> dict[str, dict[str, float]]:
    """Per family, through the SavedModel at ``path``: errors of the learned output, coverage of
    its 95% interval, in-domain rate, and the v1 model of the same name beside it."""
    signature = load_signature(path)
    # The notebook-family model beside it: v1 of the repository's models/ (not this very model).
    v1_path = DEFAULT_MODELS_DIR / task.name / "1"
    exists = (v1_path / "saved_model.pb").is_file() and v1_path.resolve() != path.resolve()
    v1 = load_signature(v1_path) if exists else None
    sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
        name: (fam.V, fam.n, fam.E) for name, fam in data.heldout.items()
    }
    sets[CHECK] = (data.check.V, data.check.n, data.check.E)
    table = {}
    for name, (V, n, E) in sets.items():
        if len(E) == 0:
            continue
        x = V if task is POTENTIAL else n
        out = _call(signature, task, x)
        exact = E if task is POTENTIAL else E - (n * V).sum(axis=1) * DX
        learned, std = task.learned, task.learned + "_std"
        row = _row(out[learned].astype(np.float64) - exact, out[std], out["in_domain"])
        if v1 is not None:
            v1_energy = _call(v1, task, x)["energy"].astype(np.float64)
            # v1 of the density model answers E with the notebook's offset stand-in.
            row["v1_mae_mha"] = 1000 * float(np.mean(np.abs(v1_energy - E)))
        if task is DENSITY:
            row["energy_mae_mha"] = 1000 * float(np.mean(np.abs(out["energy"] - E)))
            row["energy_coverage95"] = float(
                np.mean(np.abs(out["energy"] - E) <= Z95 * out["energy_std"])
            )
        table[name] = row
    return table


def export(
    result: TrainResult, data: BroadData, task: BroadTask, models_dir: Path, version: int
) -> list[Exported]:
    """Calibrate the uncertainty and the domain, export, measure the SavedModel, write the card."""
    core = result.models["ensemble"]
    config: BroadConfig = result.config
    cal_x = _inputs(task, data.calibration)
    mean, spread = _members(task, core, cal_x)
    error = mean - targets(task, data.calibration)
    calibration = calibrate(error, spread, data.calibration.family, CALIBRATION_COVERAGE)
    domain = fit_domain(task, _inputs(task, data.train), cal_x)
    potential_energy = (data.train.n * data.train.V).sum(axis=1) * DX
    offset = (float(potential_energy.mean()), float(potential_energy.std()))
    path = models_dir / task.name / str(version)
    spec = tf.TensorSpec([None, GRID_POINTS], tf.float32)
    export_saved_model(
        path, [core], serve_fn(task, core, domain, calibration, offset), task.input_name, spec
    )
    table = family_table(task, path, data)
    metrics = summary_metrics(table)
    card = write_model_card(
        path,
        name=task.name,
        version=version,
        task=task.description,
        config=config,
        parameters=count_parameters(core),
        training_seconds=result.seconds,
        data=_card_data(data),
        metrics=metrics,
        summary=_summary(task),
        targets=_CARD_TARGETS,
        plots=[],
        command=f"python -m training {task.task}",
    )
    card["training_task"] = task.task
    # The served answer among the outputs (service.registry reads it; outputs are sorted by name).
    card["primary_output"] = "energy"
    card["families"] = table
    card["uncertainty"] = {
        "method": f"ensemble of {config.members}, std = sqrt((k * spread)^2 + s0^2)",
        "k": calibration.scale,
        "s0_ha": calibration.floor,
        "calibrated_on": f"data.potentials seed {config.calibration_seed} "
        f"({len(data.calibration)} systems), {CALIBRATION_COVERAGE:.0%} coverage per family",
    }
    card["domain"] = domain_card(task, domain)
    if task is DENSITY:
        card["offset"] = {"potential_energy_mean_ha": offset[0], "offset_std_ha": offset[1]}
    (path / "metrics.json").write_text(json.dumps(card, indent=2) + "\n")
    with (path / "MODEL_CARD.md").open("a") as f:
        f.write(card_sections(card))
    return [Exported(task.name, version, path, metrics)]


_CARD_TARGETS = {
    "test_rmse_mha": "<= 0.5 (energy_from_potential)",
    "worst_heldout_mae_mha": "<= 1.6",
    "worst_heldout_coverage95": ">= 0.90",
    "check_in_domain_rate": ">= 0.999",
}


def _card_data(data: BroadData) -> dict[str, Any]:
    splits = {"train": len(data.train), "calibration": len(data.calibration),
              "check": len(data.check)}  # fmt: skip
    return {"source": data.source, "splits": splits}


def domain_card(task: BroadTask, domain: Domain) -> dict[str, Any]:
    return {
        "definition": (
            f"features of the input as the members see them; PCA with {len(domain.scales)} "
            "components fitted on the training inputs and their mirror images; a criterion per "
            "row of 'criteria', each accepting all but "
            f"{DOMAIN_TAIL:.2%} of the calibration set; domain_score = the largest "
            "value / threshold; in_domain = domain_score <= 1"
        ),
        "criteria": [
            {"key": key, "reason": reason, "threshold": float(t)}
            for (key, reason), t in zip(CRITERIA, domain.thresholds, strict=True)
        ],
        "reason_codes": {"0": "in the training domain"}
        | {str(i + 1): r for i, (_, r) in enumerate(CRITERIA)},
        "low_region_ha": LOW_REGION if task is POTENTIAL else None,
        "wall_scale_ha": WALL_SCALE if task is POTENTIAL else None,
    }


def card_sections(card: dict[str, Any]) -> str:
    lines = ["", "## Per family (held-out, through the SavedModel)", ""]
    learned = "energy" if card["name"] == "energy_from_potential" else "kinetic_energy"
    lines.append(
        f"Errors of `{learned}`; coverage = fraction inside `{learned} +- 1.96 {learned}_std`; "
        "v1 = the notebook-family model's MAE on E."
    )
    cols = ["count", "mae_mha", "rmse_mha", "max_mha", "coverage95", "in_domain_rate",
            "v1_mae_mha", "energy_mae_mha", "energy_coverage95"]  # fmt: skip
    present = [c for c in cols if any(c in r for r in card["families"].values())]
    lines += ["", "| family | " + " | ".join(present) + " |",
              "| --- |" + " --- |" * len(present)]  # fmt: skip
    for fam, row in card["families"].items():
        cells = [f"{row[c]:.4g}" if c in row else "" for c in present]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    u, d = card["uncertainty"], card["domain"]
    lines += ["", "## Uncertainty", "", f"{u['method']}; k = {u['k']:.4g}, "
              f"s0 = {1000 * u['s0_ha']:.4g} mHa; calibrated on {u['calibrated_on']}.", "",
              "## Domain of validity", "", d["definition"] + ".", "",
              "| code | criterion | threshold | reason |", "| --- | --- | --- | --- |"]  # fmt: skip
    for i, c in enumerate(d["criteria"]):
        lines.append(f"| {i + 1} | {c['key']} | {c['threshold']:.4g} | {c['reason']} |")
    return "\n".join(lines) + "\n"


def evaluate(task: BroadTask, path: Path, data: BroadData) -> dict[str, float]:
    """Re-measure an exported v2 model: the per-family table, flattened."""
    table = family_table(task, path, data)
    out = summary_metrics(table)
    for fam, row in table.items():
        for key in ("mae_mha", "rmse_mha", "coverage95", "in_domain_rate"):
            if key in row:
                out[f"{fam}.{key}"] = row[key]
    return out


def summary_metrics(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """The card's headline figures from a per-family table."""
    notebook = table.get(heldout.NOTEBOOK_TEST, {})
    metrics = {
        f"test_{k}": v for k, v in notebook.items() if k in ("mae_mha", "rmse_mha", "max_mha")
    }
    inside = [r for f, r in table.items() if f in heldout.IN_DOMAIN]
    metrics["worst_heldout_mae_mha"] = max((r["mae_mha"] for r in inside), default=float("nan"))
    metrics["worst_heldout_coverage95"] = min(
        (r["coverage95"] for r in inside), default=float("nan")
    )
    check = table.get(CHECK, {})
    metrics["check_in_domain_rate"] = check.get("in_domain_rate", float("nan"))
    return metrics


def flatten(table: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{fam}.{key}": value for fam, row in table.items() for key, value in row.items()}


def _summary(task: BroadTask) -> str:
    return __doc__ or ""


def reexport(task: BroadTask, models_dir: Path, version: int) -> list[Exported]:
    """Export an already trained version again from its own variables (after a change to the
    serving graph that leaves the learned weights alone): same calibration, fresh measurements."""
    path = models_dir / task.name / str(version)
    old = read_card(path)
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in old["hyperparameters"].items()
    }
    config = replace(BroadConfig(), **fields)
    data = load_data(None, config)
    loaded = tf.saved_model.load(str(path))
    _, _, stats = _training_set(task, config, data)
    core = build_core(config, sum(_blocks(task)), stats)
    for target, source in zip(core.weights, loaded.weights, strict=True):
        target.assign(source.numpy())
    result = TrainResult(task.task, config, {"ensemble": core}, {}, old["training_seconds"])
    return export(result, data, task, models_dir, version)


def card_task(models_dir: Path, name: str, version: int) -> BroadTask | None:
    """The v2 task that exported ``models_dir/name/version``, or None for another model."""
    path = models_dir / name / str(version)
    if not (path / "metrics.json").is_file():
        return None
    return TASKS.get(read_card(path).get("training_task", ""))
