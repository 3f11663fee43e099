"""The v2 energy models: a tiny train/export/load round, the exact symmetries of the served graph,
the uncertainty calibration and the domain check (fitted on real broad data, no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from data import heldout, potentials
from training import energy_v2
from training.common import load_signature

TASKS = [energy_v2.POTENTIAL, energy_v2.DENSITY]


@pytest.fixture(scope="module")
def tiny_broad() -> energy_v2.BroadData:
    return energy_v2.load_data(limit=48)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_broad) -> dict[str, object]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for task in TASKS:
        config = energy_v2.BroadConfig(epochs=1, members=2, hidden=(8,), batch_size=32)
        result = energy_v2.train(config, tiny_broad, task)
        [model] = energy_v2.export(result, tiny_broad, task, root, 2)
        out[task.task] = model
    return out


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.task)
def test_export_tiny_run_serves_named_outputs(exported, task) -> None:
    model = exported[task.task]
    signature = load_signature(model.path)
    x = np.random.default_rng(0).random((3, 64)).astype(np.float32)
    out = {k: v.numpy() for k, v in signature(**{task.input_name: tf.constant(x)}).items()}
    expected = {"energy", "energy_std", "domain_score", "in_domain", "domain_reason"}
    if task is energy_v2.DENSITY:
        expected |= {"kinetic_energy", "kinetic_energy_std", "offset_std"}
    assert set(out) == expected
    assert out["in_domain"].dtype == bool and out["domain_reason"].dtype == np.int32
    assert all(v.shape == (3,) for v in out.values())
    assert (out["energy_std"] > 0).all()
    np.testing.assert_array_equal(out["in_domain"], out["domain_score"] <= 1)
    np.testing.assert_array_equal(out["domain_reason"] == 0, out["in_domain"])
    card = json.loads((model.path / "metrics.json").read_text())
    assert card["training_task"] == task.task
    assert len(card["domain"]["criteria"]) == len(energy_v2.CRITERIA)
    assert set(card["families"]) >= set(heldout.FAMILIES)
    assert "Per family" in (model.path / "MODEL_CARD.md").read_text()


def test_served_potential_model_shifts_with_constant_and_mirrors(exported, tiny_broad) -> None:
    signature = load_signature(exported[energy_v2.POTENTIAL.task].path)
    V = tiny_broad.check.V[:8].astype(np.float32)
    base = signature(potential=tf.constant(V))
    shifted = signature(potential=tf.constant(V + 0.75))
    mirrored = signature(potential=tf.constant(V[:, ::-1].copy()))
    np.testing.assert_allclose(shifted["energy"] - base["energy"], 0.75, atol=2e-5)
    np.testing.assert_allclose(mirrored["energy"], base["energy"], atol=2e-5)
    np.testing.assert_allclose(shifted["domain_score"], base["domain_score"], rtol=1e-4)


def test_served_density_model_offset_part_is_constant(exported, tiny_broad) -> None:
    signature = load_signature(exported[energy_v2.DENSITY.task].path)
    out = signature(density=tf.constant(tiny_broad.check.n[:5].astype(np.float32)))
    offset = out["offset_std"].numpy()
    assert np.all(offset == offset[0]) and offset[0] > 0
    np.testing.assert_allclose(
        out["energy_std"].numpy() ** 2,
        out["kinetic_energy_std"].numpy() ** 2 + offset**2,
        rtol=1e-5,
    )


def test_calibrate_covers_every_family() -> None:
    rng = np.random.default_rng(1)
    spread = rng.uniform(0.5, 2, 4000)
    family = np.repeat([0, 1], 2000)
    # Family 1's errors are twice as large relative to the spread: the scale must cover it.
    error = rng.normal(size=4000) * spread * np.where(family == 1, 2.0, 1.0)
    cal = energy_v2.calibrate(error, spread, family, 0.95)
    std = np.sqrt((cal.scale * spread) ** 2 + cal.floor**2)
    for f in (0, 1):
        covered = np.abs(error[family == f]) <= energy_v2.Z95 * std[family == f]
        assert covered.mean() >= 0.95


@pytest.fixture(scope="module")
def potential_domain() -> energy_v2.Domain:
    train = potentials.generate(3000, 11).V.astype(np.float32)
    calibration = potentials.generate(3000, 12).V.astype(np.float32)
    return energy_v2.fit_domain(energy_v2.POTENTIAL, train, calibration)


def _accepted(domain: energy_v2.Domain, V: np.ndarray) -> np.ndarray:
    raw = energy_v2._domain_raw(energy_v2.POTENTIAL, domain, tf.constant(V.astype(np.float32)))
    return np.asarray((raw.numpy() / domain.thresholds).max(axis=1) <= 1)


def test_domain_accepts_fresh_training_distribution(potential_domain) -> None:
    fresh = potentials.generate(2000, 13).V
    assert _accepted(potential_domain, fresh).mean() >= 0.99


@pytest.mark.parametrize("name", list(heldout.OUT_OF_DOMAIN))
def test_domain_flags_out_of_domain_family(potential_domain, name) -> None:
    V, _ = heldout.potentials(name, 200)
    assert _accepted(potential_domain, V).mean() <= 0.1
