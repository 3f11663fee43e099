"""The two energy tasks: tiny train/export/load rounds and the physics built into the models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from data import schrodinger
from training import energy


@pytest.mark.parametrize("task", [energy.POTENTIAL, energy.DENSITY], ids=lambda t: t.task)
def test_build_model_seed_config_is_the_notebook_cnn(task) -> None:
    model = energy.build_model(task.configs["seed"], task)

    # Conv1D(6): 24, Conv1D(16): 304, Dense(120): 27,000, Dense(50): 6,050, Dense(1): 51.
    assert model.count_params() == 33_429


@pytest.mark.parametrize("task", [energy.POTENTIAL, energy.DENSITY], ids=lambda t: t.task)
def test_export_tiny_run_serves_energy(tmp_path, tiny_systems, task) -> None:
    config = dataclasses.replace(task.configs["default"], epochs=1, batch_size=16)
    result = energy.train(config, tiny_systems, task)

    [exported] = energy.export(result, tiny_systems, task, tmp_path, 1)

    path = tmp_path / task.name / "1"
    assert exported.path == path and (path / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(path))
    assert list(loaded.signatures) == ["serving_default"]
    signature = loaded.signatures["serving_default"]
    [spec] = signature.structured_input_signature[1].values()
    assert spec.name == task.input_name and spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, 64]
    x = getattr(tiny_systems.test, task.field)[:3].astype(np.float32)
    out = signature(**{task.input_name: tf.constant(x)})["energy"]
    assert out.dtype == tf.float32 and out.shape == (3,)
    assert np.all(np.isfinite(out.numpy()))
    assert set(exported.metrics) >= {"test_mse", "test_rmse_mha"}
    for plot in ("loss.png", "predicted_vs_true.png", "systems.png"):
        assert (path / plot).is_file()


def test_build_model_potential_default_shifts_energy_with_constant(tiny_systems) -> None:
    model = energy.build_model(
        energy.POTENTIAL.configs["default"], energy.POTENTIAL, tiny_systems.train
    )
    V = tiny_systems.test.V[:4].astype(np.float32)

    shifted = model.predict(V + 0.25, verbose=0) - model.predict(V, verbose=0)

    np.testing.assert_allclose(shifted, 0.25, atol=1e-5)


def test_offsets_recover_added_constant() -> None:
    V = schrodinger.sample_potentials(8, seed=5)

    np.testing.assert_allclose(energy.offsets(V + 0.1) - energy.offsets(V), 0.1, atol=1e-12)
    assert np.all(np.abs(energy.offsets(V)) <= energy.OFFSET_HALF_WIDTH + 1e-12)


def test_targets_offset_free_do_not_depend_on_constant(tiny_systems) -> None:
    config = energy.DENSITY.configs["default"]
    ds = tiny_systems.train
    shifted = dataclasses.replace(ds, V=ds.V + 0.3, E=ds.E + 0.3)

    np.testing.assert_allclose(
        energy.targets(config, shifted) - 0.3, energy.targets(config, ds), atol=1e-12
    )
