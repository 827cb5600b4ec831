"""The NATS history, presence, limits and registry stores.

History reads the stream :class:`~wsgate.backends.nats_broker.NatsBroker`
writes. The other stores keep one message per subject in the state stream
(``max_msgs_per_subject=1``): a write replaces, a removal purges the subject
(no tombstone is left), and a listing pages through a wildcard subject with
direct get. Every call is a bounded number of requests, each with the
backend's timeout; a call made while the server is unreachable raises
:class:`~wsgate.exceptions.BackendUnavailable` (from nats-py's timeout)
instead of waiting, any other failure :class:`~wsgate.exceptions.BackendError`.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

from wsgate.backends.base import Registration, StreamReplay, StreamWindow, is_inbox
from wsgate.backends.nats_broker import entries_of, head_of
from wsgate.backends.nats_jet import Jet, WrongLastSequence, guard
from wsgate.backends.nats_names import decode_token

__all__ = ["ACQUIRE_TRIES", "NatsHistory", "NatsLimits", "NatsPresence", "NatsRegistry"]

ACQUIRE_TRIES = 16
"""Compare-and-set attempts of one :meth:`NatsLimits.acquire` before it refuses."""
_TAT_CACHE = 10_000


class NatsHistory:
    """:class:`~wsgate.backends.base.HistoryStore` over the history stream.

    Every stored message carries its offset and its channel's epoch
    (``created``) in headers (:mod:`~wsgate.backends.nats_broker`); the
    server removes a channel's messages oldest first only (``max_age``,
    ``max_msgs_per_subject``, ``max_msgs``), so what it holds of one channel is
    always its messages after some point, contiguous offsets of one epoch.
    Exactly like the Redis stream: the last evicted offset is the first
    remaining one minus one, and nothing was evicted iff the first remaining
    one is ``created + 1``. ``since(o)`` recovers iff the channel is stored,
    ``created <= o <= top`` (or ``o == 0`` and nothing was evicted) and
    ``o`` is not below the last evicted offset. Reads are direct gets of the
    channel's stored messages (at most ``size``, one request per 256); a
    stored message may hold several consecutive actions (a batch), and the
    window keeps the last ``size`` actions of them.

    Messages age out one by one, ``ttl_s`` after each append (the server's
    clock), not all together ``ttl_s`` after the last. Users' inboxes are read
    from the inbox stream, with ``inbox_size`` for ``size``.
    """

    def __init__(self, jet: Jet, size: int, inbox_size: int = 100) -> None:
        self._jet = jet
        self._size = max(size, 0)
        self._inbox_size = max(inbox_size, 0)

    async def _read(self, stream: str) -> tuple[StreamWindow, int] | None:
        """The stream's window and epoch, or ``None`` when nothing of it is stored."""
        jet = self._jet
        size = self._inbox_size if is_inbox(stream) else self._size
        found = await jet.scan(*jet.names.stored(stream), limit=max(size, 1))
        if not found:
            return None
        _, top, epoch = head_of(found[-1])
        if size == 0:
            return StreamWindow(top, [], top), epoch  # the counter only: all evicted
        entries = [e for m in found for e in entries_of(m.headers, m.seq, m.data)]
        entries = entries[-size:]  # a stored message may hold several actions
        first = entries[0][0]
        base = 0 if first == epoch + 1 else first - 1
        return StreamWindow(base, entries, top), epoch

    @guard
    async def window(self, stream: str) -> StreamWindow:
        found = await self._read(stream)
        return StreamWindow(0, [], 0) if found is None else found[0]

    @guard
    async def since(self, stream: str, offset: int) -> StreamReplay:
        found = await self._read(stream)
        if found is None:
            return StreamReplay(offset == 0, [], 0)
        (base, entries, top), created = found
        if offset < base or offset > top or 0 < offset < created:
            return StreamReplay(False, [], top)
        return StreamReplay(True, [(o, d) for o, d in entries if o > offset], top)


def _pack_member(node: str, member: bytes) -> bytes:
    raw = node.encode()
    return struct.pack(">H", len(raw)) + raw + member


def _unpack_member(data: bytes) -> tuple[str, bytes]:
    (n,) = struct.unpack_from(">H", data)
    return data[2 : 2 + n].decode(), data[2 + n :]


