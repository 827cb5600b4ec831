"""A real gRPC target with reflection, its descriptors compiled at test time.

:func:`descriptor_set` runs grpcio-tools' ``protoc`` on ``modules.proto``
(``extra`` adds methods to the service, as a newer build of the target
would) into a temporary directory and keeps the serialized
``FileDescriptorSet``. Each :class:`ModuleServer` builds a private
``DescriptorPool`` from it, so two builds of one service never meet in the
default pool; its handlers are generic ones over those message classes, and
reflection serves that same pool.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection

__all__ = ["ADDED", "SERVICE", "ModuleServer", "descriptor_set"]

SERVICE = "wsgate.test.v1.ModuleService"
ADDED = "rpc Added(HoldRequest) returns (HoldResponse);"
"""A method a newer build of the target has."""
_PROTO = Path(__file__).with_name("modules.proto")


@functools.cache
def descriptor_set(extra: str = "") -> bytes:
    """``modules.proto`` (with ``extra`` in the service) compiled to a FileDescriptorSet."""
    include = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "modules.proto"
        src.write_text(_PROTO.read_text().replace("// EXTRA", extra))
        out = Path(tmp) / "modules.desc"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{tmp}",
                f"-I{include}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                str(src),
            ],
            check=True,
            timeout=60,
        )
        return out.read_bytes()


def build_pool(extra: str = "") -> Any:
    """A fresh pool holding ``modules.proto`` and its imports."""
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(extra)).file:
        pool.Add(proto)  # --include_imports lists dependencies first
    return pool


class ModuleServer:
    """``wsgate.test.v1.ModuleService`` on 127.0.0.1; :meth:`start`, later :meth:`stop`.

    ``Echo`` answers its module and the metadata it got; ``Fail`` aborts
    with the status it names and the detail it carries; ``Hold`` waits for
    :attr:`gate` (counting calls held, the most held at once, and calls
    cancelled); ``Watch`` streams ``count`` items (counted in :attr:`sent`),
    then fails, holds until cancelled, or ends; ``Upload`` (client
    streaming) is never routed.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        added: bool = False,
        tls: tuple[Path, Path] | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        self.port = port
        self.tls = tls
        self.options = options
        """More grpcio server options (``grpc.max_concurrent_streams``, ...)."""
        """``(cert.pem, key.pem)``: serve over TLS."""
        self.pool = build_pool(ADDED if added else "")
        self.added = added
        self.gate = asyncio.Event()
        self.holding = 0
        self.max_holding = 0
        self.cancelled = 0
        self.calls = 0
        self.sent = 0
        """Stream messages handed to grpc (Watch)."""
        self.watching = 0
        """Watch calls running now."""
        self.metadata: list[dict[str, str]] = []
        self._server: grpc.aio.Server | None = None

    def cls(self, name: str) -> Any:
        return message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName(f"wsgate.test.v1.{name}")
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *self.options])
        req = {
            n: self.cls(n) for n in ("EchoRequest", "FailRequest", "HoldRequest", "WatchRequest")
        }
        item = self.cls("WatchItem")
        echo_resp, fail_resp, hold_resp = (
            self.cls("EchoResponse"),
            self.cls("FailResponse"),
            self.cls("HoldResponse"),
        )

        async def echo(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls += 1
            seen = {
                k: (v.decode() if isinstance(v, bytes) else v)
                for k, v in context.invocation_metadata() or ()
            }
            self.metadata.append(seen)
            response = echo_resp(metadata=seen)
            response.module.CopyFrom(request.module)
            return response

        async def fail(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls += 1
            await context.abort(getattr(grpc.StatusCode, request.status), request.detail)

        async def hold(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls += 1
            self.holding += 1
            self.max_holding = max(self.max_holding, self.holding)
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.holding -= 1
            return hold_resp(tag=request.tag)

        async def watch(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls += 1
            self.watching += 1
            try:
                blob = b"x" * request.size
                for seq in range(request.count):
                    yield item(tag=request.tag, seq=seq, blob=blob)
                    self.sent += 1
                if request.fail:
                    await context.abort(
                        getattr(grpc.StatusCode, request.fail), "secret stream detail"
                    )
                if request.hold:
                    await asyncio.Event().wait()  # until the call is cancelled
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.watching -= 1

        async def added(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls += 1
            return hold_resp(tag=f"added:{request.tag}")

        def unary(fn: Any, request: Any, response: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        handlers = {
            "Echo": unary(echo, req["EchoRequest"], echo_resp),
            "Fail": unary(fail, req["FailRequest"], fail_resp),
            "Hold": unary(hold, req["HoldRequest"], hold_resp),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch,
                request_deserializer=req["WatchRequest"].FromString,
                response_serializer=item.SerializeToString,
            ),
        }
        if self.added:
            handlers["Added"] = unary(added, req["HoldRequest"], hold_resp)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        reflection.enable_server_reflection(
            [SERVICE, reflection.SERVICE_NAME], server, pool=self.pool
        )
        address = f"127.0.0.1:{self.port}"
        if self.tls is None:
            self.port = server.add_insecure_port(address)
        else:
            cert, key = self.tls
            creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
            self.port = server.add_secure_port(address, creds)
        await server.start()
        self._server = server

    async def stop(self, grace: float | None = None) -> None:
        """Stop; with ``grace``, the server sends GOAWAY and lets calls in flight finish."""
        if self._server is not None:
            server, self._server = self._server, None
            if grace is None:
                self.gate.set()
            await server.stop(grace)

    async def __aenter__(self) -> ModuleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
