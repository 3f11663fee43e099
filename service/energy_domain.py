"""Who answers an energy request (issue 11): the model, the exact solver, or `auto`.

Pure logic, no routes and no TensorFlow: given a model version's named outputs and its model card
(``metrics.json``), decide per item whether the model's answer stands, write the reason a person
can read, and call the exact solver for the rest.

* ``model``: the model answers every item; items outside its domain say so (flag, score, reason).
* ``exact``: the exact solver (``data.schrodinger.solve_ground_state``) answers every item.
* ``auto``: the model answers items inside its domain whose uncertainty is at most
  ``max_std`` (Hartree; the service's ``Settings.energy_auto_max_std``); the solver the others.

A version whose card has a ``calibration`` section (``training.energy_calibration``, issue 20)
is answered by it instead: its ``energy_std`` is multiplied by ``std_scale`` (so that its 95%
intervals cover 95% of every held-out family, not only on average), and in ``auto`` the model
answers only inside its domain, with ``domain_score`` at most ``auto_max_domain_score`` and the
rescaled ``energy_std`` at most ``auto_max_std_ha``: the rule under which no model answer of the
calibration draws, on any tested family or demo preset, was more than 1.6 mHa off (``max_std``
then bounds the model's own std, before the rescaling: the setting can only make ``auto``
stricter).

A density model's energy from a density alone (no potential) is T[n] plus the training mean of
the potential energy: the potential's offset cannot be inferred from n, so such an answer is
never ``in_domain`` and its reason says so.

Model versions without domain outputs (v1) are checked with the card's ``domain`` definition of
kind ``"notebook_basis"`` when it has one (the notebook's 5-term potential family), else they are
"unknown" (not checkable, so ``auto`` sends them to the solver).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

MODES: tuple[str, ...] = ("model", "exact", "auto")
GRID = np.linspace(-15, 15, 64)


@dataclass(frozen=True)
class DomainVerdict:
    """Per item: ``score`` (1 = the edge of the domain; NaN = unknown), ``inside``, ``reason``."""

    score: np.ndarray
    inside: np.ndarray
    reason: list[str]


@dataclass(frozen=True)
class EnergyAnswer:
    """Per item: the energy (Ha), which answered it, its 1-sigma uncertainty (0 for the solver,
    NaN when the model gives none) and the model's domain verdict (given whoever answered)."""

    energy: np.ndarray
    answered_by: list[str]
    energy_std: np.ndarray
    domain: DomainVerdict


def reason_texts(card: Mapping[str, Any], codes: np.ndarray, scores: np.ndarray) -> list[str]:
    """The human-readable reason of each item from a v2 card's ``domain.reason_codes``."""
    reasons = card.get("domain", {}).get("reason_codes", {})
    texts = []
    for code, score in zip(codes.tolist(), scores.tolist(), strict=True):
        if code == 0:
            texts.append(f"inside the training domain (score {score:.3g} <= 1)")
        else:
            what = reasons.get(str(code), f"criterion {code}")
            texts.append(f"outside the training domain: {what} (score {score:.3g} > 1)")
    return texts


