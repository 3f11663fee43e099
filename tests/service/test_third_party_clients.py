"""The real server on loopback, driven by clients we did not write.

`tritonclient[http]` (Triton's Python client) and the KServe SDK's `InferenceRESTClient` over
the Open Inference Protocol, JSON and binary tensor data in both directions, gzip requests,
version pinning and the mistakes a client makes (each client's exception must carry our
message); TensorFlow Serving's documented `curl` requests, verbatim, with curl's own default
content type. The expected values come from the SavedModels themselves, loaded here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.registry import ModelRegistry
from service.tasks import model_names
from service.tasks.energy import DX
from tests.service.helpers import images, potentials
from tests.service.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

LABELS = {"digit_decoder": {"stable": 1, "canary": 2}}


def _kserve() -> types.ModuleType:
    """`kserve.inference_client` without `kserve/__init__.py`, which imports the model server and
    the Kubernetes SDK (left out on purpose: see requirements-nodeps.lock)."""
    if "kserve" not in sys.modules:
        spec = importlib.util.find_spec("kserve")
        if spec is None or spec.origin is None:
            pytest.skip("kserve is not installed (make setup installs it)")
        package = types.ModuleType("kserve")
        package.__path__ = [str(Path(spec.origin).parent)]
        sys.modules["kserve"] = package
    import kserve.inference_client as client  # type: ignore[import-not-found]

    return client


@pytest.fixture(scope="module")
def server(
    multi_output_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("clients") / "server.log"
    env = {
        "MLDM_WARMUP": "false",
        "MLDM_LOG_LEVEL": "warning",
        "MLDM_VERSION_LABELS": json.dumps(LABELS),
        # Small enough that every metadata and statistics answer would be compressed if the
        # server compressed more than inference answers (the tiny models' are < 4 KB).
        "MLDM_GZIP_MIN_BYTES": "256",
    }
    with live_server(multi_output_model_dir, log, env) as running:
        yield running


@pytest.fixture(scope="module")
def models(multi_output_model_dir: Path) -> ModelRegistry:
    registry = ModelRegistry(multi_output_model_dir)
    registry.load()
    return registry


@pytest.fixture(scope="module")
def triton(server: LiveServer) -> Iterator[Any]:
    client = tritonhttp.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


def _densities(count: int) -> np.ndarray:
    bumps = np.exp(-((np.linspace(-15, 15, 64)[None, :] - np.arange(count)[:, None]) ** 2))
    return bumps / (bumps.sum(axis=1, keepdims=True) * DX)


def _inputs(name: str, version: int) -> dict[str, np.ndarray]:
    """A batch of two valid inputs for each model (version)."""
    if name in ("digit_classifier", "digit_encoder"):
        return {"images": images(2).reshape(2, 28, 28, 1).astype(np.float32)}
    if name == "digit_decoder":
        size = {1: 16, 2: 49}[version]
        return {"code": np.arange(2 * size, dtype=np.uint8).reshape(2, size)}
    if name == "energy_from_potential":
        return {"potential": potentials(2).astype(np.float32)}
    return {"density": _densities(2).astype(np.float32)}


CASES = [
    ("digit_classifier", 1),
    ("digit_encoder", 2),
    ("digit_decoder", 1),
    ("digit_decoder", 2),
    ("energy_from_potential", 1),
    ("energy_from_potential", 2),
    ("energy_from_density", 1),
]
V2_TYPES = {"float32": "FP32", "uint8": "UINT8"}


@pytest.mark.parametrize(("name", "version"), CASES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infers_every_model(
    triton: Any, models: ModelRegistry, name: str, version: int, binary: bool
) -> None:
    model = models.get(name, version)
    arrays = _inputs(name, version)
    inputs = []
    for key, array in arrays.items():
        tensor = tritonhttp.InferInput(key, list(array.shape), V2_TYPES[array.dtype.name])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = [tritonhttp.InferRequestedOutput(o, binary_data=binary) for o in model.outputs]
    result = triton.infer(name, inputs, model_version=str(version), outputs=outputs)
    expected = model.predict(arrays)
    assert result.get_response()["model_version"] == str(version)
    for key, values in expected.items():
        np.testing.assert_array_equal(result.as_numpy(key), values)
        assert result.as_numpy(key).dtype == values.dtype


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests(
    triton: Any, models: ModelRegistry, algorithm: str
) -> None:
    arrays = _inputs("energy_from_potential", 2)
    tensor = tritonhttp.InferInput("potential", [2, 64], "FP32")
    tensor.set_data_from_numpy(arrays["potential"], binary_data=True)
    result = triton.infer(
        "energy_from_potential",
        [tensor],
        request_compression_algorithm=algorithm,
        response_compression_algorithm="gzip",
    )
    expected = models.get("energy_from_potential").predict(arrays)
    assert set(result.get_response()["outputs"][i]["name"] for i in range(3)) == set(expected)
    np.testing.assert_array_equal(result.as_numpy("energy_std"), expected["energy_std"])


def test_tritonclient_reads_metadata_config_and_statistics(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("digit_decoder", "1")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    meta = triton.get_model_metadata("energy_from_potential")
    assert [o["name"] for o in meta["outputs"]] == ["energy", "energy_std", "in_domain"]
    config = triton.get_model_config("energy_from_potential", "2")
    assert [o["data_type"] for o in config["output"]] == ["TYPE_FP32", "TYPE_FP32", "TYPE_BOOL"]
    assert config["input"][0]["dims"] == [64] and config["max_batch_size"] > 0
    stats = triton.get_inference_statistics("energy_from_potential", "2")["model_stats"]
    assert stats[0]["name"] == "energy_from_potential" and stats[0]["version"] == "2"
    assert stats[0]["inference_stats"]["success"]["count"] >= 2


@pytest.mark.parametrize(
    ("model", "version", "key", "shape", "datatype", "message"),
    [
        ("nope", "", "x", [1], "FP32", "model 'nope' not found"),
        ("energy_from_potential", "9", "potential", [1, 64], "FP32", "has no version 9"),
        (
            "energy_from_potential",
            "",
            "potential",
            [1, 64],
            "FP64",
            "inputs[0].datatype: expected FP32, received 'FP64'",
        ),
        ("energy_from_potential", "", "potential", [1, 63], "FP32", "inputs[0].data: wrong shape"),
        ("energy_from_potential", "", "density", [1, 64], "FP32", "unknown input name"),
    ],
)
def test_tritonclient_mistakes_carry_our_message(
    triton: Any, model: str, version: str, key: str, shape: list[int], datatype: str, message: str
) -> None:
    tensor = tritonhttp.InferInput(key, shape, datatype)
    dtype = np.float64 if datatype == "FP64" else np.float32
    tensor.set_data_from_numpy(np.zeros(shape, dtype=dtype), binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        triton.infer(model, [tensor], model_version=version)
    assert message in info.value.message()


def test_kserve_sdk_infers_json_and_binary(server: LiveServer, models: ModelRegistry) -> None:
    kserve = _kserve()
    from kserve.protocol.infer_type import (  # type: ignore[import-not-found]
        InferInput,
        InferRequest,
        RequestedOutput,
    )

    async def run() -> None:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60))
        expected = models.get("energy_from_potential").predict(_inputs("energy_from_potential", 2))
        array = _inputs("energy_from_potential", 2)["potential"]
        for binary in (False, True):
            tensor = InferInput("potential", [2, 64], "FP32")
            tensor.set_data_from_numpy(array, binary_data=binary)
            outputs = [RequestedOutput(o, {"binary_data": binary}) for o in expected]
            request = InferRequest("energy_from_potential", [tensor], request_outputs=outputs)
            response = await client.infer(server.url, request, model_name="energy_from_potential")
            got = {o.name: o.as_numpy() for o in response.outputs}
            for key, values in expected.items():
                np.testing.assert_array_equal(got[key], values)
        # Version pinning: the SDK's URL is the model's; a versioned one goes as a graph URL.
        pinned = await client.infer(
            f"{server.url}/v2/models/energy_from_potential/versions/1/infer",
            {
                "inputs": [
                    {
                        "name": "potential",
                        "shape": [2, 64],
                        "datatype": "FP32",
                        "data": array.reshape(-1).tolist(),
                    }
                ]
            },
            is_graph_endpoint=True,
        )
        assert [o["name"] for o in pinned["outputs"]] == ["energy"]
        assert await client.is_model_ready(server.url, "digit_classifier")
        for request, message in (
            (InferRequest("nope", [tensor]), "model 'nope' not found"),
            (
                InferRequest(
                    "energy_from_potential",
                    [InferInput("potential", [1, 64], "FP32", data=[0.0] * 63)],
                ),
                "inputs[0].data: data does not match shape",
            ),
        ):
            with pytest.raises(Exception) as info:
                await client.infer(server.url, request, model_name=request.model_name)
            assert message in str(info.value)
        await client.close()

    asyncio.run(run())


def test_kserve_sdk_v1_protocol_is_tf_serving(server: LiveServer) -> None:
    kserve = _kserve()

    async def run() -> None:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1", timeout=60))
        answer = await client.infer(
            server.url, {"instances": potentials(2).tolist()}, model_name="energy_from_potential"
        )
        assert len(answer["predictions"]) == 2
        # KServe V1 liveness (GET /) and readiness (GET /v1/models/{name}, its `ready` key).
        assert await client.is_server_live(server.url)
        assert await client.is_model_ready(server.url, "energy_from_potential")
        with pytest.raises(
            Exception, match=r"instances\[0\]\[0\]: value out of range: expected density"
        ):
            await client.infer(
                server.url, {"instances": potentials(2).tolist()}, model_name="energy_from_density"
            )
        await client.close()

    asyncio.run(run())


def test_tritonclient_http_aio_reads_metadata_and_statistics(server: LiveServer) -> None:
    """The async client with its defaults (aiohttp announces Accept-Encoding: gzip) reads every
    model's metadata and all statistics: only inference answers may come compressed."""
    aio = pytest.importorskip("tritonclient.http.aio")

    async def run() -> None:
        client = aio.InferenceServerClient(url=server.url.removeprefix("http://"))
        for name in model_names():
            meta = await client.get_model_metadata(name)
            assert meta["name"] == name and meta["inputs"]
        stats = await client.get_inference_statistics()
        assert {s["name"] for s in stats["model_stats"]} == set(model_names())
        tensor = tritonhttp.InferInput("potential", [2, 64], "FP32")
        tensor.set_data_from_numpy(potentials(2).astype(np.float32))
        answer = await client.infer("energy_from_potential", [tensor], model_version="1")
        assert answer.as_numpy("energy").shape == (2,)
        await client.close()

    asyncio.run(run())


