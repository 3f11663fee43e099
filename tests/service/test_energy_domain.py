"""service.energy_domain: the domain verdicts and the model/exact/auto decision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data import heldout, schrodinger
from service import energy_domain
from training.common import DEFAULT_MODELS_DIR

V1_CARD = json.loads((DEFAULT_MODELS_DIR / "energy_from_potential/1/metrics.json").read_text())
V2_CARD = {
    "domain": {"reason_codes": {"0": "in", "1": "far from the training inputs", "3": "sharp"}}
}


def _outputs(energy, std, score, reason) -> dict[str, np.ndarray]:
    score = np.asarray(score, np.float32)
    return {
        "energy": np.asarray(energy, np.float32),
        "energy_std": np.asarray(std, np.float32),
        "domain_score": score,
        "in_domain": score <= 1,
        "domain_reason": np.asarray(reason, np.int32),
    }


def _solver(calls: list) -> object:
    def solve(V: np.ndarray) -> np.ndarray:
        calls.append(len(V))
        return schrodinger.solve_ground_state(V)[0]

    return solve


def test_answer_auto_uses_solver_outside_domain_and_when_uncertain() -> None:
    V = heldout.family("harmonic", 3).V
    exact = schrodinger.solve_ground_state(V)[0]
    outputs = _outputs([9.0, 9.0, 9.0], [1e-4, 1e-2, 1e-4], [0.5, 0.5, 3.0], [0, 0, 1])
    calls: list = []
    ans = energy_domain.answer(
        "auto", V2_CARD, outputs, potentials=V, solve=_solver(calls), max_std=1e-3
    )
    assert ans.answered_by == ["model", "exact solver", "exact solver"]
    np.testing.assert_allclose(ans.energy[1:], exact[1:])
    assert ans.energy[0] == pytest.approx(9.0)
    assert calls == [2]  # one solver call, for the two items it answers
    assert ans.domain.reason[2].startswith("outside the training domain: far from")
    assert ans.domain.reason[0].startswith("inside")


def test_answer_model_mode_never_calls_solver_and_flags() -> None:
    calls: list = []
    outputs = _outputs([1.0, 2.0], [1e-4, 1e-4], [0.2, 7.0], [0, 3])
    ans = energy_domain.answer(
        "model", V2_CARD, outputs, potentials=None, solve=_solver(calls), max_std=1e-3
    )
    assert calls == [] and ans.answered_by == ["model", "model"]
    assert ans.domain.inside.tolist() == [True, False] and "sharp" in ans.domain.reason[1]


def test_answer_exact_mode_without_potentials_is_refused() -> None:
    outputs = _outputs([1.0], [1e-4], [0.2], [0])
    with pytest.raises(ValueError, match="needs the potentials"):
        energy_domain.answer(
            "exact", V2_CARD, outputs, potentials=None, solve=_solver([]), max_std=1e-3
        )


def test_answer_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        energy_domain.answer(
            "fast", V2_CARD, _outputs([1.0], [0], [0], [0]), potentials=None,
            solve=_solver([]), max_std=1.0,
        )  # fmt: skip


def test_v1_domain_accepts_notebook_family_float32() -> None:
    V = schrodinger.sample_potentials(200, 1 + 75_000).astype(np.float32)
    verdict = energy_domain.notebook_basis_verdict(V1_CARD["domain"], V)
    assert verdict.inside.all()


@pytest.mark.parametrize("name", [*heldout.IN_DOMAIN, *heldout.OUT_OF_DOMAIN])
def test_v1_domain_flags_every_other_family(name) -> None:
    V = heldout.family(name, 50).V
    verdict = energy_domain.notebook_basis_verdict(V1_CARD["domain"], V)
    assert not verdict.inside.any()
    assert all("not of the notebook's potential family" in r for r in verdict.reason)


def test_v1_domain_flags_deeper_notebook_family_by_coefficient() -> None:
    V = 1e-11 * schrodinger.GRID**10 + 1.5 * (
        schrodinger.sample_potentials(100, 1 + 75_000) - 1e-11 * schrodinger.GRID**10
    )
    verdict = energy_domain.notebook_basis_verdict(V1_CARD["domain"], V)
    assert verdict.inside.mean() < 0.5
    flagged = [r for r, ok in zip(verdict.reason, verdict.inside, strict=True) if not ok]
    assert all("beyond the trained range" in r for r in flagged)


def test_verdict_v1_without_potentials_is_unknown() -> None:
    verdict = energy_domain.verdict(V1_CARD, {"energy": np.zeros(2)}, None)
    assert np.isnan(verdict.score).all() and not verdict.inside.any()


def test_with_potentials_removes_the_offset() -> None:
    fam = heldout.family("morse", 4)
    T = fam.E - (fam.n * fam.V).sum(axis=1) * schrodinger.DX
    outputs = {
        "kinetic_energy": T, "kinetic_energy_std": np.full(4, 1e-4),
        "energy": T + 0.3, "energy_std": np.full(4, 0.5),
    }  # fmt: skip
    out = energy_domain.with_potentials(outputs, fam.n, fam.V)
    np.testing.assert_allclose(out["energy"], fam.E, atol=1e-9)
    np.testing.assert_allclose(out["energy_std"], 1e-4)


def _lstsq_scores(domain: dict, V: np.ndarray) -> np.ndarray:
    """The v1 check as first written (a least-squares fit per call): the oracle for the
    precomputed pseudo-inverse."""
    x = schrodinger.GRID
    wall = domain["wall_coefficient"] * x ** domain["wall_power"]
    columns = [np.ones_like(x)]
    for i in range(1, domain["modes"]):
        columns += [np.cos(i * np.pi * x / 15), np.sin(i * np.pi * x / 15)]
    A = np.stack(columns, axis=1)
    target = (np.asarray(V, np.float64) - wall).T
    coefficients, *_ = np.linalg.lstsq(A, target, rcond=None)
    residual = np.sqrt(np.mean((A @ coefficients - target) ** 2, axis=0))
    worst = np.abs(coefficients).max(axis=0)
    return np.maximum(residual / domain["residual_tolerance"], worst / domain["coefficient_limit"])


def test_v1_domain_matches_the_least_squares_fit_on_real_inputs() -> None:
    wall = 1e-11 * schrodinger.GRID**10
    notebook = schrodinger.sample_potentials(200, 1 + 75_000)
    batches = [notebook, notebook.astype(np.float32), wall + 1.5 * (notebook - wall)]
    batches += [heldout.family(name, 20).V for name in [*heldout.IN_DOMAIN, *heldout.OUT_OF_DOMAIN]]
    for V in batches:
        verdict = energy_domain.notebook_basis_verdict(V1_CARD["domain"], V)
        expected = _lstsq_scores(V1_CARD["domain"], V)
        np.testing.assert_allclose(verdict.score, expected, rtol=1e-12)
        assert verdict.inside.tolist() == (expected <= 1).tolist()
    one = energy_domain.notebook_basis_verdict(V1_CARD["domain"], notebook[:1])
    assert (
        one.score.tolist()
        == energy_domain.notebook_basis_verdict(V1_CARD["domain"], notebook[:5]).score[:1].tolist()
    )  # batch-independent: an item's verdict does not depend on its batch
