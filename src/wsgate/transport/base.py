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

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from wsgate.auth.principal import Principal
from wsgate.typing import ConnectionId

__all__ = [
    "BinaryEchoSession",
    "BinarySink",
    "ConnectionHandler",
    "Described",
    "FlowSink",
    "HttpResponse",
    "Sends",
    "Session",
    "Sink",
]

Sends = dict[ConnectionId, Callable[[bytes], None]]
"""A channel's members as the fan-out holds them: connection id → its sink's ``send``
(``Channel.sends`` in the core; what the transport's channel batch writes to)."""


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

    @property
    def last_active(self) -> float:
        """Unix time of the last message received (the upgrade's time before the first)."""


@runtime_checkable
class FlowSink(Sink, Protocol):
    """A sink a producer that can wait (a stream) can pace itself by.

    The transport's sinks are. The core never waits on it; the Upstream's
    streams do, so a slow client pauses a stream instead of filling its buffer.
    """

    def when_writable(self) -> asyncio.Future[None] | None:
        """``None`` when more may be sent now, else a future resolved once it may
        (or once the connection is gone)."""

    def congested(self) -> bool:
        """Whether the peer reads slower than we write (the transport paused writing).

        A producer that can drop superseded data (a conflated channel) skips
        the connection meanwhile instead of growing its buffer toward 4000.
        """


@runtime_checkable
class Described(Protocol):
    """What the transport knows of a connection beyond sending: for the API's answers."""

    @property
    def user_agent(self) -> str:
        """The upgrade's ``User-Agent`` (at most 256 characters; ``""`` without one)."""

    @property
    def last_active(self) -> float:
        """Unix time of the last message received (the upgrade's time before the first)."""


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


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A plain HTTP answer on the public listener (``plain_get``'s result).

    Sent with ``Connection: close``; ``Content-Length`` is added for a
    non-empty body. ``status`` must not be 101.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class BinarySink(Sink, Protocol):
    """A sink that can also send binary messages.

    The transport's sinks are; the gateway itself never sends binary (design
    §2). Only the Autobahn echo handler (``scripts/autobahn.py``) uses it.
    """

    def send_binary(self, data: bytes) -> None:
        """Queue one binary message; same rules as :meth:`Sink.send`."""


class BinaryEchoSession(Session, Protocol):
    """A session that takes binary messages instead of refusing them.

    When a session has ``on_binary_message``, the transport calls it with the
    complete binary message instead of :meth:`Session.on_binary`. Only test
    and conformance handlers (the Autobahn echo) have it; the gateway's
    sessions refuse binary (``BAD_REQUEST``).
    """

    def on_binary_message(self, data: bytes) -> None:
        """One complete binary message (reassembled from fragments)."""
