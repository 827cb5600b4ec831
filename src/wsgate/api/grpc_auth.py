"""The gRPC API's bearer-key check: one interceptor in front of every method.

A call must carry the metadata ``authorization: Bearer <key>`` with one of
``[api] keys`` (the HTTP API's check, :func:`wsgate.api.app.bearer_ok`:
constant time, every key compared). Without one the call ends with
``UNAUTHENTICATED`` before any servicer code runs or the request is
decoded. Server reflection (``grpc.reflection.*``) is open, as ``/healthz``
is on the HTTP API: it only describes the shipped ``gateway.proto``.

Imports ``grpc``: import this module only when the gRPC API is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import grpc
import grpc.aio

from wsgate.api.app import bearer_ok

__all__ = ["OPEN_PREFIX", "BearerInterceptor"]

OPEN_PREFIX: Final = "/grpc.reflection."
"""Methods under this prefix need no key (server reflection)."""


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer key")


_REFUSE: Final = grpc.unary_unary_rpc_method_handler(_refuse)


class BearerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Lets a call through to its handler only with a valid bearer key (or to reflection)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler, or one that answers ``UNAUTHENTICATED``."""
        if details.method.startswith(OPEN_PREFIX):
            return await continuation(details)
        header = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else ""
                break
        if bearer_ok(header, self._keys):
            return await continuation(details)
        return _REFUSE
