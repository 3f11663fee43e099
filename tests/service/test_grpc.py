"""The gRPC services in-process: the app's lifespan starts them on a free port, the stubs generated
from the vendored protos call them (the third-party clients: test_grpc_clients.py).

Each error of the REST catalogue must arrive with its gRPC status and the REST message; the
outputs must be the model's own (compared with `model.predict` on the same inputs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi import FastAPI
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from grpc_gen import grpc_service_pb2 as pb
from grpc_gen import grpc_service_pb2_grpc as pb_grpc
from grpc_gen.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from grpc_gen.tensorflow_serving.apis.classification_pb2 import ClassificationRequest
from service import errors
from service.app import create_app
from service.grpc.errors import code_of, code_of_error
from service.grpc.tfserving import to_numpy, to_proto
from service.registry import ModelRegistry
from service.settings import Settings
from service.tasks import model_names
from tests.service.helpers import images, potentials

KEY = "a-long-enough-test-key"


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.v2 = pb_grpc.GRPCInferenceServiceStub(channel)
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


async def _serve(app: FastAPI) -> AsyncIterator[Stubs]:
    async with app.router.lifespan_context(app):
        port = app.state.grpc.port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stubs(channel)


@pytest.fixture
async def stubs(settings: Settings, tiny_registry: ModelRegistry) -> AsyncIterator[Stubs]:
    app = create_app(settings.model_copy(update={"grpc_port": -1}), tiny_registry)
    async for value in _serve(app):
        yield value


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


def _infer_request(model: str, array: np.ndarray, name: str, raw: bool) -> Any:
    request = pb.ModelInferRequest(model_name=model, id="req-1")
    datatype = {"float32": "FP32", "uint8": "UINT8"}[array.dtype.name]
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
    if raw:
        request.raw_input_contents.append(array.tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(array.reshape(-1).tolist())
    else:
        tensor.contents.uint_contents.extend(array.reshape(-1).tolist())
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
async def test_model_infer_answers_the_models_outputs(
    stubs: Stubs, tiny_registry: ModelRegistry, raw: bool
) -> None:
    array = images(3).reshape(3, 28, 28, 1).astype(np.float32)
    answer = await stubs.v2.ModelInfer(_infer_request("digit_classifier", array, "images", raw))
    expected = tiny_registry.get("digit_classifier").predict({"images": array})
    assert answer.model_name == "digit_classifier" and answer.id == "req-1"
    [output] = answer.outputs
    assert output.datatype == "FP32" and list(output.shape) == [3, 10]
    if raw:
        got = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(3, 10)
    else:
        assert not answer.raw_output_contents
        got = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-4, atol=1e-6)


async def test_model_infer_errors_carry_the_rest_status_and_message(stubs: Stubs) -> None:
    wrong_range = np.full((1, 28, 28, 1), 255, dtype=np.float32)
    code, message = await _code(
        stubs.v2.ModelInfer(_infer_request("digit_classifier", wrong_range, "images", True))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "inputs[0].data" in message
    code, message = await _code(
        stubs.v2.ModelInfer(_infer_request("no_such_model", wrong_range, "images", True))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "no_such_model" in message
    short = _infer_request("digit_classifier", wrong_range, "images", True)
    short.raw_input_contents[0] = b"\0" * 12
    code, message = await _code(stubs.v2.ModelInfer(short))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "binary_data_size" in message
    wrong_type = _infer_request("digit_classifier", wrong_range, "images", True)
    wrong_type.inputs[0].datatype = "FP64"
    code, message = await _code(stubs.v2.ModelInfer(wrong_type))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "datatype" in message
    version = _infer_request("digit_classifier", wrong_range, "images", True)
    version.model_version = "x"
    code, message = await _code(stubs.v2.ModelInfer(version))
    assert code == grpc.StatusCode.NOT_FOUND and "positive integer" in message


async def test_health_metadata_config_and_statistics(stubs: Stubs) -> None:
    assert (await stubs.v2.ServerLive(pb.ServerLiveRequest())).live
    assert (await stubs.v2.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stubs.v2.ModelReady(pb.ModelReadyRequest(name="digit_decoder"))).ready
    meta = await stubs.v2.ModelMetadata(pb.ModelMetadataRequest(name="digit_decoder"))
    assert meta.versions == ["1", "2"] and meta.inputs[0].datatype == "UINT8"
    server = await stubs.v2.ServerMetadata(pb.ServerMetadataRequest())
    assert "statistics" in server.extensions
    config = (await stubs.v2.ModelConfig(pb.ModelConfigRequest(name="digit_classifier"))).config
    assert config.max_batch_size > 0 and list(config.input[0].dims) == [28, 28, 1]
    array = images(2).reshape(2, 28, 28, 1).astype(np.float32)
    await stubs.v2.ModelInfer(_infer_request("digit_classifier", array, "images", True))
    stats = await stubs.v2.ModelStatistics(pb.ModelStatisticsRequest(name="digit_classifier"))
    [entry] = stats.model_stats
    assert entry.inference_stats.success.count == 1 and entry.inference_count == 2
    code, _ = await _code(stubs.v2.ModelConfig(pb.ModelConfigRequest(name="nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    check = await stubs.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    code, _ = await _code(stubs.health.Check(health_pb2.HealthCheckRequest(service="nope")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_tf_serving_predict_metadata_status_and_classify(
    stubs: Stubs, tiny_registry: ModelRegistry
) -> None:
    array = potentials(4).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "energy_from_potential"
    to_proto(array, request.inputs["potential"])
    answer = await stubs.predict.Predict(request)
    expected = tiny_registry.get("energy_from_potential").predict({"potential": array})
    np.testing.assert_allclose(
        to_numpy(answer.outputs["energy"], "energy"), expected["energy"], rtol=1e-4, atol=1e-6
    )
    assert answer.model_spec.version.value == 1
    request.inputs["potential"].tensor_content = b"\0" * 8
    code, message = await _code(stubs.predict.Predict(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor_content" in message

    classify = ClassificationRequest()
    classify.model_spec.name = "digit_classifier"
    code, message = await _code(stubs.predict.Classify(classify))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("Expected classification signature method_name")

    meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta.model_spec.name = "digit_classifier"
    answer = await stubs.predict.GetModelMetadata(meta)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    assert "images" in signatures.signature_def["serving_default"].inputs

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "digit_decoder"
    versions = (await stubs.models.GetModelStatus(status)).model_version_status
    assert [(v.version, v.state) for v in versions] == [(1, 30), (2, 30)]  # AVAILABLE


async def test_api_key_is_unauthenticated_without_the_metadata(
    settings: Settings, tiny_registry: ModelRegistry
) -> None:
    app = create_app(
        settings.model_copy(update={"grpc_port": -1, "api_key": SecretStr(KEY)}), tiny_registry
    )
    async for stubs in _serve(app):
        request = pb.ModelMetadataRequest(name="digit_classifier")
        code, message = await _code(stubs.v2.ModelMetadata(request))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "x-api-key" in message
        answer = await stubs.v2.ModelMetadata(request, metadata=(("x-api-key", KEY),))
        assert answer.name == "digit_classifier"
        assert (await stubs.v2.ServerLive(pb.ServerLiveRequest())).live  # health stays open


async def test_messages_over_the_body_limit_are_resource_exhausted(stubs: Stubs) -> None:
    array = np.zeros((3000, 28, 28, 1), dtype=np.float32)  # 9.4 MB > 2 MiB in the fixture
    code, _ = await _code(
        stubs.v2.ModelInfer(_infer_request("digit_classifier", array, "images", True))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_admission_refusal_is_resource_exhausted_with_retry_after(
    stubs: Stubs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model version whose queue is full: REST's 503 + Retry-After is RESOURCE_EXHAUSTED with
    the same message and a `retry-after` trailing metadata entry on gRPC."""
    from service.runtime import ModelRunner

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise errors.Overloaded("model 'digit_classifier' has 64 requests queued", retry_after_s=2)

    monkeypatch.setattr(ModelRunner, "execute", refuse)
    array = np.zeros((1, 28, 28, 1), dtype=np.float32)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.v2.ModelInfer(_infer_request("digit_classifier", array, "images", True))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == "model 'digit_classifier' has 64 requests queued"
    assert ("retry-after", "2") in tuple(info.value.trailing_metadata() or ())


