"""The documented error examples are real responses of the server, route by route."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from service.api import examples
from service.api.responses import describe_status, load_examples
from service.app import create_app
from service.registry import ModelRegistry
from service.settings import Settings
from service.tasks import model_names
from tests.service.conftest import REPO_MODELS

REGENERATE = "regenerate with `python -m service.api.examples`"


@pytest.fixture(scope="module")
def committed_registry() -> ModelRegistry:
    registry = ModelRegistry(REPO_MODELS, model_names())
    registry.load()
    return registry


async def test_record_examples_matches_committed_file(committed_registry: ModelRegistry) -> None:
    recorded, problems = await examples.record(committed_registry)
    assert problems == []
    committed = load_examples()
    assert sorted(recorded) == sorted(committed), REGENERATE
    for operation, statuses in recorded.items():
        assert statuses == committed[operation], f"{operation}: {REGENERATE}"


def test_record_examples_covers_every_status_the_issue_names() -> None:
    documented = {status for statuses in load_examples().values() for status in statuses}
    assert {"400", "401", "404", "406", "413", "415", "422", "503", "504"} <= documented


def test_openapi_documents_exactly_the_recorded_errors(committed_registry: ModelRegistry) -> None:
    app = create_app(
        Settings(model_dir=REPO_MODELS, warmup=False, api_key=SecretStr("k" * 16)),
        committed_registry,
    )
    schema = app.openapi()
    recorded = load_examples()
    invalid: dict[str, str] = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            key = f"{method.upper()} {path}"
            errors = {s: r for s, r in operation["responses"].items() if s[:1] in "45"}
            assert key in recorded, f"{key} has no recorded examples: {REGENERATE}"
            assert sorted(errors) == sorted(recorded[key]), key
            for status, response in errors.items():
                assert response["description"] == describe_status(path, status)
                (example,) = response["content"]["application/json"]["examples"].values()
                assert example["value"] == recorded[key][status]["response"]
                if status == "422" and path.startswith("/api/v1/"):
                    invalid[key] = json.dumps(example["value"], sort_keys=True)
    # Not one shape error for everything, as before: each task route has its own 422.
    assert len(invalid) == 8  # the seven task routes and /digits/read
    # Each its own, except the two upload routes, which refuse the same bad file in the same words.
    uploads = [k for k in invalid if "image" in k or "read" in k]
    assert len(uploads) == 2 and invalid[uploads[0]] == invalid[uploads[1]]
    assert len(set(invalid.values())) == len(invalid) - 1


def test_openapi_without_api_key_documents_no_401(committed_registry: ModelRegistry) -> None:
    app = create_app(Settings(model_dir=REPO_MODELS, warmup=False), committed_registry)
    for operations in app.openapi()["paths"].values():
        for operation in operations.values():
            assert "401" not in operation["responses"]
