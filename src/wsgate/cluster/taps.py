"""A tap across the cluster: every node forwards what a tap wants to the tap's subject.

The node whose API opened a tap (the *tapping* node) gives it an id
(``<node>.<random>``), subscribes to its subject ``tap.<id>``, and announces
it on :data:`TAPS_SUBJECT`, which every node subscribes to. A node that
hears the announcement registers a *forwarder* on its fan-out
(:class:`~wsgate.core.taps.TapRegistry`) that publishes each delivery the tap
wants to ``tap.<id>``; the tapping node hands what arrives there to its tap.
A channel tap is installed on every node (any of them may have members); a
connection tap only on the connection's node (its id names it), which sees
everything to and from it.

Leases, bounds and cost:

- the tapping node announces each of its open taps again every tick of the
  bus (a node started later hears of it within a tick); a forwarder whose
  tap was not announced for :data:`LEASE_TICKS` ticks is removed, so the taps
  of a node that died stop costing within a heartbeat TTL. Closing a tap
  announces its end: forwarders go at once;
- at most :data:`MAX_REMOTE` forwarders per node (an announcement past it is
  logged and ignored); the tapping node's own taps are bounded by ``[tap]
  max_taps``;
- a forwarded action is one broker publish, at most once like every other;
  the tap's own bounded queue (:class:`wsgate.api.tap.Tap`) absorbs a burst.
  When no tap is open anywhere no forwarder exists, and the fan-out reads
  one ``None`` attribute per action.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Final, Literal

import msgspec

from wsgate.backends.base import Broker
from wsgate.cluster import envelope as env
from wsgate.cluster.ports import BusPort, Schedule
from wsgate.core.delivery import Delivery
from wsgate.core.taps import TapFilter, TapRegistry, Watcher

__all__ = [
    "FLUSH_TIMEOUT_S",
    "LEASE_TICKS",
    "MAX_REMOTE",
    "TAPPED",
    "TAPS_SUBJECT",
    "TAP_CONTROL",
    "ClusterTaps",
]

log = logging.getLogger("wsgate.cluster.taps")

TAPS_SUBJECT: Final = "taps"
"""Every node subscribes: taps opened, renewed and closed."""
TAP_CONTROL: Final = "tapc"
"""Envelope kind of an announcement: ``target`` the tap's id, ``extra`` a :class:`_Announce`."""
TAPPED: Final = "tapd"
"""Envelope kind of a forwarded action: ``target`` the tap's id, ``extra`` a :class:`_Where`."""

LEASE_TICKS: Final = 3
"""Ticks (a third of the heartbeat TTL each) a forwarder lives without a renewal."""
MAX_REMOTE: Final = 256
"""Forwarders one node holds at once, for all the other nodes' taps."""
FLUSH_TIMEOUT_S: Final = 5.0
"""A new tap waits at most this for its subscription before it is announced."""


class _Announce(msgspec.Struct, omit_defaults=True):
    op: Literal["open", "close"]
    channel: str | None = None
    connection: str | None = None


class _Where(msgspec.Struct, array_like=True):
    kind: str
    target: str
    offset: int


def _subject(tap_id: str) -> str:
    return env.subject("tap", tap_id)


class _Forwarder:
    """Another node's tap, here: publishes what it wants to its subject until its lease ends."""

    __slots__ = ("_port", "_subject", "expires", "filter", "tap_id")

    def __init__(self, port: BusPort, tap_id: str, wanted: TapFilter, expires: float) -> None:
        self._port = port
        self.tap_id = tap_id
        self._subject = _subject(tap_id)
        self.filter = wanted
        self.expires = expires

    def offer(self, d: Delivery, offset: int) -> None:
        inner = env.Envelope.from_delivery(d, self._port.node)
        where = _Where(inner.kind, inner.target, offset)
        envelope = msgspec.structs.replace(
            inner, kind=TAPPED, target=self.tap_id, extra=msgspec.json.encode(where)
        )
        self._port.publish(self._subject, env.encode(envelope))


