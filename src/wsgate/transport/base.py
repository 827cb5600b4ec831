"""What the core sees of a connection, and what the transport calls in the core.

The core never touches a socket: it talks to a :class:`Sink` per connection,
and the transport drives it through :class:`ConnectionHandler`.

Lifecycle, as the transport drives it::

    session = handler.open(sink, principal, peer)   # after the 101 response
    session.on_message(data)                        # once per complete text message
    ...
    session.on_close(code)                          # exactly once, when the socket is gone

After ``on_close`` the sink must not be used; ``send`` on a closed sink is a
no-op, so fan-out never needs to check.
"""

from __future__ import annotations

from typing import Protocol

from wsgate.auth.principal import Principal

__all__ = ["ConnectionHandler", "Session", "Sink"]


class Sink(Protocol):
    """The outbound side of one connection, as the core sees it."""

    def send(self, data: bytes) -> None:
        """Queue one text message (encoded JSON) for this connection.

        Never blocks and never raises. The transport frames it (caching the
        frame when the same ``data`` object is sent to many connections in a
        row, so a fan-out frames once), appends it to the connection's
        outbound buffer and writes the buffer once per event-loop iteration.
        A buffer past its high-water mark closes the connection with 4000.
        """

    def close(self, code: int, reason: str = "") -> None:
        """Flush what is queued, then start the close handshake with ``code``."""


class Session(Protocol):
    """The core's per-connection state machine, fed by the transport."""

    def on_message(self, data: bytes) -> None:
        """One complete, UTF-8-valid text message (reassembled from fragments)."""

    def on_binary(self) -> None:
        """A binary message arrived (refused with ``BAD_REQUEST``)."""

    def on_close(self, code: int) -> None:
        """The connection is gone (``code`` as received, 1006 if none)."""


class ConnectionHandler(Protocol):
    """The core entry point the transport opens sessions on."""

    def open(self, sink: Sink, principal: Principal, peer: str) -> Session:
        """A connection completed its handshake; ``peer`` is the client IP."""
