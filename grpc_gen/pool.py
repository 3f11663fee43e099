# Hand-written; deploy/grpc_protos.py (make grpc-protos) keeps it when it regenerates grpc_gen/.
"""Private descriptor pools of the generated gRPC modules (why: deploy/grpc_protos.py).

`INFERENCE`: Triton's `inference` protos. `SERVING`: TF Serving's, with copies of the TensorFlow
and well-known protos they import (TensorFlow's own modules stay in the default pool).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, wrappers_pb2

INFERENCE = descriptor_pool.DescriptorPool()
SERVING = descriptor_pool.DescriptorPool()


def _add(pool: descriptor_pool.DescriptorPool, file: Any, seen: set[str]) -> None:
    if file.name in seen:
        return
    seen.add(file.name)
    for dependency in file.dependencies:
        _add(pool, dependency, seen)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.AddSerializedFile(proto.SerializeToString())


def _serving_dependencies() -> None:
    from tensorflow.core.example import example_pb2
    from tensorflow.core.framework import tensor_pb2
    from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2

    seen: set[str] = set()
    for module in (any_pb2, wrappers_pb2, example_pb2, tensor_pb2, error_codes_pb2, meta_graph_pb2):
        _add(SERVING, module.DESCRIPTOR, seen)


_serving_dependencies()
