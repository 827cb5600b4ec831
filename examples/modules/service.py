"""The demo's gRPC example: ``oswee.module.v1.ModuleService``, with server reflection.

The gateway finds its methods by reflection and routes them by name
(``oswee.module.v1.ModuleService/ListModules``) or by the aliases the demo
configures (``modules/LIST``, ``modules/GET``, ``modules/WATCH``):

- ``ListModules {tag}`` (unary) answers the catalogue, only modules with
  ``tag`` when it is set;
- ``GetModule {moduleId}`` (unary) answers one module; an unknown id aborts
  with ``NOT_FOUND`` (the client gets ``UPSTREAM_ERROR``);
- ``WatchModules {count, intervalMs}`` (server streaming) sends a
  ``snapshot`` event per module, then ``heartbeat`` events, one every
  ``intervalMs`` (default 500), ``count`` in all, then ends; ``count`` 0
  streams until the caller cancels (``@@wsgate/CANCEL``, LEAVE, disconnect).

The messages are ``oswee_module.proto``'s, compiled into the
``oswee_module_pb2*.py`` beside this file (grpcio-tools 1.85.3, libprotoc 35.1).

Run: ``python examples/modules/service.py --port 50051`` (``wsgate demo``
starts it for you, on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
from grpc_reflection.v1alpha import reflection

if str(Path(__file__).resolve().parent) not in sys.path:  # the generated modules import by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import oswee_module_pb2 as pb
import oswee_module_pb2_grpc as pb_grpc

__all__ = ["CATALOGUE", "SERVICE", "ModuleService", "build", "serve"]

SERVICE = "oswee.module.v1.ModuleService"
DEFAULT_INTERVAL_MS = 500
MAX_INTERVAL_MS = 10_000
CATALOGUE = (
    ("auth", "Authentication", "2.3.0", ("core", "security")),
    ("billing", "Billing", "1.8.2", ("finance",)),
    ("catalog", "Product catalogue", "4.0.1", ("core",)),
    ("reports", "Reports", "0.9.0", ("finance", "beta")),
)
"""The modules served: ``(module_id, name, version, tags)``."""


def _module(entry: tuple[str, str, str, tuple[str, ...]]) -> pb.Module:
    module_id, name, version, tags = entry
    return pb.Module(module_id=module_id, name=name, version=version, tags=list(tags))


class ModuleService(pb_grpc.ModuleServiceServicer):  # type: ignore[misc]
    """The servicer; :attr:`watching` counts the WatchModules calls running now."""

    def __init__(self) -> None:
        self.watching = 0

    async def ListModules(
        self, request: pb.ListModulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModulesResponse:
        chosen = [e for e in CATALOGUE if not request.tag or request.tag in e[3]]
        return pb.ListModulesResponse(modules=[_module(e) for e in chosen])

    async def GetModule(
        self, request: pb.GetModuleRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModuleResponse:
        for entry in CATALOGUE:
            if entry[0] == request.module_id:
                return pb.GetModuleResponse(module=_module(entry))
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such module")
        raise AssertionError("abort raises")

    async def WatchModules(
        self, request: pb.WatchModulesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModuleEvent]:
        interval_s = min(request.interval_ms or DEFAULT_INTERVAL_MS, MAX_INTERVAL_MS) / 1000
        self.watching += 1
        try:
            seq = 0
            while request.count == 0 or seq < request.count:
                if seq:
                    await asyncio.sleep(interval_s)  # the stream's pace, not a synchronization
                entry = CATALOGUE[seq] if seq < len(CATALOGUE) else None
                seq += 1
                if entry is not None:
                    yield pb.ModuleEvent(seq=seq, kind="snapshot", module=_module(entry))
                else:
                    yield pb.ModuleEvent(seq=seq, kind="heartbeat")
        finally:
            self.watching -= 1


def build(servicer: ModuleService | None = None) -> grpc.aio.Server:
    """A ``grpc.aio`` server with the ModuleService and reflection, no port bound yet."""
    server = grpc.aio.server()
    pb_grpc.add_ModuleServiceServicer_to_server(servicer or ModuleService(), server)
    names = (pb.DESCRIPTOR.services_by_name["ModuleService"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    return server


async def serve(port: int, host: str = "127.0.0.1") -> grpc.aio.Server:
    """Build, bind ``host:port`` and start; stop it with ``await server.stop(grace)``."""
    server = build()
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server


async def _main(port: int) -> None:
    server = await serve(port)
    print(f"modules: {SERVICE} on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=50051)
    asyncio.run(_main(parser.parse_args().port))
