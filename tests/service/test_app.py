"""The app factory: failed models isolated (503), readiness, API key, CORS, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.helpers import assert_error, images, potentials


@pytest.fixture
async def broken_client(broken_model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose lifespan loads the broken model dir itself (no registry passed in)."""
    app = create_app(Settings(model_dir=broken_model_dir, warmup=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_failed_models_answer_503_while_others_serve(
    broken_client: httpx.AsyncClient, broken_model_dir: Path
) -> None:
    classify = await broken_client.post(
        "/api/v1/digits/classify", json={"images": images(1).tolist(), "scale": "unit"}
    )
    assert_error(classify, 503, "model 'digit_classifier' is not available: no directory")
    density = await broken_client.post(
        "/api/v1/energy/from-density", json={"densities": [1 / 30] * 64}
    )
    body = assert_error(density, 503, "model 'energy_from_density' is not available: version 1:")
    assert "saved_model.pb" in body["error"] and str(broken_model_dir) not in body["error"]
    potential = await broken_client.post(
        "/api/v1/energy/from-potential", json={"potentials": potentials(1).tolist()}
    )
    assert potential.status_code == 200, potential.text


async def test_readiness_is_false_with_failed_models(broken_client: httpx.AsyncClient) -> None:
    ready = await broken_client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {
        "ready": False,
        "error": "models not ready: digit_classifier, energy_from_density",
    }
    model = await broken_client.get("/v2/models/energy_from_density/ready")
    assert (model.status_code, model.json()["ready"]) == (503, False)
    assert (await broken_client.get("/v2/models/energy_from_potential/ready")).status_code == 200
    assert (await broken_client.get("/v2/health/live")).status_code == 200
    status = (await broken_client.get("/v1/models/energy_from_density")).json()
    [version] = status["model_version_status"]
    assert (version["version"], version["state"]) == ("1", "END")
    assert version["status"]["error_code"] == "UNKNOWN"
    assert "<model_dir>/energy_from_density/1/saved_model.pb" in version["status"]["error_message"]


async def test_api_key_guards_model_routes_but_not_health(tiny_model_dir: Path) -> None:
    key = "k" * 24
    app = create_app(Settings(model_dir=tiny_model_dir, warmup=False, api_key=key))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"potentials": potentials(1).tolist()}
            missing = await client.post("/api/v1/energy/from-potential", json=body)
            assert_error(missing, 401, "missing or wrong API key", field="X-API-Key")
            wrong = await client.post(
                "/api/v1/energy/from-potential", json=body, headers={"X-API-Key": "x" * 24}
            )
            assert_error(wrong, 401, "missing or wrong API key")
            assert (await client.get("/v1/models/digit_decoder")).status_code == 401
            good = await client.post(
                "/api/v1/energy/from-potential", json=body, headers={"X-API-Key": key}
            )
            assert good.status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 200


async def test_cors_is_off_by_default_and_configurable(tiny_model_dir: Path) -> None:
    headers = {"Origin": "https://example.org"}
    for origins, expected in (([], None), (["https://example.org"], "https://example.org")):
        app = create_app(Settings(model_dir=tiny_model_dir, warmup=False, cors_origins=origins))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/v2/health/live", headers=headers)
            assert response.headers.get("access-control-allow-origin") == expected


async def test_openapi_documents_request_bodies_and_errors(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/api/v1/digits/classify"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ClassifyRequest"}
    assert body["example"]["scale"] == "unit"
    assert "ClassifyRequest" in schema["components"]["schemas"]
    assert "V2RequestInput" in schema["components"]["schemas"]
    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    for path in (
        "/v1/models/{name}:predict",
        "/v1/models/{name}/versions/{version}:predict",
        "/v2/models/{name}/infer",
        "/api/v1/digits/classify/image",
        "/api/v1/energy/exact",
    ):
        assert path in schema["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_openapi_declares_api_key_only_when_configured(tiny_model_dir: Path) -> None:
    for key, declared in ((None, False), ("k" * 24, True)):
        app = create_app(Settings(model_dir=tiny_model_dir, warmup=False, api_key=key))
        schema = app.openapi()
        operation = schema["paths"]["/api/v1/energy/exact"]["post"]
        assert ("security" in operation) is declared
        assert ("securitySchemes" in schema.get("components", {})) is declared
