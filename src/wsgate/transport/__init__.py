"""The public WebSocket transport: handshake, frames, outbound buffers (design §1, §8).

The core sees :class:`~wsgate.transport.base.Sink` and drives nothing; the
composition root calls :func:`start_listener` and, at shutdown,
:meth:`Listener.close` and :meth:`Listener.drain`.
"""

from __future__ import annotations

from wsgate.transport.base import ConnectionHandler, HttpResponse, Session, Sink
from wsgate.transport.control import ControlLimit
from wsgate.transport.server import Listener, build_ssl_context, start_listener

__all__ = [
    "ConnectionHandler",
    "ControlLimit",
    "HttpResponse",
    "Listener",
    "Session",
    "Sink",
    "build_ssl_context",
    "start_listener",
]
