"""The invocation context: who sent an action, where, and when (design §4).

The gateway builds one :class:`InvocationContext` per invocation from the
connection's session and sends it to the service beside the action, signed
(:mod:`wsgate.routing.signature`) so the service can trust it. Field names
are the wire names, so the struct encodes to exactly the documented JSON.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["InvocationContext"]


class InvocationContext(msgspec.Struct, frozen=True, kw_only=True):
    """``context`` of an invocation request; every field is always encoded.

    ``userId`` and ``sessionId`` are ``""`` for an anonymous connection;
    ``auth`` says what authenticated it: ``"cookie"``, ``"jwt"`` or ``"anonymous"``;
    ``channel`` is ``None`` when the action names no channel (``meta.channel``).
    ``receivedAt`` is the Unix time (seconds, fractional) at which the gateway
    received the action.
    """

    connectionId: str
    """``<node>.<random>``: address replies and later pushes to it."""
    userId: str = ""
    sessionId: str = ""
    auth: Literal["cookie", "jwt", "anonymous"] = "anonymous"
    """What authenticated the connection: a session cookie, a connection token, nothing."""
    hub: str = ""
    """The connection's active organization (its hub), or ``public``."""
    channel: str | None = None
    orgs: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    node: str = ""
    """The id of the gateway node holding the connection."""
    requestId: str = ""
    """Unique per invocation; log it on both sides."""
    receivedAt: float = 0.0
