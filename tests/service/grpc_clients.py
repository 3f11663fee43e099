"""Third-party gRPC clients, each with its defaults, against a running server: run as
`python -m tests.service.grpc_clients <client> <host:port> <inputs.npz> <results dir>`.

A separate process per client: tritonclient's and KServe's generated modules define the same
`inference.*` protobuf symbols, and one process cannot import both. Each client's answers go to
`<results dir>/outputs.npz` (arrays) and `results.json` (everything else, errors as their gRPC
status name and message); test_grpc_clients.py checks them against the models.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Results = dict[str, Any]


def _error(call: Callable[[], Any]) -> dict[str, str]:
    try:
        call()
    except Exception as exc:
        return _describe(exc)
    return {"status": "OK", "message": ""}


def _describe(exc: Exception) -> dict[str, str]:
    status = getattr(exc, "status", None)
    if callable(status):  # tritonclient: "StatusCode.NOT_FOUND"
        return {"status": str(status()).removeprefix("StatusCode."), "message": exc.message()}  # type: ignore[attr-defined]
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        return {"status": code().name, "message": exc.details()}  # type: ignore[attr-defined]
    return {"status": type(exc).__name__, "message": str(exc)}


def triton_sync(address: str, inputs: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> Results:
    import tritonclient.grpc as client_module

    client = client_module.InferenceServerClient(url=address)
    images = inputs["images"]
    tensor = client_module.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    answer = client.infer("digit_classifier", [tensor])
    out["probabilities"] = answer.as_numpy("probabilities")
    code = client_module.InferInput("code", list(inputs["code"].shape), "UINT8")
    code.set_data_from_numpy(inputs["code"])
    out["decoded"] = client.infer("digit_decoder", [code], model_version="2").as_numpy("images")
    bad = client_module.InferInput("images", list(images.shape), "FP32")
    bad.set_data_from_numpy(images * 255)
    stats = client.get_inference_statistics("digit_classifier", as_json=True)
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digit_classifier"),
        "server": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata("digit_decoder", as_json=True),
        "config": client.get_model_config("digit_classifier", as_json=True),
        "stats": stats,
        "unknown_model": _error(lambda: client.infer("no_such_model", [tensor])),
        "out_of_range": _error(lambda: client.infer("digit_classifier", [bad])),
        "bad_version": _error(lambda: client.get_model_metadata("digit_decoder", "9")),
    }


def triton_aio(address: str, inputs: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> Results:
    import tritonclient.grpc as client_module
    import tritonclient.grpc.aio as aio

    async def run() -> Results:
        client = aio.InferenceServerClient(url=address)
        images = inputs["images"]
        tensor = client_module.InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        answer = await client.infer("digit_classifier", [tensor])
        out["probabilities"] = answer.as_numpy("probabilities")
        try:
            await client.infer("no_such_model", [tensor])
            unknown = {"status": "OK", "message": ""}
        except Exception as exc:
            unknown = _describe(exc)
        results = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "metadata": await client.get_model_metadata("digit_decoder", as_json=True),
            "stats": await client.get_inference_statistics("digit_classifier", as_json=True),
            "unknown_model": unknown,
        }
        await client.close()
        return results

    return asyncio.run(run())


def _kserve() -> types.ModuleType:
    """`kserve.inference_client` without `kserve/__init__.py` (see requirements-nodeps.lock)."""
    spec = importlib.util.find_spec("kserve")
    assert spec is not None and spec.origin is not None
    package = types.ModuleType("kserve")
    package.__path__ = [str(Path(spec.origin).parent)]
    sys.modules["kserve"] = package
    import kserve.inference_client as client  # type: ignore[import-not-found]

    return client


def kserve(address: str, inputs: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> Results:
    client_module = _kserve()
    from kserve.protocol.infer_type import InferInput, InferRequest  # type: ignore[import-not-found]

    async def run() -> Results:
        client = client_module.InferenceGRPCClient(url=address)
        potential = inputs["potential"]
        tensor = InferInput("potential", list(potential.shape), "FP32")
        tensor.set_data_from_numpy(potential, binary_data=True)
        answer = await client.infer(InferRequest("energy_from_potential", [tensor]))
        out["energy"] = answer.outputs[0].as_numpy()
        typed = InferInput("potential", list(potential.shape), "FP32")
        typed.set_data_from_numpy(potential, binary_data=False)
        answer = await client.infer(InferRequest("energy_from_potential", [typed]))
        out["energy_typed"] = answer.outputs[0].as_numpy()
        bad = InferInput("potential", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=True)
        try:
            await client.infer(InferRequest("energy_from_potential", [bad]))
            wrong = {"status": "OK", "message": ""}
        except Exception as exc:
            wrong = _describe(exc)
        try:
            await client.infer(InferRequest("no_such_model", [tensor]))
            unknown = {"status": "OK", "message": ""}
        except Exception as exc:
            unknown = _describe(exc)
        results = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready("energy_from_potential"),
            "wrong_shape": wrong,
            "unknown_model": unknown,
        }
        await client.close()
        return results

    return asyncio.run(run())


def tfserving(address: str, inputs: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> Results:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digit_classifier"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(inputs["images"]))
    answer = stub.Predict(request, 30.0)
    out["probabilities"] = tf.make_ndarray(answer.outputs["probabilities"])
    version = predict_pb2.PredictRequest()
    version.model_spec.name = "digit_decoder"
    version.model_spec.version.value = 2
    version.inputs["code"].CopyFrom(tf.make_tensor_proto(inputs["code"]))
    out["decoded"] = tf.make_ndarray(stub.Predict(version, 30.0).outputs["images"])
    wrong = predict_pb2.PredictRequest()
    wrong.model_spec.name = "digit_classifier"
    wrong.inputs["pixels"].CopyFrom(tf.make_tensor_proto(inputs["images"]))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "digit_classifier"
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "digit_classifier"
    metadata.metadata_field.append("signature_def")
    meta = stub.GetModelMetadata(metadata, 30.0)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "digit_decoder"
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    versions = models.GetModelStatus(status, 30.0).model_version_status
    missing = get_model_status_pb2.GetModelStatusRequest()
    missing.model_spec.name = "no_such_model"
    return {
        "version": answer.model_spec.version.value,
        "signature_inputs": sorted(serving.inputs),
        "method_name": serving.method_name,
        "status": [
            [v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state)]
            for v in versions
        ],
        "wrong_input": _error(lambda: stub.Predict(wrong, 30.0)),
        "classify": _error(lambda: stub.Classify(classify, 30.0)),
        "no_metadata_field": _error(
            lambda: stub.GetModelMetadata(
                get_model_metadata_pb2.GetModelMetadataRequest(model_spec=metadata.model_spec), 30.0
            )
        ),
        "status_unknown": _error(lambda: models.GetModelStatus(missing, 30.0)),
    }


def health(address: str, inputs: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> Results:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))

    def check(service: str) -> str:
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

    return {
        "overall": check(""),
        "live": check("live"),
        "inference": check("inference.GRPCInferenceService"),
        "unknown": _error(lambda: check("no.such.Service")),
    }


CLIENTS = {f.__name__: f for f in (triton_sync, triton_aio, kserve, tfserving, health)}


def main(argv: list[str]) -> int:
    name, address, inputs_path, results = argv
    with np.load(inputs_path) as data:
        inputs = {key: data[key] for key in data.files}
    out: dict[str, np.ndarray] = {}
    found = CLIENTS[name](address, inputs, out)
    folder = Path(results)
    np.savez(folder / "outputs.npz", **out)
    (folder / "results.json").write_text(json.dumps(found, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
