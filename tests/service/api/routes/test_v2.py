"""KServe V2 / Open Inference Protocol: health, metadata, infer."""

from __future__ import annotations

import httpx
import numpy as np

from tests.service.helpers import assert_error, images, potentials


async def test_server_health_and_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    ready = await client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "mldm-serving" and meta["extensions"] == []


async def test_model_metadata_reads_signature(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/digit_decoder")
    assert response.status_code == 200
    body = response.json()
    assert body["versions"] == ["1", "2"]
    assert body["inputs"] == [{"name": "code", "datatype": "UINT8", "shape": [-1, 49]}]
    assert body["outputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert body["parameters"]["model_card"]["name"] == "digit_decoder"
    v1 = (await client.get("/v2/models/digit_decoder/versions/1")).json()
    assert v1["inputs"][0]["shape"] == [-1, 16] and v1["versions"] == ["1"]


async def test_model_ready_per_model_and_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/digit_classifier/ready")
    assert (response.status_code, response.json()["ready"]) == (200, True)
    assert (await client.get("/v2/models/digit_decoder/versions/1/ready")).status_code == 200
    assert_error(await client.get("/v2/models/nope/ready"), 404, "model 'nope' not found")


async def test_infer_equals_task_endpoint(client: httpx.AsyncClient) -> None:
    batch = images(2)
    task = await client.post(
        "/api/v1/digits/classify", json={"images": batch.tolist(), "scale": "unit"}
    )
    tensor = {
        "name": "images",
        "shape": [2, 28, 28, 1],
        "datatype": "FP32",
        "data": batch.reshape(-1).tolist(),
    }
    served = await client.post(
        "/v2/models/digit_classifier/infer", json={"id": "r1", "inputs": [tensor]}
    )
    assert served.status_code == 200, served.text
    body = served.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (
        "digit_classifier",
        "1",
        "r1",
    )
    [output] = body["outputs"]
    assert (output["name"], output["shape"], output["datatype"]) == (
        "probabilities",
        [2, 10],
        "FP32",
    )
    expected = [p["probabilities"] for p in task.json()["predictions"]]
    assert np.array(output["data"]).reshape(2, 10).tolist() == expected


async def test_infer_accepts_nested_data_for_version(client: httpx.AsyncClient) -> None:
    V = potentials(2)
    task = await client.post("/api/v1/energy/from-potential", json={"potentials": V.tolist()})
    tensor = {"name": "potential", "shape": [2, 64], "datatype": "FP32", "data": V.tolist()}
    served = await client.post(
        "/v2/models/energy_from_potential/versions/1/infer", json={"inputs": [tensor]}
    )
    assert served.status_code == 200, served.text
    assert served.json()["outputs"][0]["data"] == task.json()["energies"]


async def test_infer_rejects_wrong_datatype(client: httpx.AsyncClient) -> None:
    tensor = {"name": "potential", "shape": [1, 64], "datatype": "INT32", "data": [0] * 64}
    response = await client.post(
        "/v2/models/energy_from_potential/infer", json={"inputs": [tensor]}
    )
    body = assert_error(response, 422, "inputs[0].datatype: expected FP32, received 'INT32'")
    assert body["field"] == "inputs[0].datatype"


async def test_infer_rejects_data_not_matching_shape(client: httpx.AsyncClient) -> None:
    tensor = {"name": "potential", "shape": [2, 64], "datatype": "FP32", "data": [0.0] * 64}
    response = await client.post(
        "/v2/models/energy_from_potential/infer", json={"inputs": [tensor]}
    )
    assert_error(response, 422, "data does not match shape", field="inputs[0].data")


async def test_infer_rejects_unknown_input_and_output(client: httpx.AsyncClient) -> None:
    tensor = {"name": "density", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
    response = await client.post(
        "/v2/models/energy_from_potential/infer", json={"inputs": [tensor]}
    )
    assert_error(response, 422, "unknown input name", field="inputs[0].name")
    tensor["name"] = "potential"
    response = await client.post(
        "/v2/models/energy_from_potential/infer",
        json={"inputs": [tensor], "outputs": [{"name": "forces"}]},
    )
    assert_error(response, 422, "unknown output name", field="outputs[0].name")


async def test_infer_rejects_missing_inputs_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/energy_from_potential/infer", json={})
    assert_error(response, 422, "inputs: required field missing", field="inputs")
