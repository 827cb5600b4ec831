"""The personal inbox: one stream per signed-in user of what is pushed to them.

Every delivery to a user (:attr:`~wsgate.core.delivery.TargetKind.USER`: the
API's ``{"to": {"user": id}}``, a service's publish to a user) is appended to
the user's stream and carries its ``meta.offset`` (and no ``meta.channel``:
that is how a client tells an inbox action from a channel's). The stream is
named :func:`stream_of` the user id, in a store with the
:class:`~wsgate.backends.base.RecentHistory` contract of its own (``[inbox]``
bounds), so a user with no connection accumulates up to the bound, and a
stream is freed ``ttl_s`` after its last tab left or its last append.

A user is the pool's key of a user delivery, the user id alone (the
principal's ``sub``; :attr:`Pool.users <wsgate.core.pool.Pool.users>`): the
inbox holds exactly what a publish to that user reaches, whatever
organization the publisher meant.

``WELCOME`` carries the stream's top offset (:attr:`Connection.inbox_at
<wsgate.core.connection.Connection.inbox_at>`). ``@@wsgate/RESUME {inbox}``,
the first action the connection sends (the dispatcher closes the window after
any first action), answers ``RESUMED {inbox, recovered}`` and replays the
actions after the asked offset up to the WELCOME's, in order: later ones
reached the connection live, so each arrives exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import msgspec

from wsgate.backends.base import INBOX_STREAM_PREFIX, RecentHistory
from wsgate.protocol import builtins as bi
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action
from wsgate.typing import ChannelAddress

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.dispatch import Handler

__all__ = ["INBOX_PREFIX", "NO_RESUME", "install", "stream_of"]

INBOX_PREFIX: Final = INBOX_STREAM_PREFIX
"""Inbox streams' names start so; never a channel's (a hub id holds no ``@``)."""

NO_RESUME: Final = -1
""":attr:`Connection.inbox_at` once RESUME is no longer accepted (or there is no inbox)."""


def stream_of(user: str) -> ChannelAddress:
    """The name of ``user``'s inbox stream (in the inbox store and the cluster's)."""
    return ChannelAddress(INBOX_PREFIX + user)


def install(inbox: RecentHistory | None, register: Callable[[str, Handler], None]) -> None:
    """Register the RESUME handler, which replays from ``inbox`` (``None``: off)."""

    def on_resume(conn: Connection, action: Action) -> None:
        rid = None if action.meta is None else action.meta.id
        at = conn.inbox_at
        if inbox is None or conn.principal.anonymous:
            conn.send_error(ErrorCode.BAD_REQUEST, "this connection has no inbox", rid)
            return
        if at == NO_RESUME:
            conn.send_error(
                ErrorCode.BAD_REQUEST, "RESUME is accepted once, as the first action", rid
            )
            return
        try:
            body = msgspec.json.decode(action.payload, type=bi.ResumePayload)
        except msgspec.DecodeError as exc:
            conn.send_error(ErrorCode.BAD_REQUEST, f"bad {action.type} payload: {exc}", rid)
            return
        stream = stream_of(conn.principal.sub)
        found = inbox.since(stream, body.inbox)
        # What came after WELCOME's offset reached the connection live: not again.
        entries: list[bytes] = []
        if body.inbox < at:
            live = len(inbox.since(stream, at).entries)
            entries = found.entries[: len(found.entries) - live]
        payload = bi.ResumedPayload(inbox=at, recovered=found.recovered)
        conn.send_action(bi.RESUMED, payload, in_reply_to=rid)
        for data in entries:
            conn.sink.send(data)

    register(bi.RESUME, on_resume)
