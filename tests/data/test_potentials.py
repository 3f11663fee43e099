"""The broad training set (data.potentials) and the held-out families (data.heldout)."""

from __future__ import annotations

import numpy as np
import pytest

from data import heldout, potentials, schrodinger


def test_generate_same_seed_same_systems() -> None:
    a = potentials.generate(40, 5)
    b = potentials.generate(40, 5)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.E, b.E)
    assert not np.array_equal(potentials.generate(40, 6).V, a.V)


def test_generate_solves_each_potential_exactly() -> None:
    ds = potentials.generate(30, 1)
    E, n = schrodinger.solve_ground_state(ds.V)
    np.testing.assert_array_equal(ds.E, E)
    np.testing.assert_array_equal(ds.n, n)
    assert ds.V.shape == (30, 64) and ds.family.dtype == np.int64


def test_sample_draws_every_family() -> None:
    _, family = potentials.sample(400, 3)
    assert set(family.tolist()) == set(range(len(potentials.FAMILIES)))


def test_save_load_roundtrip(tmp_path) -> None:
    ds = potentials.generate(10, 2)
    back = potentials.load(potentials.save(ds, tmp_path / "b.npz"))
    np.testing.assert_array_equal(back.V, ds.V)
    np.testing.assert_array_equal(back.family, ds.family)


def test_load_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(potentials.DatasetError, match=r"nothing\.npz"):
        potentials.load(tmp_path / "nothing.npz")


def test_main_writes_the_dataset(tmp_path, capsys) -> None:
    out = tmp_path / "broad.npz"
    assert (
        potentials.main(["--count", "12", "--seed", "4", "--out", str(out), "--no-progress"]) == 0
    )
    assert len(potentials.load(out)) == 12
    assert "wrote 12 systems" in capsys.readouterr().out


@pytest.mark.parametrize("name", heldout.FAMILIES)
def test_heldout_family_is_seeded_and_solved(name) -> None:
    a, b = heldout.family(name, 6), heldout.family(name, 6)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.E, schrodinger.solve_ground_state(a.V)[0])
    assert a.in_domain == (name not in heldout.OUT_OF_DOMAIN)


def test_heldout_seeds_differ_from_training() -> None:
    V, _ = heldout.potentials("harmonic", 5, seed=0)
    V1, _ = heldout.potentials("harmonic", 5, seed=1)
    assert not np.array_equal(V, V1)


@pytest.mark.parametrize("name", ["harmonic", "morse", "soft_coulomb", "square"])
def test_resolution_error_in_domain_family_is_small(name) -> None:
    # The grid resolves the in-domain families: the 64-point energies are within 0.1 mHa of
    # the continuum limit.
    assert np.abs(heldout.resolution_error(name, 5)).max() < 1e-4


@pytest.mark.parametrize("name", ["narrow_deep", "coulomb_sharp", "harmonic_steep"])
def test_resolution_error_out_of_domain_family_is_large(name) -> None:
    assert np.abs(heldout.resolution_error(name, 5)).max() > 1e-3


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        heldout.potentials("nope", 1)