class NatsPresence:
    """:class:`~wsgate.backends.base.PresenceStore` in the state stream.

    A member is the subject ``P.pres.<channel>.<conn>`` holding
    ``node`` and ``member``; a heartbeat is ``P.beat.<node>`` holding its
    expiry as Unix time, compared with this node's wall clock (NATS has no
    server-side clock to ask), and a per-message TTL cleans it up later.
    Nodes' clocks must agree to well within the heartbeat TTL.
    """

    def __init__(self, jet: Jet) -> None:
        self._jet = jet

    @guard
    async def add(self, channel: str, conn_id: str, node: str, member: bytes) -> None:
        subject = self._jet.names.state("pres", channel, conn_id)
        await self._jet.publish(subject, _pack_member(node, member))

    @guard
    async def remove(self, channel: str, conn_id: str) -> None:
        await self._jet.purge(self._jet.names.state("pres", channel, conn_id))

    @guard
    async def members(self, channel: str) -> dict[str, tuple[str, bytes]]:
        return await self._members(channel)

    async def _members(self, channel: str) -> dict[str, tuple[str, bytes]]:
        jet = self._jet
        found = await jet.scan(jet.names.state_stream, jet.names.state("pres", channel, "*"))
        return {decode_token(m.subject.rsplit(".", 1)[1]): _unpack_member(m.data) for m in found}

    @guard
    async def beat(self, node: str, ttl_s: float) -> None:
        expires = time.time() + ttl_s
        subject = self._jet.names.state("beat", node)
        await self._jet.publish(subject, repr(expires).encode(), ttl_s=ttl_s + 60)

    @guard
    async def dead_nodes(self, nodes: set[str]) -> set[str]:
        jet = self._jet
        found = await jet.scan(jet.names.state_stream, jet.names.state("beat", "*"))
        beats = {decode_token(m.subject.rsplit(".", 1)[1]): float(m.data) for m in found}
        now = time.time()
        return {n for n in nodes if beats.get(n, 0.0) <= now}

    @guard
    async def purge(self, channel: str, nodes: set[str]) -> list[str]:
        members = await self._members(channel)
        gone = [cid for cid, (node, _) in members.items() if node in nodes]
        jet = self._jet
        await asyncio.gather(*(jet.purge(jet.names.state("pres", channel, c)) for c in gone))
        return gone


class NatsLimits:
    """:class:`~wsgate.backends.base.SharedLimits` in the state stream.

    :meth:`acquire` is GCRA with a compare-and-set loop: read the key's
    theoretical arrival time (TAT) and revision, compute, publish the new TAT
    with ``Nats-Expected-Last-Subject-Sequence`` = that revision; a lost race
    rereads and retries, at most :data:`ACQUIRE_TRIES` times, after which it
    refuses with ``interval`` (never lets a unit through unchecked). So two
    nodes never both take the last unit. A TAT carries a per-message TTL just
    past its own time, after which the server forgets the key.

    Clock: NATS has no server-side ``TIME`` (Redis does), so "now" is this
    node's wall clock (``time.time()``); nodes must run NTP, and a skew of
    ``d`` seconds lets a skewed node pass up to ``d / interval`` extra units.

    :meth:`count` keeps one subject per member (``P.cnt.<key>.<member>``
    holding its node) and counts the key's subjects; :meth:`forget_node`
    scans every member (it is rare: a node died).
    """

    def __init__(self, jet: Jet) -> None:
        self._jet = jet
        self._tats: dict[str, tuple[int, float]] = {}
        """Per key: the revision and TAT this node last read or wrote (saves a read)."""

    @guard
    async def acquire(self, key: str, interval: float, tolerance: float) -> float:
        jet = self._jet
        subject = jet.names.state("lim", key)
        known = self._tats.pop(key, None)
        for _ in range(ACQUIRE_TRIES):
            if known is None:
                last = await jet.last(jet.names.state_stream, subject)
                known = (last.seq, float(last.data)) if last is not None else (0, 0.0)
            revision, stored = known
            now = time.time()
            tat = max(stored, now)
            wait = tat - now - tolerance
            if wait > 0:
                self._remember(key, known)
                return wait
            new = tat + interval
            try:
                seq = await jet.publish(
                    subject, repr(new).encode(), expected_last=revision, ttl_s=new - now + 1
                )
            except WrongLastSequence:
                known = None
                continue
            self._remember(key, (seq, new))
            return 0.0
        return interval

    def _remember(self, key: str, state: tuple[int, float]) -> None:
        if len(self._tats) >= _TAT_CACHE:
            self._tats.clear()
        self._tats[key] = state

    @guard
    async def count(self, key: str, member: str, node: str, delta: int) -> int:
        jet = self._jet
        subject = jet.names.state("cnt", key, member)
        if delta > 0:
            await jet.publish(subject, node.encode())
        else:
            await jet.purge(subject)
        return await jet.count_subjects(jet.names.state("cnt", key, "*"))

    @guard
    async def forget_node(self, node: str) -> None:
        jet = self._jet
        found = await jet.scan(jet.names.state_stream, jet.names.state("cnt", ">"))
        raw = node.encode()
        await asyncio.gather(*(jet.purge(m.subject) for m in found if m.data == raw))


class NatsRegistry:
    """:class:`~wsgate.backends.base.ServiceRegistry` in the state stream.

    One subject per ``(name, url)`` holding the registration as JSON, with a
    per-message TTL just past ``expires_at`` so the server drops it later;
    :meth:`all` filters by this node's wall clock.
    """

    def __init__(self, jet: Jet) -> None:
        self._jet = jet

    @guard
    async def put(self, registration: Registration) -> None:
        data = json.dumps(registration._asdict()).encode()
        ttl = max(registration.expires_at - time.time(), 0.0) + 1
        subject = self._jet.names.state("reg", registration.name, registration.url)
        await self._jet.publish(subject, data, ttl_s=ttl)

    @guard
    async def delete(self, name: str, url: str) -> None:
        await self._jet.purge(self._jet.names.state("reg", name, url))

    @guard
    async def all(self) -> list[Registration]:
        jet = self._jet
        found = await jet.scan(jet.names.state_stream, jet.names.state("reg", ">"))
        now = time.time()
        regs = [Registration(**json.loads(m.data)) for m in found]
        return [r for r in regs if r.expires_at > now]