@lru_cache(maxsize=8)
def _notebook_basis(
    wall_coefficient: float, wall_power: int, modes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The wall, the basis ``A`` [64, 2 modes - 1] and its pseudo-inverse, once per definition:
    built per request they were most of the energy task route's cost (issue 15)."""
    x = GRID
    wall = wall_coefficient * x**wall_power
    basis = [np.ones_like(x)]
    for i in range(1, modes):
        basis += [np.cos(i * np.pi * x / 15), np.sin(i * np.pi * x / 15)]
    A = np.stack(basis, axis=1)
    # The least-squares solution `lstsq(A, .)` as one matrix product: A has full column rank
    # (orthogonal Fourier columns on the grid), so pinv(A) @ b is that solution.
    pseudo_inverse = np.linalg.pinv(A)
    for array in (wall, A, pseudo_inverse):
        array.flags.writeable = False  # shared by every request
    return wall, A, pseudo_inverse


def notebook_basis_verdict(domain: Mapping[str, Any], potentials: np.ndarray) -> DomainVerdict:
    """The v1 models' domain: V - wall in the span of the notebook's basis with coefficients
    inside the trained range (see the v1 card's ``domain``)."""
    wall, A, pseudo_inverse = _notebook_basis(
        float(domain["wall_coefficient"]), int(domain["wall_power"]), int(domain["modes"])
    )
    target = (np.asarray(potentials, np.float64) - wall).T
    coefficients = pseudo_inverse @ target
    residual = np.sqrt(np.mean((A @ coefficients - target) ** 2, axis=0))
    limit = float(domain["coefficient_limit"])
    tolerance = float(domain["residual_tolerance"])
    worst = np.abs(coefficients).max(axis=0)
    score = np.maximum(residual / tolerance, worst / limit)
    reasons = []
    for r, c, s in zip(residual.tolist(), worst.tolist(), score.tolist(), strict=True):
        if s <= 1:
            reasons.append(f"inside the notebook's potential family (score {s:.3g} <= 1)")
        elif r > tolerance:
            reasons.append(
                f"outside the training domain: not of the notebook's potential family "
                f"(residual {r:.3g} Ha from its basis, tolerance {tolerance:g} Ha)"
            )
        else:
            reasons.append(
                f"outside the training domain: a coefficient {c:.3g} Ha is beyond the trained "
                f"range +-{limit:g} Ha"
            )
    return DomainVerdict(score=score, inside=score <= 1, reason=reasons)


def verdict(
    card: Mapping[str, Any], outputs: Mapping[str, np.ndarray], potentials: np.ndarray | None
) -> DomainVerdict:
    """The domain verdict of a model version for a batch: its own outputs (v2), else its card's
    definition (v1, needs the potentials), else unknown."""
    count = len(next(iter(outputs.values())))
    if "in_domain" in outputs:
        inside = np.asarray(outputs["in_domain"], bool).reshape(count)
        # A version with the flag but no score: 1 at the edge, so 0.5 inside and 2 outside.
        scores = np.asarray(outputs.get("domain_score", np.where(inside, 0.5, 2.0)), np.float64)
        codes = np.asarray(outputs.get("domain_reason", np.where(scores <= 1, 0, -1)))
        return DomainVerdict(scores, inside, reason_texts(card, codes, scores))
    domain = card.get("domain", {})
    if domain.get("kind") == "notebook_basis" and potentials is not None:
        return notebook_basis_verdict(domain, potentials)
    return DomainVerdict(
        np.full(count, np.nan),
        np.zeros(count, bool),
        ["unknown: this model version has no domain check for this input"] * count,
    )


def answer(
    mode: str,
    card: Mapping[str, Any],
    outputs: Mapping[str, np.ndarray],
    *,
    potentials: np.ndarray | None,
    solve: Callable[[np.ndarray], np.ndarray],
    max_std: float,
    energy_key: str = "energy",
    exact: np.ndarray | None = None,
) -> EnergyAnswer:
    """Combine the model's outputs with the exact solver according to ``mode``.

    ``solve(potentials[k])`` returns the exact energies of the given rows; it is called once, on
    the items the solver answers, and only when there are any; ``exact``, when the caller has
    solved every item already, is used instead. Raises ``ValueError`` for an
    unknown mode or when the solver must answer but no potentials were given (the caller turns
    it into a 4xx naming the field).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    energy = np.asarray(outputs[energy_key], np.float64).copy()
    std_key = f"{energy_key}_std"
    std = np.asarray(outputs[std_key], np.float64).copy() if std_key in outputs else None
    calibration = card.get("calibration", {})
    if std is not None:
        std *= float(calibration.get("std_scale", 1.0))
    domain = verdict(card, outputs, potentials)
    if "kinetic_energy" in outputs and potentials is None:
        domain = _offset_unknown(domain)
    if mode == "model":
        solver = np.zeros(len(energy), bool)
    elif mode == "exact":
        solver = np.ones(len(energy), bool)
    else:
        if "auto_max_std_ha" in calibration:
            # ``max_std`` (the setting) bounds the model's own std, before the rescaling.
            scale = float(calibration.get("std_scale", 1.0))
            max_std = min(float(calibration["auto_max_std_ha"]), max_std * scale)
        uncertain = np.ones(len(energy), bool) if std is None else ~(std <= max_std)
        if "auto_max_domain_score" in calibration:
            uncertain |= ~(domain.score <= float(calibration["auto_max_domain_score"]))
        solver = ~domain.inside | uncertain
    if std is None:
        std = np.full(len(energy), np.nan)
    if solver.any():
        if potentials is None:
            if mode == "exact":
                raise ValueError("mode 'exact' needs the potentials")
            solver[:] = False  # auto without potentials: the model's answer, flagged
        else:
            energy[solver] = (
                np.asarray(exact)[solver]
                if exact is not None
                else solve(np.asarray(potentials)[solver])
            )
            std[solver] = 0.0
    return EnergyAnswer(
        energy=energy,
        answered_by=["exact solver" if e else "model" for e in solver.tolist()],
        energy_std=std,
        domain=domain,
    )


def _offset_unknown(domain: DomainVerdict) -> DomainVerdict:
    """A density-only verdict: whatever the density's own, the energy's absolute level is
    unknown (n is the same for V and V + c), so no item is in the domain."""
    note = (
        "the potential's offset cannot be inferred from a density alone: the energy assumes "
        "the training mean of sum(n V) dx (uncertain by the card's offset_std); send the "
        "potentials for an absolute energy"
    )
    reasons = [f"{reason}; but {note}" for reason in domain.reason]
    return DomainVerdict(domain.score, np.zeros(len(domain.inside), bool), reasons)


def with_potentials(
    outputs: Mapping[str, np.ndarray], densities: np.ndarray, potentials: np.ndarray
) -> dict[str, np.ndarray]:
    """A density model's outputs when the potentials are known too: E = T[n] + sum(n V) dx, so
    the irreducible offset drops out and ``energy_std`` is the kinetic energy's alone.

    For a v2 density model (``kinetic_energy`` output); other outputs are returned unchanged."""
    if "kinetic_energy" not in outputs:
        return dict(outputs)
    dx = float(GRID[1] - GRID[0])
    potential_energy = (np.asarray(densities, np.float64) * potentials).sum(axis=1) * dx
    out = dict(outputs)
    out["energy"] = np.asarray(outputs["kinetic_energy"], np.float64) + potential_energy
    out["energy_std"] = np.asarray(outputs["kinetic_energy_std"], np.float64)
    return out
