"""The catalogue is the one place per model: everything else derives from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import catalogue, settings
from service.errors import InvalidInput
from service.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]


def test_expected_models_and_route_labels_derive_from_the_catalogue() -> None:
    assert tuple(spec.name for spec in catalogue.MODELS) == settings.EXPECTED_MODELS
    assert Metrics().model_label("/api/v1/energy/from-density", {}) == "energy_from_density"
    for spec in catalogue.MODELS:
        for route in spec.routes:
            assert catalogue.TASK_ROUTE_MODELS[route] == spec.name


def test_catalogue_matches_the_committed_models_signatures() -> None:
    import json

    for spec in catalogue.MODELS:
        versions = sorted((REPO / "models" / spec.name).iterdir())
        card = json.loads((versions[0] / "metrics.json").read_text())
        signature = card["signature"]
        assert spec.primary_output in signature["outputs"], spec.name
        assert {i.name for i in spec.inputs} == set(signature["inputs"]), spec.name


def test_density_contract_checks_normalisation() -> None:
    (contract,) = catalogue.BY_NAME["energy_from_density"].inputs
    assert contract.check is not None
    good = np.full((1, 64), 1.0 / (64 * catalogue.DX))
    contract.check(good, "densities", False)
    with pytest.raises(InvalidInput, match=r"densities\[1\]: density not normalised"):
        contract.check(np.concatenate([good, good * 2]), "densities", False)
