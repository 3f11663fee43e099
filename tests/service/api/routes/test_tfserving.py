"""TensorFlow Serving REST: status, metadata with the model card, predict in both formats."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.registry import ModelRegistry
from service.settings import Settings
from tests.service.helpers import assert_error, images, potentials


async def test_model_status_lists_available_versions(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/digit_decoder")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("1", "2")
        ],
        # KServe V1's readiness check reads these from the same path.
        "name": "digit_decoder",
        "ready": True,
    }


async def test_model_version_status_shows_one_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/digit_decoder/versions/1")
    assert [s["version"] for s in response.json()["model_version_status"]] == ["1"]


async def test_model_status_rejects_unknown_model_and_version(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/models/nope"), 404, "model 'nope' not found")
    assert_error(await client.get("/v1/models/digit_decoder/versions/3"), 404, "has no version 3")
    assert_error(
        await client.get("/v1/models/digit_decoder/versions/x"),
        404,
        "version must be a positive integer, received 'x'",
    )


async def test_model_metadata_has_signature_and_card(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/digit_encoder/versions/1/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"]["version"] == "1"
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["images"]["dtype"] == "DT_FLOAT"
    dims = [d["size"] for d in signature["outputs"]["code"]["tensor_shape"]["dim"]]
    assert (signature["outputs"]["code"]["dtype"], dims) == ("DT_UINT8", ["-1", "16"])
    assert body["model_card"]["metrics"]["version"] == 1
    assert body["model_card"]["markdown"].startswith("# digit_encoder v1")
    latest = (await client.get("/v1/models/digit_encoder/metadata")).json()
    assert latest["model_spec"]["version"] == "2"


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
async def test_predict_equals_task_endpoint(client: httpx.AsyncClient, fmt: str) -> None:
    V = potentials(3)
    task = await client.post("/api/v1/energy/from-potential", json={"potentials": V.tolist()})
    served = await client.post("/v1/models/energy_from_potential:predict", json={fmt: V.tolist()})
    assert served.status_code == 200, served.text
    key = "predictions" if fmt == "instances" else "outputs"
    assert served.json()[key] == task.json()["energies"]


async def test_predict_with_named_instances_equals_classify(client: httpx.AsyncClient) -> None:
    batch = images(2)
    task = await client.post(
        "/api/v1/digits/classify", json={"images": batch.tolist(), "scale": "unit"}
    )
    instances = [{"images": image.reshape(28, 28, 1).tolist()} for image in batch]
    served = await client.post(
        "/v1/models/digit_classifier/versions/1:predict", json={"instances": instances}
    )
    assert served.status_code == 200, served.text
    assert served.json()["predictions"] == [p["probabilities"] for p in task.json()["predictions"]]


async def test_predict_decodes_b64_codes(client: httpx.AsyncClient) -> None:
    latent = bytes(range(16))
    b64 = base64.b64encode(latent).decode()
    row = await client.post(
        "/v1/models/digit_decoder/versions/1:predict", json={"instances": [{"b64": b64}]}
    )
    columnar = await client.post(
        "/v1/models/digit_decoder/versions/1:predict", json={"inputs": {"code": [{"b64": b64}]}}
    )
    assert row.status_code == 200, row.text
    assert columnar.status_code == 200, columnar.text
    image = np.array(row.json()["predictions"][0], dtype=np.float32)
    assert image.shape == (28, 28, 1)
    assert row.json()["predictions"] == columnar.json()["outputs"]
    codes = await client.post(
        "/api/v1/digits/decompress",
        json={"codes": [base64.b64encode(b"\x01\x00\x01" + latent).decode()]},
    )
    np.testing.assert_array_equal(image[..., 0], np.array(codes.json()["images"][0], np.float32))


async def test_predict_rejects_both_formats(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/energy_from_potential:predict", json={"instances": [], "inputs": []}
    )
    assert_error(response, 400, "exactly one of 'instances'")


async def test_predict_rejects_unknown_signature(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/energy_from_potential:predict",
        json={"signature_name": "other", "instances": potentials(1).tolist()},
    )
    assert_error(response, 400, "serving signature name 'other' not found")


async def test_predict_rejects_wrong_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/energy_from_potential:predict", json={"instances": [[1.0, 2.0]]}
    )
    body = assert_error(response, 400, "instances: wrong shape", field="instances")
    assert body["expected"] == "shape [64] or [N, 64]"


async def test_predict_route_matches_only_post_predict(client: httpx.AsyncClient) -> None:
    get = await client.get("/v1/models/energy_from_potential:predict")
    assert_error(get, 404, "model 'energy_from_potential:predict' not found")
    regress = await client.post("/v1/models/energy_from_potential:regress", json={})
    assert_error(regress, 400, "Expected regression signature method_name")
    unknown = await client.post("/v1/models/nope:predict", json={"instances": [[1]]})
    assert_error(unknown, 404, "model 'nope' not found")


async def test_predict_parses_body_as_json_whatever_the_content_type(
    client: httpx.AsyncClient,
) -> None:
    # curl -d sends application/x-www-form-urlencoded; TF Serving reads JSON regardless.
    body = json.dumps({"instances": potentials(1).tolist()})
    response = await client.post(
        "/v1/models/energy_from_potential:predict",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


async def test_classify_and_regress_say_the_signature_is_predict(client: httpx.AsyncClient) -> None:
    for method, kind in (("classify", "classification"), ("regress", "regression")):
        response = await client.post(
            f"/v1/models/digit_classifier:{method}", json={"examples": [{"x": 1}]}
        )
        body = assert_error(response, 400, f"Expected {kind} signature method_name")
        assert body["error"].endswith("Was: tensorflow/serving/predict")
    unknown = await client.post("/v1/models/nope:classify", json={})
    assert_error(unknown, 404, "model 'nope' not found")


@pytest.fixture
async def labelled_client(settings: Settings, tiny_registry: ModelRegistry) -> Any:
    labels = {"digit_decoder": {"stable": 1, "canary": 2}}
    app = create_app(settings.model_copy(update={"version_labels": labels}), tiny_registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_version_labels_serve_their_versions(labelled_client: httpx.AsyncClient) -> None:
    status = (await labelled_client.get("/v1/models/digit_decoder/labels/stable")).json()
    assert [s["version"] for s in status["model_version_status"]] == ["1"]
    meta = (await labelled_client.get("/v1/models/digit_decoder/labels/canary/metadata")).json()
    assert meta["model_spec"]["version"] == "2"
    code = [[0] * 16]
    answer = await labelled_client.post(
        "/v1/models/digit_decoder/labels/stable:predict", json={"instances": code}
    )
    assert answer.status_code == 200, answer.text
    assert np.array(answer.json()["predictions"]).shape == (1, 28, 28, 1)
    unknown = await labelled_client.get("/v1/models/digit_decoder/labels/beta")
    assert_error(unknown, 404, "model 'digit_decoder' has no version label 'beta'", field="label")
    response = await labelled_client.post(
        "/v1/models/digit_classifier/labels/stable:predict", json={"instances": []}
    )
    assert_error(response, 404, "labels: none")
