"""The gRPC API's ``gateway.proto`` and the code grpcio-tools generated from it."""
