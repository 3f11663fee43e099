"""The energy routes' `mode` (model | exact | auto) and domain verdict, through the HTTP API, on
the committed energy models (issue 11): the tiny test models have no domain outputs.

Each version is served alone (a model directory of links to one committed version), so that v1
(single output, its card's `notebook_basis` check) and v2 (domain and uncertainty outputs) are
both covered.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from data import heldout
from data.schrodinger import GRID, sample_potentials, solve_ground_state
from service.app import create_app
from service.registry import ModelRegistry
from service.settings import Settings
from tests.service.conftest import REPO_MODELS
from training import energy_calibration

ENERGY = ("energy_from_potential", "energy_from_density")
POTENTIAL = "/api/v1/energy/from-potential"
DENSITY = "/api/v1/energy/from-density"

pytestmark = pytest.mark.skipif(
    not all((REPO_MODELS / name / v / "saved_model.pb").exists() for name in ENERGY for v in "12"),
    reason="the committed energy models v1 and v2 are not in models/",
)

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def _one_version(root: Path, version: int) -> ModelRegistry:
    for name in ENERGY:
        (root / name).mkdir(parents=True)
        (root / name / str(version)).symlink_to(REPO_MODELS / name / str(version))
    registry = ModelRegistry(root, ENERGY)
    registry.load()
    return registry


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ModelRegistry]:
    return {v: _one_version(tmp_path_factory.mktemp(f"energy_v{v}"), v) for v in (1, 2)}


@pytest.fixture
def energy_client(registries: dict[int, ModelRegistry]) -> Client:
    @asynccontextmanager
    async def open_client(version: int = 2, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
        registry = registries[version]
        app = create_app(
            Settings(
                model_dir=registry.model_dir, expected_models=ENERGY, warmup=False, **settings
            ),  # type: ignore[arg-type]
            registry,
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client

    return open_client


async def _post(client: httpx.AsyncClient, url: str, **body: object) -> dict[str, object]:
    response = await client.post(url, json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_energy_auto_answers_with_the_model_only_where_calibrated(
    energy_client: Client,
) -> None:
    # the notebook's family, where v2's std is smallest; the model answers ~2% of it
    V = sample_potentials(400, 11)
    E, _ = solve_ground_state(V)
    card = json.loads((REPO_MODELS / ENERGY[0] / "2" / "metrics.json").read_text())
    calibration = card["calibration"]
    async with energy_client() as client:
        body = await _post(client, POTENTIAL, potentials=V.tolist(), mode="auto")
        plain = await _post(client, POTENTIAL, potentials=V.tolist(), mode="model")
    assert body["mode"] == "auto" and body["in_domain"] == [True] * 400
    energies, std = np.array(body["energies"]), np.array(body["energy_std"])
    by_model = np.array(body["answered_by"]) == "model"
    # the calibrated rule (training.energy_calibration): in the domain, a small domain score
    # and a small rescaled std; the solver answers the rest, exactly
    assert 0 < by_model.sum() < 40
    assert np.all(std[by_model] <= calibration["auto_max_std_ha"])
    scores = np.array(body["domain_score"])
    assert np.all(scores[by_model] <= calibration["auto_max_domain_score"])
    assert np.all(std[~by_model] == 0.0)
    np.testing.assert_allclose(energies[~by_model], E[~by_model], atol=1e-12)
    assert np.abs(energies - E).max() <= 0.0016  # auto's promise on these
    # the served std is the model's times the calibrated scale, and the interval follows it
    model_std = np.array(plain["energy_std"])
    np.testing.assert_allclose(std[by_model], model_std[by_model], rtol=1e-6)
    assert np.all(model_std >= 0.0007855 * calibration["std_scale"] * (1 - 1e-6))
    low, high = np.array(body["energy_interval_95"]).T
    np.testing.assert_allclose(high - low, 2 * 1.96 * std, rtol=1e-6)


@pytest.mark.parametrize("name", list(heldout.OUT_OF_DOMAIN))
async def test_energy_auto_out_of_domain_is_flagged_and_solved(
    energy_client: Client, name: str
) -> None:
    fam = heldout.family(name, 6)
    async with energy_client() as client:
        model = await _post(client, POTENTIAL, potentials=fam.V.tolist())
        auto = await _post(client, POTENTIAL, potentials=fam.V.tolist(), mode="auto")
    flagged = ~np.array(model["in_domain"])
    # coulomb_sharp is the family the v2 check misses most (~11% accepted, its card): most of six
    assert flagged.sum() >= 4
    assert model["answered_by"] == ["model"] * 6  # mode=model: flagged, still the model's
    for i in np.flatnonzero(flagged):
        assert model["domain_score"][i] > 1  # type: ignore[index]
        assert model["domain_reason_text"][i].startswith("outside the training domain")  # type: ignore[index]
        assert model["domain_reason"][i] > 0  # type: ignore[index]
        assert auto["answered_by"][i] == "exact solver"  # type: ignore[index]
        assert auto["energies"][i] == pytest.approx(fam.E[i], abs=1e-9)  # type: ignore[index]
        assert auto["energy_std"][i] == 0.0  # type: ignore[index]
    assert auto["in_domain"] == model["in_domain"]  # the verdict, whoever answered


async def test_energy_exact_mode_answers_everything_with_solver(energy_client: Client) -> None:
    V = sample_potentials(3, 5)
    E, _ = solve_ground_state(V)
    async with energy_client() as client:
        body = await _post(client, POTENTIAL, potentials=V.tolist(), mode="exact")
    assert body["answered_by"] == ["exact solver"] * 3
    np.testing.assert_allclose(body["energies"], E, atol=1e-12)
    assert body["in_domain"] == [True] * 3  # the notebook's family is in v2's domain


async def test_energy_auto_uncertainty_threshold_falls_back(energy_client: Client) -> None:
    fam = heldout.family("harmonic", 4)
    # below every model std (the setting bounds the model's own std, before calibration)
    async with energy_client(energy_auto_max_std=1e-6) as client:
        body = await _post(client, POTENTIAL, potentials=fam.V.tolist(), mode="auto")
    assert body["in_domain"] == [True] * 4
    assert body["answered_by"] == ["exact solver"] * 4
    np.testing.assert_allclose(body["energies"], fam.E, atol=1e-12)


@pytest.mark.parametrize("url", [POTENTIAL, DENSITY])
async def test_energy_bad_mode_is_422_naming_mode(energy_client: Client, url: str) -> None:
    V = sample_potentials(1, 5)
    _, n = solve_ground_state(V)
    field = "potentials" if url == POTENTIAL else "densities"
    async with energy_client() as client:
        response = await client.post(
            url, json={field: (V if url == POTENTIAL else n).tolist(), "mode": "fast"}
        )
        npy = await client.post(
            f"{url}?mode=best", content=_npy(V), headers={"Content-Type": "application/x-npy"}
        )
    for bad, received in ((response, "'fast'"), (npy, "'best'")):
        assert bad.status_code == 422, bad.text
        assert bad.json()["field"] == "mode" and bad.json()["received"] == received
        assert "'auto'" in bad.json()["expected"]


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    return buffer.getvalue()


async def test_energy_density_exact_without_potentials_is_422(energy_client: Client) -> None:
    _, n = solve_ground_state(sample_potentials(2, 5))
    async with energy_client() as client:
        response = await client.post(DENSITY, json={"densities": n.tolist(), "mode": "exact"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "potentials"


async def test_energy_density_says_what_n_alone_knows(energy_client: Client) -> None:
    fam = heldout.family("double_asymmetric", 5)
    dx = float(GRID[1] - GRID[0])
    kinetic = fam.E - (fam.n * fam.V).sum(axis=1) * dx
    async with energy_client() as client:
        alone = await _post(client, DENSITY, densities=fam.n.tolist(), mode="auto")
        given = await _post(
            client, DENSITY, densities=fam.n.tolist(), potentials=fam.V.tolist(), mode="model"
        )
        exact = await _post(
            client, DENSITY, densities=fam.n.tolist(), potentials=fam.V.tolist(), mode="exact"
        )
    # n alone: T[n] is known (offset-free), E only up to the irreducible offset_std
    np.testing.assert_allclose(alone["kinetic_energy"], kinetic, atol=2e-3)
    offset = np.array(alone["offset_std"])
    assert np.all(offset > 0.05) and np.allclose(offset, offset[0])
    assert np.all(np.array(alone["energy_std"]) >= offset * (1 - 1e-6))  # float32 outputs
    # auto without V cannot call the solver: the model's answer, with its large uncertainty,
    # and never "in the domain": the potential's offset cannot be known from n
    assert alone["answered_by"] == ["model"] * 5
    assert alone["in_domain"] == [False] * 5
    assert all("offset cannot be inferred" in t for t in alone["domain_reason_text"])
    assert given["in_domain"] == [True] * 5
    # with V: E = T[n] + sum(n V) dx, the offset gone from the answer and its uncertainty
    np.testing.assert_allclose(given["energies"], fam.E, atol=2e-3)
    assert np.all(np.array(given["energy_std"]) < np.array(alone["energy_std"]))
    np.testing.assert_allclose(given["errors"], np.array(given["energies"]) - fam.E, atol=1e-9)
    assert exact["answered_by"] == ["exact solver"] * 5
    np.testing.assert_allclose(exact["energies"], fam.E, atol=1e-12)


async def test_energy_v1_is_checked_with_its_card(energy_client: Client) -> None:
    notebook = sample_potentials(3, 7)
    harmonic = 0.5 * GRID[np.newaxis] ** 2
    V = np.concatenate([notebook, harmonic])
    async with energy_client(version=1) as client:
        model = await _post(client, POTENTIAL, potentials=V.tolist())
        auto = await _post(client, POTENTIAL, potentials=V.tolist(), mode="auto")
        density = await _post(
            client, DENSITY, densities=solve_ground_state(V)[1].tolist(), potentials=V.tolist()
        )
    assert model["model"] == {"name": "energy_from_potential", "version": 1}
    assert model["in_domain"] == [True, True, True, False]
    assert "notebook's potential family" in model["domain_reason_text"][3]  # type: ignore[index]
    assert model["energy_std"] == [None] * 4 and model["energy_interval_95"] == [None] * 4
    assert "domain_reason" not in model  # v1 outputs no reason code
    # no uncertainty from v1: auto lets the solver answer everything
    assert auto["answered_by"] == ["exact solver"] * 4
    assert density["in_domain"] == [True, True, True, False]


async def test_energy_npz_answer_has_every_field_of_the_json_one(energy_client: Client) -> None:
    import io

    V = sample_potentials(4, 9)
    async with energy_client() as client:
        body = await _post(client, POTENTIAL, potentials=V.tolist(), mode="auto")
        response = await client.post(
            f"{POTENTIAL}?mode=auto",
            content=_npy(V),
            headers={"Content-Type": "application/x-npy", "Accept": "application/x-npz"},
        )
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(response.content), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert str(arrays["mode"]) == "auto"
    assert arrays["answered_by"].tolist() == body["answered_by"]
    assert arrays["in_domain"].tolist() == body["in_domain"]
    np.testing.assert_allclose(arrays["energies"], body["energies"], rtol=1e-6)
    np.testing.assert_allclose(arrays["energy_std"], body["energy_std"], rtol=1e-6)
    np.testing.assert_allclose(arrays["energy_interval_95"], body["energy_interval_95"], rtol=1e-6)
    assert arrays["domain_reason_text"].tolist() == body["domain_reason_text"]


async def test_energy_intervals_cover_every_family(energy_client: Client) -> None:
    """issue 20: the served 95% intervals hold per family (a small held-out sample of each),
    where the model's own (before the card's std_scale) miss the issue's counterexamples."""
    card = json.loads((REPO_MODELS / ENERGY[0] / "2" / "metrics.json").read_text())
    scale = card["calibration"]["std_scale"]
    coverage, before = {}, {}
    async with energy_client() as client:
        for name in [*heldout.IN_DOMAIN, *energy_calibration.EXTRA]:
            V = energy_calibration.family(name, 40, energy_calibration.HELD_OUT_SEED)
            body = await _post(client, POTENTIAL, potentials=V.tolist(), include_exact=True)
            inside = np.array(body["in_domain"])
            error = np.abs(np.array(body["errors"]))[inside]
            std = np.array(body["energy_std"])[inside]
            low, high = np.array(body["energy_interval_95"])[inside].T
            exact = np.array(body["exact_energies"])[inside]
            coverage[name] = float(((low <= exact) & (exact <= high)).mean())
            before[name] = float((error <= 1.96 * std / scale).mean())
    assert all(c >= 0.9 for c in coverage.values()), coverage  # 93% over 400 a family
    assert before["barrier_in_trap"] < 0.8 and before["deep_square"] < 0.9, before


