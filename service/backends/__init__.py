"""Runtimes that execute a model version (Triton calls them backends), behind one interface.

`tensorflow` calls the SavedModel's `serving_default` signature: the reference, always there.
`onnxruntime` runs the `model.onnx` compiled from the same SavedModel at export time
(`make compile-models`); `openvino` compiles the same file with OpenVINO (an optional
package). A compiled backend serves a version only after it has reproduced the
TensorFlow outputs stored with the model (`verification.npz`) within the tolerances of
`verify.py`; `select.py` picks one per batch size by measurement (`auto`). The registry wires
them into `ModelVersion.predict`; the batcher and runner never see which one runs.
docs/runtimes.md is the operator's guide.

The modules here import nothing of each other (the registry composes them); each backend is a
`base.Backend`: a name and `run(inputs) -> outputs` on numpy arrays.
"""
