"""The tasks are registered once: every list of model names derives from `service.tasks`, and
the lists that cannot import it (compose, the TF Serving config, schemathesis' dictionary, the
committed-models test) are checked against it here."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from service.errors import InvalidInput
from service.metrics import Metrics
from service.tasks import TASKS, Task, model_names, model_specs, route_models
from service.tasks.energy import DX

REPO = Path(__file__).resolve().parents[3]


def test_model_names_come_from_the_tasks_in_order() -> None:
    assert model_names() == (
        "digit_classifier",
        "digit_encoder",
        "digit_decoder",
        "energy_from_potential",
        "energy_from_density",
    )
    assert [task.name for task in TASKS] == ["digits", "codec", "energy"]


def test_route_labels_derive_from_the_tasks() -> None:
    labels = route_models()
    assert Metrics(route_models=labels).model_label("/api/v1/energy/from-density", {}) == (
        "energy_from_density"
    )
    for spec in model_specs().values():
        for route in spec.routes:
            assert labels[route] == spec.name


def test_every_declared_route_is_a_route_of_its_task() -> None:
    for task in TASKS:
        paths = {getattr(route, "path", None) for route in task.router.routes}
        for spec in task.models:
            assert set(spec.routes) <= paths, (task.name, spec.routes, paths)


def test_a_model_declared_twice_is_refused() -> None:
    (digits, *_) = TASKS
    with pytest.raises(ValueError, match="'digit_classifier' is declared by two tasks"):
        model_specs([digits, Task("again", digits.models, digits.router)])


def test_specs_match_the_committed_models_signatures() -> None:
    for spec in model_specs().values():
        versions = sorted((REPO / "models" / spec.name).iterdir())
        card = json.loads((versions[0] / "metrics.json").read_text())
        signature = card["signature"]
        assert spec.primary_output in signature["outputs"], spec.name
        assert {i.name for i in spec.inputs} == set(signature["inputs"]), spec.name


def test_density_contract_checks_normalisation() -> None:
    (contract,) = model_specs()["energy_from_density"].inputs
    assert contract.check is not None
    good = np.full((1, 64), 1.0 / (64 * DX))
    contract.check(good, "densities", False)
    with pytest.raises(InvalidInput, match=r"densities\[1\]: density not normalised"):
        contract.check(np.concatenate([good, good * 2]), "densities", False)


# The lists outside Python: each must name exactly the registered models, in order.


def test_compose_healthcheck_waits_for_every_model() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    found = re.search(r"for m in ([\w\s]+?); do", text)
    assert found is not None, "the TF Serving healthcheck loop is gone from docker-compose.yml"
    assert tuple(found.group(1).split()) == model_names()


def test_tfserving_config_serves_every_model() -> None:
    text = (REPO / "deploy" / "tfserving" / "models.config").read_text()
    assert tuple(re.findall(r'name: "(\w+)"', text)) == model_names()
    assert tuple(re.findall(r'base_path: "/models/(\w+)"', text)) == model_names()


def test_kserve_tfserving_manifest_serves_every_model() -> None:
    text = (REPO / "deploy" / "kserve" / "inferenceservice-tfserving.yaml").read_text()
    assert tuple(re.findall(r"storageUri: pvc://mldm-models/(\w+)", text)) == model_names()


def test_schemathesis_dictionary_names_every_model() -> None:
    config = tomllib.loads((REPO / ".ci" / "schemathesis.toml").read_text())
    assert tuple(config["dictionaries"]["models"]["values"]) == model_names()


def test_committed_models_test_checks_every_model() -> None:
    # tests/training does not import the service: its list is a literal, checked here.
    tree = ast.parse((REPO / "tests" / "training" / "test_committed_models.py").read_text())
    names = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "NAMES" for t in node.targets)
    )
    assert tuple(ast.literal_eval(names)) == model_names()