async def test_energy_auto_sends_the_5_mha_notebook_point_to_the_solver(
    energy_client: Client,
) -> None:
    """The demo notebook preset's point that the first calibrated rule left to the model
    5.12 mHa off (seed 2, item 1285): in domain, a std near the threshold; `auto` solves it."""
    V = energy_calibration.demo_presets(seed=2)["preset notebook"][1285:1286]
    E, _ = solve_ground_state(V)
    async with energy_client() as client:
        model = await _post(client, POTENTIAL, potentials=V.tolist(), mode="model")
        auto = await _post(client, POTENTIAL, potentials=V.tolist(), mode="auto")
    assert model["in_domain"] == [True] and abs(model["energies"][0] - E[0]) > 0.005  # type: ignore[index]
    assert auto["answered_by"] == ["exact solver"]
    assert auto["energies"][0] == pytest.approx(E[0], abs=1e-9)  # type: ignore[index]


async def test_energy_density_far_offset_is_never_in_domain(energy_client: Client) -> None:
    """A potential offset of -50 Ha (far from training) leaves n unchanged: from n alone the
    answer cannot know it, says so, and is not `in_domain`; with V the answer has it."""
    fam = heldout.family("harmonic", 3)
    shifted = fam.V - 50.0
    E, n = solve_ground_state(shifted)
    async with energy_client() as client:
        alone = await _post(client, DENSITY, densities=n.tolist(), mode="auto")
        given = await _post(client, DENSITY, densities=n.tolist(), potentials=shifted.tolist())
    assert alone["in_domain"] == [False] * 3
    assert all("offset cannot be inferred" in t for t in alone["domain_reason_text"])
    assert np.all(np.abs(np.array(alone["energies"]) - E) > 40)  # the offset it cannot see
    np.testing.assert_allclose(given["energies"], E, atol=5e-3)
