# Hand-written; deploy/grpc_protos.py (make grpc-protos) keeps it when it regenerates grpc_gen/.
"""Private descriptor pools of the generated gRPC modules (why: deploy/grpc_protos.py).

`INFERENCE`: Triton's `inference` protos. `SERVING`: TF Serving's and the TensorFlow protos they
import (generated under `grpc_gen/tensorflow/` and `grpc_gen/xla/`, so TensorFlow itself is never
imported), with copies of the well-known protos those import; protobuf's default pool, where
TensorFlow's and tensorflow-serving-api's own modules register, is left alone.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, wrappers_pb2

INFERENCE = descriptor_pool.DescriptorPool()
SERVING = descriptor_pool.DescriptorPool()

# The well-known protos the TensorFlow protos import (tests/service/test_grpc_protos.py checks
# that these are all of them); they have no dependencies of their own.
for _module in (any_pb2, wrappers_pb2):
    _proto = descriptor_pb2.FileDescriptorProto()
    _module.DESCRIPTOR.CopyToProto(_proto)
    SERVING.AddSerializedFile(_proto.SerializeToString())
