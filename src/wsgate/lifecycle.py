"""Connection lifecycle lines: ``connected``, ``closed`` with its code, ``refused`` with why.

:class:`LifecycleLog` is two things, wired by the node:

- a gateway **observer**: :meth:`connected` writes the ``connected`` line once
  the connection is admitted (its final principal known);
- the gateway's **closes** (:meth:`closed`): ``Connection.on_close(code)``
  hands the gateway the close code the transport saw, and once the gateway
  has undone the connection's state this writes ``closed`` (the connection
  had been admitted) or ``refused`` (a limit at open, the connect hook, a
  token's user cap). Nothing per connection: the transport feeds the core's
  ``Connection`` itself (until 2026-12-03 a 3-slot wrapper per connection
  did this, ~56 bytes and one extra call per inbound message).

Past ``lines_per_s`` in a second (``[log] lifecycle_lines_per_s``, a reconnect
storm), the ``connected`` and ``closed`` lines of the rest of that second are one
``suppressed`` line each, with their count (:mod:`wsgate.logs.cap`).

It also keeps the node's lifecycle counts for metrics, plain integers that
only grow: :attr:`LifecycleLog.opened`, :attr:`~LifecycleLog.joins`,
:attr:`~LifecycleLog.leaves` and :attr:`~LifecycleLog.closes` (by close code,
at most :data:`MAX_CODES` codes; any further code is counted under 0).

``code`` is the close code as the handshake ended (the peer echoes ours),
1006 when the socket just went. Refusals before the upgrade (origin,
session) are written by :mod:`wsgate.transport.server`.
"""

from __future__ import annotations

import logging
from typing import Final

from wsgate.core.connection import Connection
from wsgate.logs import LineCap, event
from wsgate.protocol.codes import CloseCode
from wsgate.typing import ChannelAddress

__all__ = ["MAX_CODES", "LifecycleLog", "fields"]

MAX_CODES: Final = 64
"""Distinct close codes counted one by one (a peer chooses its code: this bounds the map)."""

_REFUSALS: Final[dict[int, str]] = {
    CloseCode.TOO_MANY: "over a connection limit",
    CloseCode.FORBIDDEN: "refused by the connect hook",
    CloseCode.TRY_AGAIN_LATER: "the connect hook failed",
    CloseCode.UNAUTHENTICATED: "unauthenticated",
}
"""Close codes of a connection never admitted that mean the gateway refused it."""


def fields(conn: Connection) -> dict[str, object]:
    """The identifying fields of ``conn``'s lines: connection, user, org, remote."""
    p = conn.principal
    return {"connection": conn.id, "user": p.sub, "org": p.org, "remote": conn.peer}


class LifecycleLog:
    """The gateway observer and handler wrapper that write the lifecycle lines and count.

    ``lines_per_s`` caps the ``connected`` lines, and separately the ``closed`` ones
    (:class:`~wsgate.logs.LineCap`; 0: no cap); the counts are never capped.
    """

    def __init__(self, lines_per_s: int = 0) -> None:
        self.connected_lines = LineCap("connected", lines_per_s)
        self.closed_lines = LineCap("closed", lines_per_s)
        self.opened = 0
        """Connections admitted (the ``connected`` line)."""
        self.joins = 0
        """Channels joined (any connection, any view)."""
        self.leaves = 0
        """Channels left, by a ``LEAVE``, a navigation or the close."""
        self.closes: dict[int, int] = {}
        """Sockets gone, by close code (admitted or refused); at most :data:`MAX_CODES` keys,
        and 0 for any code past them."""

    def closed(self, conn: Connection, code: int, admitted: bool) -> None:
        """The socket is gone (the gateway's ``closes``): count ``code``, write ``closed``
        (admitted, or never admitted for a reason of the peer's) or ``refused``."""
        closes = self.closes
        key = code if code in closes or len(closes) < MAX_CODES else 0
        closes[key] = closes.get(key, 0) + 1
        if admitted:
            if self.closed_lines.allow():
                event("closed", logging.INFO, fields(conn), code=code)
            return
        reason = _REFUSALS.get(code)
        if reason is None:
            if self.closed_lines.allow():
                event("closed", logging.INFO, fields(conn), code=code, admitted=False)
        else:
            event("refused", logging.WARNING, fields(conn), code=code, reason=reason)

    def connected(self, conn: Connection) -> None:
        self.opened += 1
        if self.connected_lines.allow():
            event("connected", logging.INFO, fields(conn))

    def disconnected(self, conn: Connection) -> None:
        """Written by :meth:`closed`, which knows the code."""

    def joined(self, conn: Connection, address: ChannelAddress) -> None:
        """Counted; no line: joins are not lifecycle events of the connection."""
        self.joins += 1

    def left(self, conn: Connection, address: ChannelAddress) -> None:
        """Counted; no line."""
        self.leaves += 1
