"""The documents the V2 routes serve about models: the model metadata (KServe V2), Triton's
model configuration (`model_config.proto` as JSON) and its statistics extension's entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.codecs import dtypes
from service.metrics import ModelStats
from service.registry import ModelVersion


def _tensors(specs: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "datatype": dtypes.v2_name(s.dtype),
            "shape": [-1 if d is None else d for d in s.shape],
        }
        for s in specs
    ]


def metadata(model: ModelVersion, versions: Sequence[int]) -> dict[str, Any]:
    """The model metadata document, with the model card in `parameters`."""
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "tensorflow_savedmodel",
        "inputs": _tensors(list(model.inputs.values())),
        "outputs": _tensors(list(model.outputs.values())),
        "parameters": {"model_card": model.card, "version": model.version},
    }


def model_config(
    model: ModelVersion, max_batch_size: int, batching: bool, threads: int
) -> dict[str, Any]:
    """Triton's model configuration (model_config.proto as JSON) derived from the signature.

    The batch dimension is Triton's implicit one: `max_batch_size` > 0 and `dims` without it.
    """

    def dims(shape: tuple[int | None, ...]) -> list[int]:
        return [-1 if d is None else d for d in shape[1:]]

    # Triton names the runtime in `backend`/`platform`; a version served by two (ONNX Runtime
    # at small batches, TensorFlow at large ones) names the small batches' one, and `parameters`
    # says which serves which sizes (docs/runtimes.md).
    backend = model.plan.for_size(1)
    compiled = backend in ("onnxruntime", "openvino")
    platform = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}
    config: dict[str, Any] = {
        "name": model.name,
        "platform": platform.get(backend, "tensorflow_savedmodel"),
        "backend": backend,
        "version_policy": {"specific": {"versions": [model.version]}},
        "max_batch_size": max_batch_size,
        "input": [
            {
                "name": s.name,
                "data_type": dtypes.of(s.dtype).triton,
                "format": "FORMAT_NONE",
                "dims": dims(s.shape),
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": False,
            }
            for s in model.inputs.values()
        ],
        "output": [
            {
                "name": s.name,
                "data_type": dtypes.of(s.dtype).triton,
                "dims": dims(s.shape),
                "label_filename": "",
                "is_shape_tensor": False,
            }
            for s in model.outputs.values()
        ],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": threads}],
        "default_model_filename": "model.onnx" if compiled else "model.savedmodel",
        "parameters": {
            f"backend_batch_{sizes}": {"string_value": name}
            for sizes, name in model.plan.describe().items()
        },
        "model_transaction_policy": {"decoupled": False},
        "response_cache": {"enable": False},
    }
    if batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": 0}
    return config


def model_stats(stats: ModelStats) -> dict[str, Any]:
    """One entry of the statistics extension's `model_stats`."""
    zero = {"count": 0, "ns": 0}
    return {
        "name": stats.name,
        "version": str(stats.version),
        "last_inference": stats.last_inference,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": stats.success.to_json(),
            "fail": stats.fail.to_json(),
            # Per successful request, as Triton counts them (each count is the success count).
            "queue": stats.queue.to_json(),
            "compute_input": stats.compute_input.to_json(),
            "compute_infer": stats.compute_infer.to_json(),
            "compute_output": stats.compute_output.to_json(),
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": {"count": d.count, "ns": 0},
                "compute_infer": d.to_json(),
                "compute_output": {"count": d.count, "ns": 0},
            }
            for size, d in sorted(stats.batches.items())
        ],
        "memory_usage": [],
    }
