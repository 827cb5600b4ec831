"""Test gRPC targets: real ``grpc.aio`` servers with server reflection, built at test time."""
