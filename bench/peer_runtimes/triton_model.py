"""Triton Python-backend `model.py` (copied into each model of the repository by peers.py): ONNX
Runtime, one thread as ours, on the `model.onnx` that `config.pbtxt` names; with dynamic batching
the requests' inputs are concatenated into one call and split back, as Triton's guide does."""

import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = json.loads(args["model_config"])["parameters"]["onnx"]["string_value"]
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        arrays = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.inputs
        }
        feed = {name: np.concatenate(parts) for name, parts in arrays.items()}
        merged = self.session.run(self.outputs, feed)
        bounds = np.cumsum([len(a) for a in arrays[self.inputs[0]]])[:-1]
        parts = [np.split(value, bounds) for value in merged]
        named = list(zip(self.outputs, parts, strict=True))
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(n, p[i]) for n, p in named])
            for i in range(len(requests))
        ]
