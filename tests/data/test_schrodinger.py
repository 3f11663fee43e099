"""The one-electron generator: physics of the solver, reproduction of the dataset, storage."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from data import schrodinger as sch
from data.errors import DatasetError

# The published dataset (base seed 1): the energies of its first two systems.
E0_SEED1 = -0.22424212128613052
E1_SEED1 = -0.4470212310714243


@pytest.fixture(scope="module")
def tiny() -> sch.OneElectronDataset:
    return sch.generate(40, seed=1, workers=1)


def dense_ground_state(V: np.ndarray) -> tuple[float, np.ndarray]:
    """The straightforward reference: dense numpy.linalg.eigh of the full Hamiltonian."""
    w, v = np.linalg.eigh(sch.kinetic_matrix() + np.diag(V))
    phi = v[:, 0]
    return float(w[0]), phi**2 / (np.sum(phi**2) * sch.DX)


# ---------------------------------------------------------------------------------------------
# Physics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("w", "tolerance"), [(1.0, 1e-6), (0.5, 1e-8)])
def test_solve_harmonic_oscillator_gives_half_omega(w: float, tolerance: float) -> None:
    E, n = sch.solve_ground_state(0.5 * w**2 * sch.GRID**2)
    assert abs(E[0] - w / 2) < tolerance
    # The exact density is a Gaussian of variance 1 / (2 w).
    exact = np.sqrt(w / np.pi) * np.exp(-w * sch.GRID**2)
    assert np.abs(n[0] - exact).max() < 1e-4


def test_solve_energy_is_kinetic_plus_potential() -> None:
    V = sch.sample_potentials(20, seed=77)
    E, n = sch.solve_ground_state(V)
    T_matrix = sch.kinetic_matrix()
    for k in range(len(V)):
        # The ground state is nodeless: phi = sqrt(n) up to a global sign, with sum(phi^2) dx = 1.
        _, reference = np.linalg.eigh(T_matrix + np.diag(V[k]))
        phi = np.sqrt(n[k]) * np.sign(reference[:, 0].sum()) * np.sign(reference[:, 0])
        kinetic = phi @ T_matrix @ phi * sch.DX
        assert abs(E[k] - (kinetic + np.sum(n[k] * V[k]) * sch.DX)) < 1e-12


def test_solve_constant_shift_moves_energy_not_density() -> None:
    V = sch.sample_potentials(10, seed=5)
    E, n = sch.solve_ground_state(V)
    E_shifted, n_shifted = sch.solve_ground_state(V + 0.37)
    np.testing.assert_allclose(E_shifted - E, 0.37, rtol=0, atol=1e-12)
    np.testing.assert_allclose(n_shifted, n, rtol=0, atol=1e-10)


def test_solve_agrees_with_dense_eigh() -> None:
    rng = np.random.default_rng(2026)
    V = np.concatenate(
        [
            sch.sample_potentials(30, seed=int(rng.integers(1, 10**6))),
            # rougher potentials than the dataset's, still confined
            rng.normal(0, 0.5, size=(10, 64)) + 1e-11 * sch.GRID**10,
        ]
    )
    E, n = sch.solve_ground_state(V)
    for k in range(len(V)):
        E_ref, n_ref = dense_ground_state(V[k])
        assert abs(E[k] - E_ref) < 1e-10
        assert np.abs(n[k] - n_ref).max() < 1e-10


def test_solve_densities_are_non_negative_and_normalised(tiny: sch.OneElectronDataset) -> None:
    assert tiny.n.min() >= 0
    np.testing.assert_allclose(tiny.n.sum(axis=1) * sch.DX, 1.0, rtol=0, atol=1e-12)


def test_solve_accepts_one_potential_as_batch_of_one() -> None:
    V = sch.sample_potentials(1, seed=1)
    E, n = sch.solve_ground_state(V[0])
    assert E.shape == (1,) and n.shape == (1, 64)
    assert E.dtype == np.float64 and n.dtype == np.float64


@pytest.mark.parametrize(
    ("V", "message"),
    [
        (np.zeros((3, 63)), r"shape \(N, 64\).*got shape \(3, 63\)"),
        (np.zeros((2, 2, 64)), r"got shape \(2, 2, 64\)"),
        (np.full(64, np.nan), "finite"),
        (np.full((2, 64), np.inf), "finite"),
        ([["a"] * 64], "dtype <U1"),
        (np.ones(64, dtype=complex), "dtype complex128"),
        ([[0.0] * 64, [0.0] * 63], "ragged"),
    ],
)
def test_solve_invalid_input_raises_value_error(V: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sch.solve_ground_state(V)


# ---------------------------------------------------------------------------------------------
# Reproduction of the published dataset
# ---------------------------------------------------------------------------------------------


def test_generate_reproduces_first_energies(tiny: sch.OneElectronDataset) -> None:
    assert abs(tiny.E[0] - E0_SEED1) < 1e-12
    assert abs(tiny.E[1] - E1_SEED1) < 1e-12


def test_sample_potentials_match_the_legacy_global_generator_recipe() -> None:
    saved = np.random.get_state()
    try:
        expected = []
        for s in range(1, 6):
            np.random.seed(s)
            a = (np.random.random(3) - 0.5) * 2 * 15 / 3
            np.random.seed(s + 1234)
            b = (np.random.random(3) - 0.5) * 2 * 15 / 3
            x = sch.GRID
            V = 1e-11 * x**10
            for i in range(3):
                V = V + 0.0795 * (
                    a[i] * np.cos(i * np.pi * x / 15) + b[i] * np.sin(i * np.pi * x / 15)
                )
            expected.append(V)
    finally:
        np.random.set_state(saved)
    np.testing.assert_array_equal(sch.sample_potentials(5, seed=1), np.array(expected))


def test_sample_potentials_leave_global_random_state_alone() -> None:
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    sch.sample_potentials(3)
    assert np.random.random() == before


def test_sample_k_does_not_depend_on_count() -> None:
    np.testing.assert_array_equal(
        sch.sample_potentials(4, seed=3), sch.sample_potentials(6, seed=1)[2:]
    )


def test_generate_parallel_equals_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks and threshold so the process-pool path runs on a tiny dataset.
    monkeypatch.setattr(sch, "_CHUNK", 7)
    monkeypatch.setattr(sch, "_MIN_PARALLEL", 10)
    serial = sch.generate(30, seed=11, workers=1)
    parallel = sch.generate(30, seed=11, workers=2)
    np.testing.assert_array_equal(parallel.V, serial.V)
    np.testing.assert_array_equal(parallel.E, serial.E)
    np.testing.assert_array_equal(parallel.n, serial.n)


def test_generate_stays_in_process_when_other_threads_run() -> None:
    # Forking a multi-threaded process (TensorFlow, a server) is unsafe: default to one worker.
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert sch._workers(None) == 1
    finally:
        stop.set()
        thread.join()
    assert sch._workers(3) == 3


@pytest.mark.parametrize(("count", "seed"), [(-1, 1), (3, -1), (10, 2**32 - 1234)])
def test_generate_rejects_bad_parameters(count: int, seed: int) -> None:
    with pytest.raises(ValueError):
        sch.generate(count, seed)


def test_splits_follow_the_notebook() -> None:
    ds = sch.OneElectronDataset(
        x=sch.GRID.copy(),
        V=np.zeros((100_000, 64)),
        n=np.zeros((100_000, 64)),
        E=np.arange(100_000, dtype=np.float64),
        seed=1,
        count=100_000,
    )
    parts = sch.splits(ds)
    assert list(parts) == ["train", "validation", "test"]
    assert [(p.E[0], p.E[-1], p.count) for p in parts.values()] == [
        (0, 49_999, 50_000),
        (50_000, 74_999, 25_000),
        (75_000, 99_999, 25_000),
    ]
    assert parts["validation"].seed == 50_001
    with pytest.raises(ValueError, match="split must be one of"):
        ds.split("holdout")


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


def assert_same(a: sch.OneElectronDataset, b: sch.OneElectronDataset) -> None:
    assert (a.seed, a.count) == (b.seed, b.count)
    for name in ("x", "V", "n", "E"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(b, name).dtype == np.float64


def test_npz_round_trip(tiny: sch.OneElectronDataset, tmp_path: Path) -> None:
    path = sch.save_npz(tiny, tmp_path / "ds.npz")
    assert_same(tiny, sch.load_npz(path))
    with np.load(path, allow_pickle=False) as npz:
        assert {"x", "V", "n", "E", "seed", "count"} <= set(npz.files)


def test_pickle_round_trip(tiny: sch.OneElectronDataset, tmp_path: Path) -> None:
    paths = sch.export_pickles(tiny, tmp_path)
    assert sorted(p.name for p in paths) == ["E.db", "V.db", "density.db"]
    # What the notebook does with them.
    with (tmp_path / "V.db").open("rb") as f:
        assert pickle.load(f).shape == (40, 64)
    with (tmp_path / "E.db").open("rb") as f:
        assert pickle.load(f).shape == (40,)
    assert_same(tiny, sch.load_pickles_trusted(tmp_path, seed=1))


def test_load_npz_missing_file_raises_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no such file.*python -m data.schrodinger"):
        sch.load_npz(tmp_path / "absent.npz")


def test_load_npz_truncated_file_raises_dataset_error(
    tiny: sch.OneElectronDataset, tmp_path: Path
) -> None:
    path = sch.save_npz(tiny, tmp_path / "ds.npz")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match=r"ds\.npz"):
        sch.load_npz(path)


def test_load_npz_inconsistent_contents_raise_dataset_error(
    tiny: sch.OneElectronDataset, tmp_path: Path
) -> None:
    path = tmp_path / "bad.npz"
    np.savez_compressed(
        path,
        x=tiny.x,
        V=tiny.V[:10],
        n=tiny.n,
        E=tiny.E,
        seed=np.int64(1),
        count=np.int64(40),
        format_version=np.int64(1),
    )
    with pytest.raises(DatasetError, match=r"expected V as float64 \(40, 64\), found float64"):
        sch.load_npz(path)


def test_load_or_generate_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cache.npz"
    first = sch.load_or_generate(12, seed=4, path=path)
    assert path.is_file()

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated although the cache is valid")

    monkeypatch.setattr(sch, "generate", fail)
    assert_same(first, sch.load_or_generate(12, seed=4, path=path))


def test_load_or_generate_replaces_a_cache_for_other_parameters(tmp_path: Path) -> None:
    path = tmp_path / "cache.npz"
    sch.load_or_generate(5, seed=4, path=path)
    again = sch.load_or_generate(6, seed=4, path=path)
    assert again.count == 6
    assert sch.load_npz(path).count == 6


def test_default_dataset_path_is_git_ignored_folder() -> None:
    assert sch.DEFAULT_DATASET_PATH.name == "one_electron_seed1_n100000.npz"
    assert sch.DEFAULT_DATASET_PATH.parent.name == "generated"
    assert sch.DEFAULT_DATASET_PATH.parent.parent.name == "data"


def test_cli_writes_npz_and_pickles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.npz"
    code = sch.main(["--count", "5", "--seed", "2", "--out", str(out), "--pickles", str(tmp_path)])
    assert code == 0
    ds = sch.load_npz(out)
    assert (ds.count, ds.seed) == (5, 2)
    assert (tmp_path / "density.db").is_file()
    assert "wrote 5 systems" in capsys.readouterr().out


def test_load_or_generate_replaces_a_corrupted_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.npz"
    path.write_bytes(b"not an npz")
    ds = sch.load_or_generate(4, seed=9, path=path)
    assert_same(ds, sch.load_npz(path))


def test_load_pickles_accepts_the_notebooks_reshaped_arrays(
    tiny: sch.OneElectronDataset, tmp_path: Path
) -> None:
    # The notebook keeps (N, 64, 1) and (N, 1) arrays around; pickles of those load too.
    for name, array in (
        ("V.db", tiny.V[..., None]),
        ("density.db", tiny.n[..., None]),
        ("E.db", tiny.E[:, None]),
    ):
        with (tmp_path / name).open("wb") as f:
            pickle.dump(array, f)
    assert_same(tiny, sch.load_pickles_trusted(tmp_path))


def test_load_pickles_wrong_content_raises_dataset_error(tmp_path: Path) -> None:
    for name in ("V.db", "density.db", "E.db"):
        with (tmp_path / name).open("wb") as f:
            pickle.dump(np.zeros((3, 10)), f)
    with pytest.raises(DatasetError, match=r"V\.db: expected a pickled numpy array of shape"):
        sch.load_pickles_trusted(tmp_path)