class ClusterTaps:
    """This node's taps as the cluster sees them, and the other nodes' taps here."""

    def __init__(
        self,
        port: BusPort,
        broker: Broker,
        registry: TapRegistry,
        schedule: Schedule,
        *,
        tick_s: float,
    ) -> None:
        self._port = port
        self._broker = broker
        self._registry = registry
        self._lease_s = tick_s * LEASE_TICKS
        self._mine: dict[str, Watcher] = {}
        """This node's open taps by id: bounded by ``[tap] max_taps``, freed by :meth:`closed`."""
        self._ids: dict[int, str] = {}
        """``id(tap)`` → its tap id, for :meth:`closed` (same bound and lifetime)."""
        self.forwarders: dict[str, _Forwarder] = {}
        """Other nodes' taps here, by id: at most :data:`MAX_REMOTE`; each freed when its
        tap closes or its lease ends."""
        schedule.every(1, "taps.renew", self._tick)

    # The tapping node ------------------------------------------------------------

    def opened(self, tap: Watcher) -> None:
        """Subscribe to ``tap``'s subject; once the broker has it, ask every node to
        forward to it (a failed wait: the next tick's renewal announces it)."""
        tap_id = f"{self._port.node}.{secrets.token_hex(6)}"
        self._mine[tap_id] = tap
        self._ids[id(tap)] = tap_id
        self._broker.subscribe(_subject(tap_id))
        self._port.spawn(self._announce_when_subscribed(tap_id))

    async def _announce_when_subscribed(self, tap_id: str) -> None:
        await asyncio.wait_for(self._broker.flush(), FLUSH_TIMEOUT_S)
        tap = self._mine.get(tap_id)
        if tap is not None:  # not closed meanwhile
            self._announce(tap_id, tap.filter, "open")

    def closed(self, tap: Watcher) -> None:
        """Tell every node to stop forwarding to ``tap``; stop receiving its subject."""
        tap_id = self._ids.pop(id(tap), None)
        if tap_id is None:
            return
        del self._mine[tap_id]
        self._announce(tap_id, tap.filter, "close")
        self._broker.unsubscribe(_subject(tap_id))

    def _announce(self, tap_id: str, wanted: TapFilter, op: Literal["open", "close"]) -> None:
        body = _Announce(op, wanted.channel, wanted.connection)
        extra = msgspec.json.encode(body)
        envelope = env.Envelope(TAP_CONTROL, tap_id, self._port.node, extra=extra)
        self._port.publish(TAPS_SUBJECT, env.encode(envelope))

    def on_forward(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        """An action another node forwarded to one of this node's taps."""
        tap = self._mine.get(envelope.target)
        if tap is None:
            return  # closed meanwhile
        try:
            where = msgspec.json.decode(envelope.extra, type=_Where)
        except msgspec.DecodeError:
            log.warning("dropped a malformed tapped action")
            return
        delivery = msgspec.structs.replace(envelope, kind=where.kind, target=where.target)
        d = delivery.to_delivery()
        if d is not None:
            tap.offer(d, where.offset)

    # Every other node ------------------------------------------------------------

    def on_control(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        """A tap opened, renewed or closed on another node."""
        if envelope.origin == self._port.node:
            return
        try:
            body = msgspec.json.decode(envelope.extra, type=_Announce)
            wanted = TapFilter(body.channel, body.connection)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            log.warning("dropped a malformed tap announcement")
            return
        tap_id = envelope.target
        known = self.forwarders.get(tap_id)
        if body.op == "close":
            if known is not None:
                del self.forwarders[tap_id]
                self._registry.remove(known)
            return
        expires = time.monotonic() + self._lease_s
        if known is not None:
            known.expires = expires
            return
        if wanted.connection is not None and wanted.connection.partition(".")[0] != self._port.node:
            return  # only the connection's node sees its actions
        if len(self.forwarders) >= MAX_REMOTE:
            log.warning("tap %s of node %s ignored: %d taps forwarded already",
                        tap_id, envelope.origin, MAX_REMOTE)
            return
        forwarder = _Forwarder(self._port, tap_id, wanted, expires)
        self.forwarders[tap_id] = forwarder
        self._registry.add(forwarder)

    async def _tick(self) -> None:
        """Renew this node's taps everywhere; drop the forwarders whose lease ended."""
        for tap_id, tap in list(self._mine.items()):
            self._announce(tap_id, tap.filter, "open")
        now = time.monotonic()
        for tap_id, forwarder in list(self.forwarders.items()):
            if forwarder.expires <= now:
                del self.forwarders[tap_id]
                self._registry.remove(forwarder)
