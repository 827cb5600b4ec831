"""The NATS cluster backend: core NATS for the broker, JetStream for the rest.

:func:`open_nats` connects once and builds the five stores on that
connection. Everything lives under the configured prefix (see
:mod:`wsgate.backends.nats_names`): broker subjects ``P.msg.…``, the history
stream ``<N>_hist`` (which republishes channel messages to ``P.msg.chan.…``),
the inbox stream ``<N>_inbox`` (users' inboxes, bounded by ``[inbox]``,
republished the same way) and the state stream ``<N>_state``, so two prefixes on
one server never see each other.

What it guarantees, store by store, is in each class's docstring
(:class:`~wsgate.backends.nats_broker.NatsBroker`,
:class:`~wsgate.backends.nats_stores.NatsHistory`, …). What NATS cannot
give, compared with the memory reference:

- **no server clock**: rate limits and heartbeats use each node's wall
  clock, so nodes must keep their clocks in sync (NTP);
- **per-message history expiry**: a channel's messages age out one by one
  (the server removes each ``ttl_s`` after its append, ``max_age``), not all
  together ``ttl_s`` after the last append; the channel is gone ``ttl_s``
  after its last append. At most ``history_max_channels × history_size``
  messages are kept (``max_msgs``, oldest removed first): at most that many
  full channels. Users' inboxes likewise in their own stream: at most
  ``inbox_max_users × inbox_size`` messages, each ``inbox_ttl_s`` old at most;
- **offsets per channel by compare-and-set**: each append is an acked
  JetStream publish expecting the channel's last sequence, carrying the
  channel's own offset in a header (see
  :mod:`~wsgate.backends.nats_broker`): one round trip per append, one
  append in flight per channel and node (what queues up meanwhile goes out
  as one stored message); a new epoch after the channel was
  freed comes from the node's wall clock (offsets stay above the earlier
  ones while clocks do not step back by more than the channel's lifetime);
- **outages**: nats-py reconnects by itself (forever, every
  :data:`RECONNECT_WAIT_S`) and re-subscribes; meanwhile broker messages are
  dropped (counted in ``broker.lost``) and store calls raise
  :class:`~wsgate.exceptions.BackendUnavailable` after their timeout.
  JetStream data (history, presence, limits, registrations) is on the
  server's disk and survives a server restart.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client

from wsgate.backends.nats_broker import NatsBroker
from wsgate.backends.nats_client import ReplyClient
from wsgate.backends.nats_jet import Jet, guard
from wsgate.backends.nats_names import Names
from wsgate.backends.nats_stores import NatsHistory, NatsLimits, NatsPresence, NatsRegistry

__all__ = [
    "RECONNECT_WAIT_S",
    "REQUEST_TIMEOUT_S",
    "NatsBackend",
    "close_client",
    "connect_nats",
    "open_nats",
]

log = logging.getLogger(__name__)

RECONNECT_WAIT_S = 0.25
"""Pause between reconnection attempts (they never stop)."""
REQUEST_TIMEOUT_S = 2.0
"""Bound on every JetStream request (and on the initial connection)."""


class NatsBackend:
    """:class:`~wsgate.backends.base.Backend` over one NATS connection."""

    def __init__(
        self, nc: Client, jet: Jet, history_size: int, history_ttl_s: float,
        inbox_size: int = 100,
    ) -> None:
        self.nc = nc
        """The connection (shared by every store)."""
        self.names = jet.names
        self.broker = NatsBroker(jet)
        self.history = NatsHistory(jet, history_size, inbox_size)
        self.presence = NatsPresence(jet)
        self.limits = NatsLimits(jet)
        self.registry = NatsRegistry(jet)

    async def close(self) -> None:
        """Stop the broker, then close the connection (each step bounded).

        The socket is closed on every path. nats-py's ``close()`` flushes what
        it still holds before it closes its transport, and during an outage
        or a reconnect that flush raises (``ConnectionResetError``,
        ``BrokenPipeError``) or hangs: nats-py then never closes the socket
        it holds. So when ``close()`` fails or times out, the transport is
        closed here (:func:`_abort_transport`).
        """
        try:
            await self.broker.close()
        finally:
            await close_client(self.nc)


async def close_client(nc: Client) -> None:
    """Close ``nc`` within ``2 ×`` :data:`REQUEST_TIMEOUT_S`; its socket is closed
    whatever ``close()`` does (see :meth:`NatsBackend.close`). Never raises."""
    try:
        await asyncio.wait_for(nc.close(), REQUEST_TIMEOUT_S * 2)
    except TimeoutError:
        log.warning("NATS connection did not close in time; closing its socket")
    except Exception as exc:
        log.warning("NATS connection failed to close (%s); closing its socket", exc)
    finally:
        _abort_transport(nc)


def _abort_transport(nc: Client) -> None:
    """Close the socket nats-py holds, if it is still open (idempotent).

    Reaches into nats-py's private ``_transport`` (2.x): there is no public
    way to close a client's socket when its ``close()`` failed half-way.
    """
    transport = getattr(nc, "_transport", None)
    if transport:  # a TcpTransport is false until it has connected
        try:
            transport.close()
        except Exception:  # already closed, or its loop is gone
            log.debug("closing the NATS transport failed", exc_info=True)


async def connect_nats(url: str, *, name: str) -> ReplyClient:
    """A core NATS connection to ``url`` that reconnects by itself, forever, once made
    (a :class:`~wsgate.backends.nats_client.ReplyClient`: raw subscriptions too).

    Raises a ``nats.errors.Error`` or an :exc:`OSError` (:exc:`TimeoutError`
    included) when the server cannot be reached within ``2 ×``
    :data:`REQUEST_TIMEOUT_S`; then nothing it opened stays open. Close it
    with :func:`close_client`.
    """

    async def on_error(err: Exception) -> None:
        log.warning("NATS %s: %s", url, err)

    async def on_disconnected() -> None:
        if not nc.is_closed and not nc.is_draining:
            log.warning("NATS %s: disconnected, reconnecting", url)

    async def on_reconnected() -> None:
        log.info("NATS %s: reconnected", url)

    # With reconnects forever, nats-py retries a failed first connect forever
    # too: bound it here, and close whatever it opened when it gives up.
    nc = ReplyClient()
    try:
        await asyncio.wait_for(
            nc.connect(
                url,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                # typed int by nats-py, but slept: a float works
                reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
                connect_timeout=int(REQUEST_TIMEOUT_S),
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            ),
            REQUEST_TIMEOUT_S * 2,
        )
    except BaseException:
        await close_client(nc)
        raise
    return nc


@guard
async def open_nats(
    url: str,
    *,
    prefix: str,
    node: str,
    history_size: int,
    history_ttl_s: float,
    history_max_channels: int = 10_000,
    inbox_size: int = 100,
    inbox_ttl_s: float = 300.0,
    inbox_max_users: int = 10_000,
) -> NatsBackend:
    """Connect to ``url`` and make sure this prefix's streams exist (an existing
    stream is updated to these limits: :meth:`Jet.ensure_streams`).

    Raises :class:`~wsgate.exceptions.BackendUnavailable` when the server
    cannot be reached within ``2 ×`` :data:`REQUEST_TIMEOUT_S`, and
    :class:`~wsgate.exceptions.BackendError` when it has no JetStream.
    """
    nc = await connect_nats(url, name=f"wsgate {node}")
    try:
        jet = Jet(nc, Names(prefix), REQUEST_TIMEOUT_S)
        inbox = (inbox_size, inbox_ttl_s, inbox_max_users)
        await jet.ensure_streams(history_size, history_ttl_s, history_max_channels, inbox)
    except BaseException:
        await close_client(nc)
        raise
    return NatsBackend(nc, jet, history_size, history_ttl_s, inbox_size)
