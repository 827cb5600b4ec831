"""The personal inbox in a cluster: users' streams in the backend, replicated per node.

A delivery to a user goes to the user's stream (:func:`~wsgate.core.inbox.stream_of`)
with :meth:`Broker.publish_stream <wsgate.backends.base.Broker.publish_stream>`:
the backend stores it (apart from channels' history, bounded by ``[inbox]``:
``max_messages`` per user, ``ttl_s`` after the last append, ``max_users``
cluster-wide; :class:`~wsgate.backends.base.HistoryStore`) and assigns its
offset, and every node subscribed to the stream's subject delivers it on
receipt (:meth:`Fanout.deliver_inbox <wsgate.core.fanout.Fanout.deliver_inbox>`).

:class:`InboxPreload` is the admission that makes ``WELCOME`` and ``RESUME``
synchronous on any node: before the first local tab of a user is admitted it
subscribes to the user's stream, waits until the broker confirmed that, and
loads the stream's window from the backend into the node's inbox store
(:attr:`Gateway.inbox <wsgate.core.gateway.Gateway.inbox>`); then the inner
admission (the connection cap, the connect hook) decides. Nothing sent to the
user from then on is missed: it is either in the window or arrives live. When
the backend fails the connection is admitted all the same (fail open, logged
and counted): its WELCOME carries what the node knew.

The subscription lasts while the user has a tab here; the bus drops it with the
last (:meth:`InboxPreload.forget`), or when the admitted connection closed first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from wsgate.backends.base import Backend
from wsgate.cluster import envelope as env
from wsgate.cluster.ports import BusPort
from wsgate.core.acks import Acks
from wsgate.core.connection import Connection
from wsgate.core.gateway import Admission, Gateway
from wsgate.core.inbox import INBOX_PREFIX, stream_of
from wsgate.exceptions import BackendUnavailable
from wsgate.protocol.envelope import From, Outbound, OutMeta, encode
from wsgate.typing import ChannelAddress

__all__ = ["PRELOAD_TIMEOUT_S", "InboxPreload", "Restore", "inbox_subject"]

Restore = Callable[[Acks, str, list[tuple[int, bytes]]], Awaitable[None]]
"""Told ``(acks, user, stream window entries)`` once a user's window is loaded here."""

log = logging.getLogger("wsgate.cluster.inbox")

PRELOAD_TIMEOUT_S = 2.0
"""A first tab waits at most this for the broker and the stream, then is admitted anyway
(at once while the broker is not connected)."""


def inbox_subject(user: str) -> str:
    """The broker subject of ``user``'s inbox stream (a stream's is ``chan.<stream>``)."""
    return env.subject(env.CHANNEL, stream_of(user))


def client_frame(data: bytes, offset: int) -> bytes:
    """The client frame of a stored inbox envelope (empty when it is not one)."""
    envelope = env.decode(data)
    if envelope is None:
        return b""
    origin = From(envelope.from_user, envelope.from_conn) if envelope.from_conn else None
    meta = OutMeta(offset=offset, from_=origin, ack=True if envelope.ack else None)
    return encode(Outbound(envelope.type, msgspec.Raw(envelope.payload), meta, envelope.error))


class InboxPreload:
    """Admission: load a user's inbox stream on this node, then ask ``inner``."""

    _gw: Gateway

    def __init__(
        self, bus: BusPort, backend: Backend, inner: Admission, restore: Restore | None = None
    ) -> None:
        self._bus = bus
        self._backend = backend
        self._inner = inner
        self._restore = restore
        """Acknowledged delivery in a cluster (:meth:`SharedAcks.restore
        <wsgate.cluster.acks.SharedAcks.restore>`): told the loaded window."""
        self.failures = 0
        """Preloads that failed and were passed over (fail open), each logged."""

    def attach(self, gateway: Gateway) -> None:
        self._gw = gateway

    def admit(self, conn: Connection) -> None:
        user = conn.principal.sub
        if conn.principal.anonymous or conn.user_id in self._gw.pool.users:
            self._inner.admit(conn)  # no inbox, or loaded and live for a tab here
            return
        self._backend.broker.subscribe(inbox_subject(user))
        self._bus.spawn(self._load(conn))

    def abandoned(self, conn: Connection) -> None:
        """Closed before a verdict: the inner admission is told, and the subscription
        and stream taken for it are let go when no other tab of the user is here."""
        self._inner.abandoned(conn)
        self.forget(conn)
        self._gw.release_inbox(conn)

    def forget(self, conn: Connection) -> None:
        """``conn`` closed: without another tab of its user here, stop receiving
        the user's stream (the gateway frees the node's copy ``[inbox] ttl_s`` later)."""
        if conn.principal.anonymous or conn.user_id in self._gw.pool.users:
            return
        self._backend.broker.unsubscribe(inbox_subject(conn.principal.sub))

    async def _load(self, conn: Connection) -> None:
        inbox = self._gw.inbox
        stream = stream_of(conn.principal.sub)
        try:
            if not self._backend.broker.connected:  # do not keep a user waiting for it
                raise BackendUnavailable("the broker is not connected")
            await asyncio.wait_for(self._preload(stream), PRELOAD_TIMEOUT_S)
        except Exception:
            self.failures += 1
            log.warning("could not load the inbox of %s; admitting", conn.id, exc_info=True)
        if conn.closed or inbox is None:
            return
        self._inner.admit(conn)

    async def _preload(self, stream: ChannelAddress) -> None:
        await self._backend.broker.flush()  # the subscription is live: nothing is missed
        window = await self._backend.history.window(stream)
        inbox = self._gw.inbox
        if inbox is not None:
            frames = [(offset, client_frame(data, offset)) for offset, data in window.entries]
            inbox.load(stream, window.base, [f for f in frames if f[1]])
        acks = self._gw.acks
        if self._restore is not None and acks is not None:
            await self._restore(acks, stream[len(INBOX_PREFIX):], window.entries)
