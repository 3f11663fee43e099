"""The TF Serving codec without HTTP: row and columnar bodies, b64, answers, wrong methods."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from service.codecs import tfserving
from service.errors import InvalidInput
from service.registry import ModelRegistry
from service.schemas import TFServingPredictRequest


def test_decode_predict_row_and_columnar(tiny_registry: ModelRegistry) -> None:
    model = tiny_registry.get("digit_decoder", 1)
    code = base64.b64encode(bytes(range(16))).decode()
    row = TFServingPredictRequest(instances=[{"b64": code}])
    request, is_row = tfserving.decode_predict(row, model)
    assert is_row and request.field == "instances" and request.version == 1
    np.testing.assert_array_equal(request.inputs["code"], [list(range(16))])
    columnar = TFServingPredictRequest(inputs={"code": [[0] * 16]})
    request, is_row = tfserving.decode_predict(columnar, model)
    assert not is_row and request.inputs == {"code": [[0] * 16]}


def test_decode_predict_refuses_b64_for_float_inputs(tiny_registry: ModelRegistry) -> None:
    model = tiny_registry.get("energy_from_potential")
    body = TFServingPredictRequest(instances=[{"b64": "AAAA"}])
    with pytest.raises(InvalidInput, match="b64 values are accepted only for uint8 inputs"):
        tfserving.decode_predict(body, model)


def test_encode_predict_rows_of_several_outputs() -> None:
    outputs = {"energy": np.array([1.0, 2.0]), "in_domain": np.array([True, False])}
    rows = tfserving.encode_predict(outputs, row=True)["predictions"]
    assert [dict(r) for r in rows] == [
        {"energy": 1.0, "in_domain": True},
        {"energy": 2.0, "in_domain": False},
    ]
    assert set(tfserving.encode_predict(outputs, row=False)["outputs"]) == {"energy", "in_domain"}


def test_wrong_method_reads_like_tf_serving() -> None:
    error = tfserving.wrong_method("regress")
    assert error.message == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict"
    )
