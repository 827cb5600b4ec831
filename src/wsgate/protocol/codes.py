"""Error codes and close codes of wire protocol v1 (``docs/protocol.md``).

Error codes travel in ``@@wsgate/ERROR`` payloads and never close the
connection by themselves. Close codes end it; their documented ranges tell a
client whether to reconnect.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["CloseCode", "ErrorCode", "should_reconnect"]


class ErrorCode(StrEnum):
    """Stable codes of ``@@wsgate/ERROR``; ``TEMPORARY`` ones may be retried."""

    BAD_REQUEST = "BAD_REQUEST"
    """Not JSON, not an action, a binary frame, or a bad built-in payload."""
    TOO_LARGE = "TOO_LARGE"
    """A field past its limit (the frame itself past ``max_message_bytes`` closes 1009)."""
    NO_ROUTE = "NO_ROUTE"
    """No relay rule, built-in or route handles the action's type."""
    FORBIDDEN = "FORBIDDEN"
    """The channel policy refuses this connection."""
    NOT_JOINED = "NOT_JOINED"
    """``meta.channel`` names a channel this connection has not joined."""
    RATE_LIMITED = "RATE_LIMITED"
    """Past a rate limit; ``retryAfterMs`` says when to try again."""
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    INTERNAL = "INTERNAL"
    """A bug in the gateway; details are logged, never sent."""
    UNAUTHENTICATED = "UNAUTHENTICATED"
    """No valid session at the upgrade, a refused token, no ``@@wsgate/AUTH`` in time or a
    first action that is not AUTH; ``signInUrl`` says where. A 4401 close follows."""


TEMPORARY = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.UPSTREAM_TIMEOUT,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.INTERNAL,
    }
)


class CloseCode(IntEnum):
    """WebSocket close codes the gateway sends (RFC 6455 §7.4 and the 4000 range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The node is shutting down: reconnect at once (to another node)."""
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    """A text frame that is not UTF-8 (RFC 6455 §8.1)."""
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    """A message past ``server.max_message_bytes``."""
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """The connect hook could not decide (its service failed): reconnect with backoff."""
    SERVICE_RESTART = 1012
    """The node restarts or drains: reconnect at once."""
    SLOW_CONSUMER = 4000
    """The outbound buffer passed its high-water mark: reconnect."""
    UNAUTHENTICATED = 4401
    """No valid session or token (a refused token, no AUTH in time): do not reconnect
    with the same credential; sign in (``signInUrl``) or get a new token."""
    FORBIDDEN = 4403
    """Not allowed: do not reconnect."""
    HEARTBEAT_TIMEOUT = 4408
    """No pong within the heartbeat window: reconnect."""
    TOO_MANY = 4429
    """Too many connections, or abuse: reconnect after a delay."""


_NO_RECONNECT = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_PAYLOAD,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.UNAUTHENTICATED,
        CloseCode.FORBIDDEN,
    }
)


def should_reconnect(code: int) -> bool:
    """Tell whether a client should reconnect after the close ``code``.

    4400–4499 mirror HTTP 4xx (do not retry, except 4408 and 4429, which say
    "later"); 1001, 1006, 1011, 1012, 1013 and 4000 mean "try again".
    """
    if code in (CloseCode.HEARTBEAT_TIMEOUT, CloseCode.TOO_MANY):
        return True
    if code in _NO_RECONNECT or 4400 <= code <= 4499:
        return False
    return True