def test_curl_default_content_type_reaches_v2_infer(server: LiveServer) -> None:
    """`curl -d` sends application/x-www-form-urlencoded; Triton reads the body as JSON."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    tensor = {"name": "potential", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
    url = f"{server.url}/v2/models/energy_from_potential/infer"
    status, body = _curl("-d", json.dumps({"inputs": [tensor]}), url)
    assert status == 200 and body["outputs"][0]["name"] == "energy"
    status, body = _curl(server.url + "/")
    assert status == 200 and body == {"status": "alive"}


def _curl(*args: str) -> tuple[int, Any]:
    """Run curl as a user would (no extra options), return (status, JSON body)."""
    out = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, check=True
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_tf_serving_documented_curl_requests(server: LiveServer) -> None:
    url = server.url
    # https://www.tensorflow.org/tfx/serving/api_rest: status, metadata, predict, classify.
    status, body = _curl(f"{url}/v1/models/digit_decoder")
    assert status == 200 and [s["state"] for s in body["model_version_status"]] == ["AVAILABLE"] * 2
    status, body = _curl(f"{url}/v1/models/digit_decoder/metadata")
    assert status == 200 and body["model_spec"]["version"] == "2"
    instances = json.dumps({"instances": potentials(2).round(4).tolist()})
    status, body = _curl(
        "-d", instances, "-X", "POST", f"{url}/v1/models/energy_from_potential:predict"
    )
    assert (
        status == 200
        and len(body["predictions"]) == 2
        and set(body["predictions"][0])
        == {
            "energy",
            "energy_std",
            "in_domain",
        }
    )
    status, body = _curl(
        "-d", instances, "-X", "POST", f"{url}/v1/models/energy_from_potential/versions/1:predict"
    )
    assert status == 200 and isinstance(body["predictions"][0], float)
    status, body = _curl(
        "-d",
        '{"examples": [{"x": 1.0}, {"x": 2.0}]}',
        "-X",
        "POST",
        f"{url}/v1/models/energy_from_potential:classify",
    )
    assert status == 400 and "Expected classification signature" in body["error"]
    status, body = _curl(f"{url}/v1/models/digit_decoder/labels/stable")
    assert status == 200 and body["model_version_status"][0]["version"] == "1"
    status, body = _curl(f"{url}/v1/models/digit_decoder/labels/beta")
    assert status == 404 and "no version label 'beta'" in body["error"]
    status, body = _curl(
        "-d",
        '{"instances": [[1.0, 2.0]]}',
        "-X",
        "POST",
        f"{url}/v1/models/energy_from_potential:predict",
    )
    assert status == 400 and "wrong shape" in body["error"]
