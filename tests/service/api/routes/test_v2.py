"""KServe V2 / Open Inference Protocol: health, metadata, infer."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import numpy as np

from tests.service.helpers import assert_error, images, potentials


async def test_server_health_and_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    ready = await client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "mldm-serving"
    assert meta["extensions"] == ["binary_tensor_data", "model_configuration", "statistics"]


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


def _binary_request(
    name: str, array: np.ndarray, datatype: str, outputs: list[dict[str, Any]] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A request in Triton's binary tensor data extension, built by hand from the spec."""
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": array.nbytes},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    text = json.dumps(header).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(text)),
        "Content-Type": "application/octet-stream",
    }
    return text + array.astype("<f4").tobytes(), headers


def _split_binary(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["Inference-Header-Content-Length"])
    return json.loads(response.content[:length]), response.content[length:]


async def test_infer_binary_request_and_response(client: httpx.AsyncClient) -> None:
    V = potentials(3).astype(np.float32)
    body, headers = _binary_request(
        "potential", V, "FP32", outputs=[{"name": "energy", "parameters": {"binary_data": True}}]
    )
    response = await client.post(
        "/v2/models/energy_from_potential/infer", content=body, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header, data = _split_binary(response)
    [output] = header["outputs"]
    assert output == {
        "name": "energy",
        "datatype": "FP32",
        "shape": [3],
        "parameters": {"binary_data_size": 12},
    }
    json_answer = await client.post(
        "/v2/models/energy_from_potential/infer",
        json={
            "inputs": [
                {"name": "potential", "shape": [3, 64], "datatype": "FP32", "data": V.tolist()}
            ]
        },
    )
    np.testing.assert_array_equal(
        np.frombuffer(data, "<f4"), np.array(json_answer.json()["outputs"][0]["data"], "f4")
    )


async def test_infer_binary_data_output_applies_to_every_output(
    client: httpx.AsyncClient,
) -> None:
    tensor = {"name": "potential", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
    response = await client.post(
        "/v2/models/energy_from_potential/infer",
        json={"inputs": [tensor], "parameters": {"binary_data_output": True}},
    )
    header, data = _split_binary(response)
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4} and len(data) == 4


async def test_infer_binary_size_mismatch_is_named(client: httpx.AsyncClient) -> None:
    V = potentials(1).astype(np.float32)
    body, headers = _binary_request("potential", V, "FP32")
    response = await client.post(
        "/v2/models/energy_from_potential/infer", content=body[:-4], headers=headers
    )
    assert_error(
        response,
        422,
        "binary data shorter than declared",
        field="inputs[0].parameters.binary_data_size",
    )
    headers["Inference-Header-Content-Length"] = "lots"
    response = await client.post(
        "/v2/models/energy_from_potential/infer", content=body, headers=headers
    )
    assert_error(
        response,
        400,
        "Inference-Header-Content-Length must be",
        field="Inference-Header-Content-Length",
    )


async def test_infer_value_error_names_flat_data_index(client: httpx.AsyncClient) -> None:
    data = [0.0] * 64
    data[5] = 2e6  # outside the potential's range
    tensor = {"name": "potential", "shape": [1, 64], "datatype": "FP32", "data": data}
    response = await client.post(
        "/v2/models/energy_from_potential/infer", json={"inputs": [tensor]}
    )
    assert_error(response, 422, "value out of range", field="inputs[0].data[5]")


async def test_infer_gzip_request_body(client: httpx.AsyncClient) -> None:
    V = potentials(2).astype(np.float32)
    body, headers = _binary_request("potential", V, "FP32")
    response = await client.post(
        "/v2/models/energy_from_potential/infer",
        content=gzip.compress(body),
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["outputs"][0]["data"]) == 2


async def test_gzip_bomb_is_413_before_it_is_inflated(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b"[" * (64 * 1024 * 1024))  # 64 MiB of JSON in ~64 KiB
    response = await client.post(
        "/v2/models/energy_from_potential/infer",
        content=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert_error(response, 413, "once decoded", field="body")
    response = await client.post(
        "/api/v1/energy/from-potential", content=b"x", headers={"Content-Encoding": "br"}
    )
    assert_error(response, 415, "content encoding 'br' is not supported")


async def test_model_config_has_the_fields_perf_analyzer_reads(client: httpx.AsyncClient) -> None:
    config = (await client.get("/v2/models/digit_decoder/config")).json()
    assert (config["name"], config["platform"], config["backend"]) == (
        "digit_decoder",
        "tensorflow_savedmodel",
        "tensorflow",
    )
    assert config["max_batch_size"] == 64  # the settings' max_items_per_request
    [tensor] = config["input"]
    assert tensor["name"] == "code" and tensor["data_type"] == "TYPE_UINT8"
    assert tensor["dims"] == [49] and tensor["format"] == "FORMAT_NONE"
    assert tensor["is_shape_tensor"] is False and tensor["optional"] is False
    [output] = config["output"]
    assert (output["name"], output["data_type"], output["dims"]) == (
        "images",
        "TYPE_FP32",
        [28, 28, 1],
    )
    assert "dynamic_batching" in config and "sequence_batching" not in config
    assert "ensemble_scheduling" not in config
    assert config["model_transaction_policy"] == {"decoupled": False}
    v1 = (await client.get("/v2/models/digit_decoder/versions/1/config")).json()
    assert v1["input"][0]["dims"] == [16]


async def test_stats_count_inferences_from_the_same_counters_as_metrics(
    client: httpx.AsyncClient,
) -> None:
    tensor = {"name": "potential", "shape": [3, 64], "datatype": "FP32", "data": [0.0] * 192}
    for _ in range(2):
        ok = await client.post("/v2/models/energy_from_potential/infer", json={"inputs": [tensor]})
        assert ok.status_code == 200
    bad = {**tensor, "data": [float("nan")] * 192}
    await client.post(
        "/v2/models/energy_from_potential/infer", content=json.dumps({"inputs": [bad]})
    )
    every = (await client.get("/v2/models/stats")).json()["model_stats"]
    assert {(s["name"], s["version"]) for s in every} >= {
        ("digit_decoder", "1"),
        ("digit_decoder", "2"),
    }
    [stats] = (await client.get("/v2/models/energy_from_potential/versions/1/stats")).json()[
        "model_stats"
    ]
    assert stats["inference_count"] == 6 and stats["execution_count"] == 2
    inference = stats["inference_stats"]
    assert inference["success"]["count"] == 2 and inference["fail"]["count"] == 1
    assert inference["compute_infer"]["count"] == 2 and inference["compute_infer"]["ns"] > 0
    assert set(inference) >= {"queue", "compute_input", "compute_output", "cache_hit", "cache_miss"}
    assert stats["batch_stats"][0]["batch_size"] == 3
    assert stats["last_inference"] > 0
    text = (await client.get("/metrics")).text
    assert 'mldm_inference_items_total{model="energy_from_potential",version="1"} 6.0' in text
    fail = 'model="energy_from_potential",outcome="fail",version="1"'
    assert f"mldm_inference_requests_total{{{fail}}} 1.0" in text
    assert_error(await client.get("/v2/models/nope/stats"), 404, "model 'nope' not found")
    assert_error(
        await client.get("/v2/models/energy_from_potential/versions/9/stats"), 404, "no version 9"
    )
