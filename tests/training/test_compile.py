"""training/compile.py's ONNX rewrites that keep `model.onnx` small: a tiny graph in, ONNX
Runtime's answers before and after compared."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training import compile as compiling


def _session_outputs(model: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, feed))


def test_folded_bank_and_shape_only_tables_are_rebuilt_with_the_same_answers() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    bank = compiling._bank_tables()[("square", "float32")].astype(np.float32)  # [64, 3048]
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["potential", "bank"], ["trial"]),
            helper.make_node("Shape", ["weights"], ["weights_shape"]),
            helper.make_node("Cast", ["weights_shape"], ["shape"], to=TensorProto.FLOAT),
        ],
        "tiny",
        [helper.make_tensor_value_info("potential", TensorProto.FLOAT, [None, 64])],
        [
            helper.make_tensor_value_info("trial", TensorProto.FLOAT, [None, 3048]),
            helper.make_tensor_value_info("shape", TensorProto.FLOAT, [2]),
        ],
        [numpy_helper.from_array(bank, "bank"), numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feed = {"potential": np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)}
    before = _session_outputs(model, feed)
    size = model.ByteSize()

    assert compiling.rewrite_shape_only_tables(model) == 1
    assert compiling.rewrite_gaussian_bank(model) == 1
    onnx.checker.check_model(model)
    assert model.ByteSize() < size / 50  # 780 kB of table -> a few hundred numbers
    after = _session_outputs(model, feed)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(after[1], [3.0, 4.0])