def test_every_catalogue_error_has_its_grpc_status() -> None:
    """Each ServiceError subclass of the REST catalogue -> the gRPC code of its HTTP status."""
    expected = {
        errors.MalformedRequest: grpc.StatusCode.INVALID_ARGUMENT,
        errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
        errors.Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
        errors.NotFound: grpc.StatusCode.NOT_FOUND,
        errors.NotAcceptable: grpc.StatusCode.INVALID_ARGUMENT,
        errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
        errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
        errors.InferenceTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.ServiceError: grpc.StatusCode.INTERNAL,
    }
    catalogue = {
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.ServiceError)
    }
    assert catalogue == set(expected)
    for kind, code in expected.items():
        assert code_of_error(kind) == code, kind
    assert code_of(429) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(501) == grpc.StatusCode.UNIMPLEMENTED


async def test_model_not_loaded_is_unavailable_and_timeout_deadline_exceeded(
    settings: Settings, broken_model_dir: Path, tiny_registry: ModelRegistry
) -> None:
    broken = ModelRegistry(broken_model_dir, model_names())
    broken.load()
    app = create_app(settings.model_copy(update={"grpc_port": -1}), broken)
    async for stubs in _serve(app):
        density = np.full((1, 64), 1 / (64 * 30 / 63), dtype=np.float32)
        request = _infer_request("energy_from_density", density, "density", True)
        code, message = await _code(stubs.v2.ModelInfer(request))
        assert code == grpc.StatusCode.UNAVAILABLE and "energy_from_density" in message
        ready = await stubs.v2.ModelReady(pb.ModelReadyRequest(name="energy_from_density"))
        assert not ready.ready
        check = await stubs.health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    hurried = settings.model_copy(update={"grpc_port": -1, "request_timeout_s": 1e-9})
    async for stubs in _serve(create_app(hurried, tiny_registry)):
        array = images(2).reshape(2, 28, 28, 1).astype(np.float32)
        request = _infer_request("digit_classifier", array, "images", True)
        code, message = await _code(stubs.v2.ModelInfer(request))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "did not answer within" in message
