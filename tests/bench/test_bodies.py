"""The benchmark's request bodies and answer readers, against the wire formats' specs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from bench import bodies as wire


def test_v2_json_body_is_flat_fp32_with_shape() -> None:
    array = wire.CLASSIFY.inputs(1, 0)
    body = wire.v2_json(wire.CLASSIFY, array)
    document = json.loads(body.payload)
    (tensor,) = document["inputs"]
    assert body.path == "/v2/models/digit_classifier/infer"
    assert tensor["name"] == "images" and tensor["datatype"] == "FP32"
    assert tensor["shape"] == [1, 28, 28, 1] and len(tensor["data"]) == 784
    assert np.array_equal(np.asarray(tensor["data"], np.float32), array.reshape(-1))


def test_v2_binary_body_follows_triton_binary_extension() -> None:
    array = wire.ENERGY.inputs(3, 0)
    body = wire.v2_binary(wire.ENERGY, array)
    headers = dict(body.headers)
    length = int(headers[wire.HEADER_LENGTH])
    header = json.loads(body.payload[:length])
    (tensor,) = header["inputs"]
    assert "data" not in tensor
    assert tensor["parameters"]["binary_data_size"] == 3 * 64 * 4
    assert header["parameters"]["binary_data_output"] is True
    raw = np.frombuffer(body.payload[length:], dtype="<f4").reshape(3, 64)
    assert np.array_equal(raw, array)
    assert headers["Content-Type"] == wire.OCTET


def test_task_and_npy_bodies_carry_the_same_numbers() -> None:
    array = wire.CLASSIFY.inputs(2, 5)
    task = json.loads(wire.task_json(wire.CLASSIFY, array).payload)
    assert task["scale"] == "unit" and np.asarray(task["images"]).shape == (2, 28, 28)
    npy = wire.npy(wire.CLASSIFY, array)
    assert npy.path.endswith("?scale=unit")
    loaded = np.load(io.BytesIO(npy.payload), allow_pickle=False)
    assert np.array_equal(loaded, array[..., 0])
    row = json.loads(wire.tfserving_row(wire.ENERGY, wire.ENERGY.inputs(2, 0)).payload)
    assert np.asarray(row["instances"]).shape == (2, 64)


def test_bodies_are_deterministic_and_distinct() -> None:
    first = wire.bodies(wire.ENERGY, "v2", 1, 3)
    again = wire.bodies(wire.ENERGY, "v2", 1, 3)
    assert [b.payload for b in first] == [b.payload for b in again]
    assert len({b.payload for b in first}) == 3


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("v2", {"outputs": [{"name": "energy", "shape": [2], "data": [1.5, -2.0]}]}),
        ("v2", [{"outputs": [{"name": "energy", "data": [1.5, -2.0]}]}]),  # BentoML batchable
        ("task", {"energies": [1.5, -2.0]}),
        ("tfserving", {"predictions": [1.5, -2.0]}),
    ],
)
def test_values_reads_json_answers(kind: str, payload: object) -> None:
    got = wire.values(kind, wire.ENERGY, json.dumps(payload).encode(), {})
    assert got.tolist() == [1.5, -2.0]


def test_values_reads_classify_task_answer() -> None:
    answer = {"predictions": [{"digit": 3, "probabilities": [0.1] * 10}]}
    got = wire.values("task", wire.CLASSIFY, json.dumps(answer).encode(), {})
    assert got.shape == (10,)


def test_values_reads_binary_v2_answer() -> None:
    data = np.array([0.25, 0.5], dtype="<f4")
    header = json.dumps(
        {
            "outputs": [
                {
                    "name": "energy",
                    "shape": [2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": data.nbytes},
                }
            ]
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    got = wire.values("v2-binary", wire.ENERGY, header + data.tobytes(), headers)
    assert got.tolist() == [0.25, 0.5]


def test_values_reads_npy_answer() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((1, 10), np.float32))
    got = wire.values("npy", wire.CLASSIFY, buffer.getvalue(), {"Content-Type": wire.NPY})
    assert got.shape == (10,)


def test_values_names_an_unreadable_answer() -> None:
    with pytest.raises(ValueError, match="unreadable v2 answer"):
        wire.values("v2", wire.ENERGY, b'{"error": "no"}', {})


def test_npy_bytes_round_trip() -> None:
    array = wire.potentials(3, seed=0)
    assert array.shape == (3, 64) and array.dtype == np.float32
    loaded = np.load(io.BytesIO(wire.npy_bytes(array)))
    np.testing.assert_array_equal(loaded, array)
