"""The gRPC and NATS echo services behind the gateway in ``bench/procedures.py``.

Equivalent to ``bench/echo_service.py`` (``sdk``) for the other two ways the
gateway reaches a service, each written as a service author would:

- ``--mode grpc``: a ``grpc.aio`` server with reflection serving
  ``bench.v1.Echo/Echo(Pad) returns (Pad)`` (``message Pad {string pad = 1;}``,
  the bench payload ``{"pad": "xxx..."}``), answering the request it got.
  The descriptor is built here (no protoc step) and added to the default
  pool, which reflection serves; the gateway routes it by the alias
  ``grpc/PING`` (reply type ``grpc/PONG``).
- ``--mode grpc-sync``: the same service on grpcio's synchronous server
  (a thread pool of ``--threads``), to compare servers (``bench/grpc_clients.py``).
- ``--mode nats``: the SDK's :class:`~wsgate.sdk.nats_service.NatsService`
  announcing ``nats/*`` (discovered by the gateway over ``$SRV.INFO``),
  answering ``{"type": "nats/PONG", "payload": <the payload>}``.

Run as a subprocess::

    python bench/echo_procedures.py --mode grpc --port 50051 [--cpu 1]
    python bench/echo_procedures.py --mode grpc-sync --port 50051 [--threads 4]
    python bench/echo_procedures.py --mode nats --nats nats://127.0.0.1:4222 [--cpu 1]

It prints ``echo-<mode>: listening on <address>`` when ready and runs until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any, Final

import uvloop

__all__ = ["GRPC_METHOD", "GRPC_SERVICE", "NATS_NAME", "main"]

GRPC_SERVICE: Final = "bench.v1.Echo"
GRPC_METHOD: Final = f"{GRPC_SERVICE}/Echo"
NATS_NAME: Final = "echo-nats"


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _pad_class() -> Any:
    """``bench.v1.Pad`` in the default pool, with the ``Echo`` service beside it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="bench/v1/echo.proto", package="bench.v1",
                                             syntax="proto3")
    msg = fdp.message_type.add(name="Pad")
    msg.field.add(name="pad", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, json_name="pad")
    svc = fdp.service.add(name="Echo")
    svc.method.add(name="Echo", input_type=".bench.v1.Pad", output_type=".bench.v1.Pad")
    pool = descriptor_pool.Default()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.v1.Pad"))


def _handler(echo: Any) -> Any:
    import grpc

    pad = _pad_class()
    return grpc.method_handlers_generic_handler(
        GRPC_SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo,
                request_deserializer=pad.FromString,
                response_serializer=pad.SerializeToString,
            )
        },
    )


async def serve_grpc(port: int) -> None:
    import grpc.aio
    from grpc_reflection.v1alpha import reflection

    async def echo(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(echo),))
    reflection.enable_server_reflection((GRPC_SERVICE, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"echo-grpc: listening on 127.0.0.1:{port}", flush=True)
    await _until_signalled()
    await server.stop(0.5)


def serve_grpc_sync(port: int, threads: int) -> None:
    import signal as sig
    import threading
    from concurrent import futures

    import grpc
    from grpc_reflection.v1alpha import reflection

    def echo(request: Any, context: Any) -> Any:
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    server.add_generic_rpc_handlers((_handler(echo),))
    reflection.enable_server_reflection((GRPC_SERVICE, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"echo-grpc: listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    for s in (sig.SIGINT, sig.SIGTERM):
        sig.signal(s, lambda *_: stop.set())
    stop.wait()
    server.stop(0.5)


async def serve_nats(url: str) -> None:
    import nats

    from wsgate.backends.nats import close_client
    from wsgate.sdk.nats_service import NatsService
    from wsgate.sdk.service import Context

    service = NatsService(NATS_NAME)

    @service.action("nats/*")
    async def echo(action: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"type": "nats/PONG", "payload": action.get("payload")}

    nc = await nats.connect(url, connect_timeout=10)
    await service.start(nc)
    print(f"echo-nats: listening on {service.subject} via {url}", flush=True)
    await _until_signalled()
    await service.stop()
    await close_client(nc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("grpc", "grpc-sync", "nats"), required=True)
    parser.add_argument("--port", type=int, default=50051, help="gRPC port")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server")
    parser.add_argument("--threads", type=int, default=4, help="grpc-sync: server threads")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        try:  # (the parent may have started it pinned elsewhere)
            os.sched_setaffinity(0, {args.cpu})
        except OSError as exc:
            print(f"echo-{args.mode}: not pinned to CPU {args.cpu}: {exc}", flush=True)
    if args.mode == "grpc":
        asyncio.run(serve_grpc(args.port))  # grpc.aio's own poller, on the default loop
    elif args.mode == "grpc-sync":
        serve_grpc_sync(args.port, args.threads)
    else:
        uvloop.run(serve_nats(args.nats))


if __name__ == "__main__":
    main()
