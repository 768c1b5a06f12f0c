"""The Open Inference Protocol over gRPC (inference.GRPCInferenceService, as Triton and KServe
serve it): a thin adapter over the worker's dataplane, started beside the HTTP API in every
worker. The protobuf stubs are tritonclient's (tritonclient.grpc.service_pb2)."""
