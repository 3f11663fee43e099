"""The vendored protos are upstream's at the pinned commits, the committed generated code is what
protoc makes of them and of TensorFlow's descriptors (regenerate with `make grpc-protos`), and
the gRPC server runs on it without importing TensorFlow."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "third_party" / "protos"


def _pins() -> list[list[str]]:
    lines = (PROTOS / "PINS").read_text().splitlines()
    return [line.split() for line in lines if line and not line.startswith("#")]


def test_every_vendored_file_matches_its_pinned_hash() -> None:
    pins = _pins()
    vendored = {str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*") if p.is_file()} - {"PINS"}
    assert {pin[4] for pin in pins} == vendored
    for repository, commit, upstream, digest, path in pins:
        assert len(commit) == 40, (repository, commit)
        assert path.endswith(Path(upstream).name), (path, upstream)
        assert hashlib.sha256((PROTOS / path).read_bytes()).hexdigest() == digest, path


def _compiled(tmp_path: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """protoc's descriptors of the vendored protos (grpcio-tools, in its own process)."""
    pytest.importorskip("grpc_tools")
    spec = importlib.util.spec_from_file_location("grpc_protos", REPO / "deploy/grpc_protos.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    deps = tmp_path / "tensorflow.pb"
    tensorflow = script.tensorflow_descriptor_set(deps)
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for root, files in (
        (PROTOS, tensorflow),  # read from the descriptor set, as the generator does
        (PROTOS / "triton", [p.name for p in (PROTOS / "triton").glob("*.proto")]),
        (
            PROTOS,
            [str(p.relative_to(PROTOS)) for p in PROTOS.rglob("tensorflow_serving/**/*.proto")],
        ),
    ):
        out = tmp_path / "out.pb"
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}"]
        command += [f"--descriptor_set_in={deps}", f"--descriptor_set_out={out}", *files]
        subprocess.run(command, check=True, cwd=REPO)
        for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
            found[file.name] = file
    return found


def _without_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    """protoc's descriptor sets carry each field's json_name; the generated code only the ones a
    proto sets itself (not the default camelCase)."""

    def clear(message: descriptor_pb2.DescriptorProto) -> None:
        for field in [*message.field, *message.extension]:
            head, *rest = field.name.split("_")
            if field.json_name == head + "".join(part[:1].upper() + part[1:] for part in rest):
                field.ClearField("json_name")
        for nested in message.nested_type:
            clear(nested)

    for message in file.message_type:
        clear(message)


def test_generated_code_is_the_vendored_protos(tmp_path: Path) -> None:
    compiled = _compiled(tmp_path)
    generated = sorted((REPO / "grpc_gen").rglob("*_pb2.py"))
    assert len(generated) == len(compiled)
    for path in generated:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        descriptor = importlib.import_module(module).DESCRIPTOR
        committed = descriptor_pb2.FileDescriptorProto.FromString(descriptor.serialized_pb)
        expected = compiled[descriptor.name]
        _without_json_names(expected)
        assert committed == expected, descriptor.name


def test_the_serving_pool_holds_the_well_known_protos_the_generated_ones_import() -> None:
    from grpc_gen.pool import SERVING

    generated = sorted((REPO / "grpc_gen").rglob("*_pb2.py"))
    imported: set[str] = set()
    for path in generated:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        descriptor = importlib.import_module(module).DESCRIPTOR
        imported |= {d.name for d in descriptor.dependencies if d.name.startswith("google/")}
    assert imported == {"google/protobuf/any.proto", "google/protobuf/wrappers.proto"}
    for name in imported:
        assert SERVING.FindFileByName(name).name == name


def test_the_grpc_server_runs_without_importing_tensorflow() -> None:
    """The app with its gRPC port on the committed models (ONNX Runtime): every servicer and
    generated module imported, the port bound and answering, TensorFlow never imported."""
    script = """
import sys
import grpc
import numpy as np
from fastapi.testclient import TestClient
from grpc_gen.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from service.app import create_app
from service.settings import Settings

app = create_app(Settings())
with TestClient(app) as client:
    assert client.get("/v2/health/ready").status_code == 200
    with grpc.insecure_channel(f"127.0.0.1:{app.state.grpc.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "energy_from_potential"
        tensor = request.inputs["potential"]
        tensor.dtype = 1  # DT_FLOAT
        tensor.tensor_shape.dim.add(size=1)
        tensor.tensor_shape.dim.add(size=64)
        tensor.tensor_content = np.zeros((1, 64), "<f4").tobytes()
        answer = stub.Predict(request, timeout=60)
energy = answer.outputs["energy"]
print(len(energy.tensor_content), [m for m in sys.modules if m.split(".")[0] == "tensorflow"])
"""
    env = {
        **os.environ,
        "MLDM_BACKEND": "onnxruntime",
        "MLDM_GRPC_PORT": "-1",
        "MLDM_MODEL_DIR": str(REPO / "models"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "4 []", done.stdout[-2000:]
