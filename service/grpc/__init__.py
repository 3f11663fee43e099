"""gRPC beside REST, in the same process and on the same data plane.

The Open Inference Protocol's `inference.GRPCInferenceService` (with Triton's model configuration
and statistics), TF Serving's `PredictionService` and `ModelService`, and `grpc.health.v1.Health`
on `Settings.grpc_port` (`server.GrpcServer`, started and stopped by the app's lifespan). Each
servicer decodes its messages, calls the data plane (or reads the registry) and encodes: the
gRPC twin of `service.api`. The protos are upstream's, vendored and pinned in `protos/`; the code
generated from them is in `gen/` (deploy/grpc_protos.py).
"""
