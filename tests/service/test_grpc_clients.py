"""The real server's gRPC port, driven by clients we did not write, each with its defaults:
tritonclient.grpc (sync and aio), the KServe SDK's `InferenceGRPCClient`, tensorflow-serving-api's
`PredictionServiceStub` / `ModelServiceStub` and a `grpc.health.v1` client.

Each client runs in its own process (tests/service/grpc_clients.py: tritonclient's and KServe's
protobuf modules cannot share one); its outputs are compared here with the SavedModels' own, and
its wrong calls must come back with the right gRPC status and our message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from grpc_gen.grpc_service_pb2 import ModelInferRequest
from grpc_gen.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from service.registry import ModelRegistry
from tests.service.helpers import images, potentials
from tests.service.live_server import REPO, LiveServer, free_port, live_server

pytestmark = pytest.mark.slow

if not os.environ.get("MLDM_GRPC_CLIENTS"):  # ~80 s on 2 busy cores: `make grpc-test` (CI step)
    pytest.skip("the gRPC client tests run with `make grpc-test`", allow_module_level=True)
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("tensorflow_serving.apis")


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    log = tmp_path_factory.mktemp("grpc") / "server.log"
    port = free_port()
    env = {"MLDM_WARMUP": "false", "MLDM_LOG_LEVEL": "warning", "MLDM_GRPC_PORT": str(port)}
    with live_server(tiny_model_dir, log, env) as running:
        yield running, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path) -> ModelRegistry:
    registry = ModelRegistry(tiny_model_dir)
    registry.load()
    return registry


INPUTS = {
    "images": images(3).reshape(3, 28, 28, 1).astype(np.float32),
    "code": np.arange(2 * 49, dtype=np.uint8).reshape(2, 49),
    "potential": potentials(2).astype(np.float32),
}


def _run(client: str, address: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    np.savez(tmp_path / "inputs.npz", **INPUTS)
    command = [sys.executable, "-m", "tests.service.grpc_clients", client, address]
    command += [str(tmp_path / "inputs.npz"), str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    with np.load(tmp_path / "outputs.npz") as data:
        outputs = {key: data[key] for key in data.files}
    return results, outputs


def _close(
    got: np.ndarray, model: ModelRegistry, name: str, key: str, out: str, v: Any = None
) -> None:
    expected = model.get(name, v).predict({key: INPUTS[key]})[out]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("client", ["triton_sync", "triton_aio"])
def test_tritonclient_grpc(
    server: tuple[LiveServer, str], models: ModelRegistry, client: str, tmp_path: Path
) -> None:
    results, outputs = _run(client, server[1], tmp_path)
    _close(outputs["probabilities"], models, "digit_classifier", "images", "probabilities")
    assert results["live"] and results["ready"]
    assert results["metadata"]["versions"] == ["1", "2"]
    [stats] = results["stats"]["model_stats"]
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert results["unknown_model"]["status"] == "NOT_FOUND"
    assert "no_such_model" in results["unknown_model"]["message"]
    if client == "triton_sync":
        _close(outputs["decoded"], models, "digit_decoder", "code", "images", 2)
        assert results["model_ready"]
        assert "statistics" in results["server"]["extensions"]
        assert int(results["config"]["config"]["max_batch_size"]) > 0
        assert results["out_of_range"]["status"] == "INVALID_ARGUMENT"
        assert "inputs[0].data" in results["out_of_range"]["message"]
        assert results["bad_version"]["status"] == "NOT_FOUND"


def test_kserve_inference_grpc_client(
    server: tuple[LiveServer, str], models: ModelRegistry, tmp_path: Path
) -> None:
    results, outputs = _run("kserve", server[1], tmp_path)
    for key in ("energy", "energy_typed"):
        _close(outputs[key], models, "energy_from_potential", "potential", "energy")
    assert results["live"] and results["ready"] and results["model_ready"]
    assert results["wrong_shape"]["status"] == "INVALID_ARGUMENT"
    assert "inputs[0]" in results["wrong_shape"]["message"]
    assert results["unknown_model"]["status"] == "NOT_FOUND"


def test_tensorflow_serving_api_stubs(
    server: tuple[LiveServer, str], models: ModelRegistry, tmp_path: Path
) -> None:
    results, outputs = _run("tfserving", server[1], tmp_path)
    _close(outputs["probabilities"], models, "digit_classifier", "images", "probabilities")
    _close(outputs["decoded"], models, "digit_decoder", "code", "images", 2)
    assert results["version"] == 1
    assert results["signature_inputs"] == ["images"]
    assert results["method_name"] == "tensorflow/serving/predict"
    assert results["status"] == [[1, "AVAILABLE"], [2, "AVAILABLE"]]
    assert results["wrong_input"]["status"] == "INVALID_ARGUMENT"
    assert "pixels" in results["wrong_input"]["message"]
    assert results["classify"] == {
        "status": "INVALID_ARGUMENT",
        "message": "Expected classification signature method_name to be "
        "tensorflow/serving/classify. Was: tensorflow/serving/predict",
    }
    assert results["no_metadata_field"]["status"] == "INVALID_ARGUMENT"
    assert results["status_unknown"]["status"] == "NOT_FOUND"


def test_grpc_health_client(server: tuple[LiveServer, str], tmp_path: Path) -> None:
    results, _ = _run("health", server[1], tmp_path)
    assert results["overall"] == "SERVING" and results["live"] == "SERVING"
    assert results["inference"] == "SERVING"
    assert results["unknown"]["status"] == "NOT_FOUND"


async def test_sigterm_drains_grpc_calls_in_flight(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The real server: calls waiting in the batcher (1 s) when SIGTERM arrives still answer,
    and the process exits 0."""
    port = free_port()
    env = {
        "MLDM_GRPC_PORT": str(port),
        "MLDM_WARMUP": "false",
        "MLDM_BATCH_MAX_WAIT_MS": "1000",
        "MLDM_SHUTDOWN_GRACE_S": "30",
        "MLDM_LOG_LEVEL": "info",
    }
    with live_server(tiny_model_dir, tmp_path / "server.log", env) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = GRPCInferenceServiceStub(channel)
            array = potentials(2).astype(np.float32)
            request = ModelInferRequest(model_name="energy_from_potential")
            request.inputs.add(name="potential", datatype="FP32", shape=[2, 64])
            request.raw_input_contents.append(array.tobytes())
            calls = [asyncio.ensure_future(stub.ModelInfer(request)) for _ in range(4)]
            await asyncio.sleep(0.3)  # sent, and waiting for the batch to fill
            server.process.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*calls)
        assert all(len(a.raw_output_contents) == 1 for a in answers)
        assert await asyncio.to_thread(server.process.wait, 60) == 0, server.output()
