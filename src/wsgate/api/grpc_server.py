"""The gRPC API's server: ``wsgate.v1.Gateway`` and server reflection on ``[api] grpc_listen``.

Call order: :meth:`GrpcApi.start` once on the node's loop (it binds, or
raises :class:`OSError`), later :meth:`GrpcApi.stop`, which lets calls in
flight finish for at most its grace, then cancels the rest and returns once
the server has shut down and closed its sockets. Bounds: at most
:data:`MAX_CONCURRENT_RPCS` calls at once (grpc answers more with
``RESOURCE_EXHAUSTED``), requests of at most :data:`~wsgate.api.app.MAX_BODY`
bytes (as on the HTTP API) and replies of at most :data:`MAX_REPLY` bytes.

Imports ``grpc``: the node imports this module only when the gRPC API is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import grpc
import grpc.aio
from grpc_reflection.v1alpha import reflection

from wsgate.api.app import MAX_BODY
from wsgate.api.grpc_auth import BearerInterceptor
from wsgate.api.grpc_service import GatewayServicer
from wsgate.api.proto.wsgate.v1 import gateway_pb2 as pb
from wsgate.api.proto.wsgate.v1 import gateway_pb2_grpc as pb_grpc
from wsgate.api.state import ApiState

__all__ = ["MAX_CONCURRENT_RPCS", "MAX_REPLY", "SERVICE", "GrpcApi"]

SERVICE: Final = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
"""``wsgate.v1.Gateway``."""

MAX_CONCURRENT_RPCS: Final = 256
"""Most calls the gRPC API serves at once."""

MAX_REPLY: Final = 16 << 20
"""Largest reply (a presence answer of a very large channel) the gRPC API sends."""


class GrpcApi:
    """The ``grpc.aio`` server of the internal API for ``state``, guarded by ``keys`` and
    ``admin_keys`` (``[admin] keys``: accepted everywhere, and the only keys a user's
    ``Disconnect`` takes, as on the HTTP API)."""

    def __init__(
        self,
        state: ApiState,
        keys: Sequence[str],
        host: str,
        port: int,
        admin_keys: Sequence[str] = (),
    ) -> None:
        self._state = state
        self._keys = list(keys)
        self._admin_keys = [k for k in admin_keys if k]
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._server: grpc.aio.Server | None = None
        self.port = 0
        """The bound port, once started."""

    async def start(self) -> None:
        """Bind and serve. Raises :class:`OSError` when the address cannot be bound."""
        server = grpc.aio.server(
            interceptors=[BearerInterceptor([*self._keys, *self._admin_keys])],
            options=[
                ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
                ("grpc.max_receive_message_length", MAX_BODY),
                ("grpc.max_send_message_length", MAX_REPLY),
            ],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        servicer = GatewayServicer(self._state, self._admin_keys)
        pb_grpc.add_GatewayServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        reflection.enable_server_reflection([SERVICE, reflection.SERVICE_NAME], server)
        try:
            port = server.add_insecure_port(self._address)
        except RuntimeError:  # grpc's "Failed to bind" (its log line has the reason)
            await server.stop(None)
            raise OSError("address in use or not available") from None
        if not port:
            await server.stop(None)
            raise OSError("address in use or not available")
        await server.start()
        self.port = port
        self._server = server

    async def stop(self, grace_s: float) -> None:
        """Finish calls in flight for at most ``grace_s``, then close; idempotent."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace_s)
            await server.wait_for_termination()
