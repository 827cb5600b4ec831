"""Helpers for services behind wsgate.

- :class:`Service`, :class:`Reply`, :data:`Context`: write an HTTP action
  service (``service.py``);
- :class:`Publisher`: push actions, manage connections and self-register
  through the internal API (``publisher.py``);
- :class:`GrpcPublisher`: the same pushes over the gRPC API (``grpc_publisher.py``;
  the ``grpc`` extra, imported when first named);
- :func:`verify_signature`: check ``X-Wsgate-Signature`` yourself.
"""

from __future__ import annotations

from typing import Any

from wsgate.routing.signature import verify as verify_signature
from wsgate.sdk.publisher import Publisher, PublishError
from wsgate.sdk.service import Context, Handler, Refused, Reply, Service, SyncHandler

__all__ = [
    "Context",
    "GrpcPublisher",
    "Handler",
    "PublishError",
    "Publisher",
    "Refused",
    "Reply",
    "Service",
    "SyncHandler",
    "verify_signature",
]


def __getattr__(name: str) -> Any:
    if name == "GrpcPublisher":  # needs grpc: imported only when asked for
        from wsgate.sdk.grpc_publisher import GrpcPublisher

        return GrpcPublisher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
