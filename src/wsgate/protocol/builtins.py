"""The gateway's own actions (``@@wsgate/*``) and their payloads."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = [
    "ACK",
    "AUTH",
    "CANCEL",
    "CONNECT",
    "CONNECTED",
    "DELIVERED",
    "DISCONNECTED",
    "END",
    "ERROR",
    "JOIN",
    "JOINED",
    "LEAVE",
    "LEFT",
    "NAVIGATE",
    "PING",
    "PONG",
    "PRESENCE",
    "REFRESH",
    "RESUME",
    "RESUMED",
    "SESSION_EXPIRING",
    "WELCOME",
    "AckPayload",
    "AuthPayload",
    "CancelPayload",
    "EndPayload",
    "ErrorPayload",
    "JoinPayload",
    "JoinedPayload",
    "LeavePayload",
    "Member",
    "NavigatePayload",
    "PresencePayload",
    "RefreshPayload",
    "ResumePayload",
    "ResumedPayload",
    "SessionExpiringPayload",
    "WelcomePayload",
]

# client -> gateway
AUTH: Final = "@@wsgate/AUTH"
"""The first action of a connection authenticating with a token (``[auth.jwt]``)."""
JOIN: Final = "@@wsgate/JOIN"
LEAVE: Final = "@@wsgate/LEAVE"
NAVIGATE: Final = "@@wsgate/NAVIGATE"
PING: Final = "@@wsgate/PING"
REFRESH: Final = "@@wsgate/REFRESH"
"""The answer to SESSION_EXPIRING: ``{token}`` (new claims), or ``{}`` (a refreshed cookie)."""
RESUME: Final = "@@wsgate/RESUME"
"""The first action after WELCOME of a reconnecting client: ``{inbox}``, the last
inbox ``meta.offset`` it saw; what it missed is replayed after ``RESUMED``."""
ACK: Final = "@@wsgate/ACK"
"""``{offset}``: the client dispatched the action that carried ``meta.ack`` and that offset."""
CANCEL: Final = "@@wsgate/CANCEL"
"""Cancel the caller's open stream ``{id}`` (the request's ``meta.id``)."""
# gateway -> client
WELCOME: Final = "@@wsgate/WELCOME"
JOINED: Final = "@@wsgate/JOINED"
LEFT: Final = "@@wsgate/LEFT"
RESUMED: Final = "@@wsgate/RESUMED"
"""The answer to RESUME: ``{inbox, recovered}``, then the missed inbox actions in order."""
PONG: Final = "@@wsgate/PONG"
PRESENCE: Final = "@@wsgate/PRESENCE"
ERROR: Final = "@@wsgate/ERROR"
SESSION_EXPIRING: Final = "@@wsgate/SESSION_EXPIRING"
"""``auth.expiry_warning_s`` before the credential's ``exp``: answer REFRESH."""
END: Final = "@@wsgate/END"
"""The last action of a stream: ``{id, status}``."""
# lifecycle events for services
CONNECT: Final = "@@wsgate/CONNECT"
"""The connect hook's event: routed to a service, answered before WELCOME."""
CONNECTED: Final = "@@wsgate/CONNECTED"
DISCONNECTED: Final = "@@wsgate/DISCONNECTED"
DELIVERED: Final = "@@wsgate/DELIVERED"
"""``{id, offset}``: a client acknowledged an acknowledged delivery (``ack: true``)."""


Offset = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""A stream offset as clients send it: a signed 64-bit integer (else ``BAD_REQUEST``)."""


class AuthPayload(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    """A connection token (a JWT, compact serialization)."""


class JoinPayload(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    since: Offset | None = None
    """Last ``meta.offset`` seen; missed actions are replayed after JOINED."""
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)] | None = None
    """A channel token (a JWT naming ``channel`` and the user) for a ``token = true`` channel."""


class RefreshPayload(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)] | None = None
    """A connection token with the session's new claims; absent: the cookie path."""


class ResumePayload(msgspec.Struct, forbid_unknown_fields=True):
    inbox: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    """The last inbox ``meta.offset`` the client saw (or its last WELCOME's ``inbox``)."""


class AckPayload(msgspec.Struct, forbid_unknown_fields=True):
    offset: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    """The ``meta.offset`` of the acknowledged action."""


class ResumedPayload(msgspec.Struct):
    inbox: int
    """The offset this connection's WELCOME carried: the replay ends there."""
    recovered: bool
    """Every inbox action after the asked offset follows; ``False``: some were lost."""


class SessionExpiringPayload(msgspec.Struct, omit_defaults=True):
    exp: int
    """When the credential expires, Unix seconds."""
    refreshUrl: str | None = None
    """``auth.refresh_url``: where a cookie page gets a refresh token."""


class LeavePayload(msgspec.Struct, forbid_unknown_fields=True):
    channel: str


class NavigatePayload(msgspec.Struct, forbid_unknown_fields=True):
    view: str
    hub: str | None = None
    since: Offset | None = None
    """As in JOIN: replay what was missed in the new view (a reconnecting client)."""
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)] | None = None
    """As in JOIN: the channel token of a ``token = true`` view."""


class Member(msgspec.Struct):
    """One connection in a channel, as presence shows it."""

    userId: str
    connectionId: str
    name: str = ""


class JoinedPayload(msgspec.Struct, omit_defaults=True):
    channel: str
    count: int
    offset: int
    members: list[Member] | None = None
    recovered: bool | None = None


class PresencePayload(msgspec.Struct):
    channel: str
    joined: list[Member]
    left: list[Member]
    count: int


class WelcomePayload(msgspec.Struct, omit_defaults=True):
    connectionId: str
    userId: str | None
    node: str
    hubs: list[str]
    heartbeatMs: int
    inbox: int | None = None
    """The user's inbox position (``[inbox] enabled``, a signed-in user): the last
    offset of their inbox stream, 0 for an empty one."""


class CancelPayload(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """The stream's request ``meta.id`` (at most ``envelope.MAX_META_ID`` chars)."""


class EndPayload(msgspec.Struct, omit_defaults=True):
    """``@@wsgate/END``: how a stream ended.

    ``status`` is ``OK`` (the service ended it), ``CANCELLED`` (CANCEL or
    LEAVE) or an error code; ``message`` comes with an error code only.
    """

    id: str
    status: str
    message: str | None = None


class ErrorPayload(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    retryAfterMs: int | None = None
    signInUrl: str | None = None
