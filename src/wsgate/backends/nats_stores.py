"""The NATS history, presence, limits and registry stores.

History reads the stream :class:`~wsgate.backends.nats_broker.NatsBroker`
writes. The other stores keep one message per subject in the state stream
(``max_msgs_per_subject=1``): a write replaces, a removal purges the subject
(no tombstone is left), and a listing pages through a wildcard subject with
direct get. Every call is a bounded number of requests, each with the
backend's timeout; a call made while the server is unreachable raises a
``nats.errors.Error`` (usually a timeout) instead of waiting.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import struct
import time

from wsgate.backends.base import Registration, StreamReplay, StreamWindow
from wsgate.backends.nats_jet import Jet, Stored, WrongLastSequence
from wsgate.backends.nats_names import HDR_TIME_STAMP, decode_token

__all__ = ["ACQUIRE_TRIES", "NatsHistory", "NatsLimits", "NatsPresence", "NatsRegistry"]

ACQUIRE_TRIES = 16
"""Compare-and-set attempts of one :meth:`NatsLimits.acquire` before it refuses."""
_TAT_CACHE = 10_000


class NatsHistory:
    """:class:`~wsgate.backends.base.HistoryStore` over the history stream.

    The stream stores each message as published (no header of ours): what
    ``since`` and ``window`` need is derived from the stream itself. The
    server removes a subject's messages oldest first only (per-subject limit
    ``size + 1``, ``max_age`` = :func:`~wsgate.backends.nats_jet.hist_max_age`),
    so what it holds of one channel is always every message after some point,
    in sequence order, each with the server's timestamp. From that:

    - a message is *alive* while younger than ``ttl_s`` (this node's wall
      clock against the server's timestamp: messages expire one by one, and
      a stream whose newest message is older is gone: ``top`` 0);
    - the *base* (last evicted offset) is the newest stored message that is
      not alive, or — when all ``size + 1`` stored messages are alive — the
      oldest of them (evicted by the size bound; kept one message longer so
      that its offset is known exactly);
    - base is 0 (nothing evicted since the stream was created) when the
      first alive message was appended ``ttl_s`` or more after its stored
      predecessor (the stream had expired in between: memory semantics), or
      when it has none stored: the server removes a message ``2 ttl_s +
      margin`` after its append, so a removed predecessor of an alive message
      (or a message evicted by size, when fewer than ``size + 1`` are stored)
      is impossible unless it was more than ``ttl_s`` older — an earlier
      incarnation.

    ``since(o)`` is recovered iff ``o`` is the top, or ``o`` is at or above
    the base (``o >= base > 0``), or ``base == 0`` and ``o`` is 0 or one of
    the alive offsets. So an offset of an earlier incarnation is never
    recovered, and 0 is recovered while nothing was evicted. Reads are direct
    gets of every stored message of the channel (at most ``size + 1``, one
    request per 256).
    """

    def __init__(self, jet: Jet, size: int, ttl_s: float) -> None:
        self._jet = jet
        self._size = max(size, 0)
        self._ttl = ttl_s

    async def _window(self, stream: str) -> tuple[StreamWindow, bool]:
        jet = self._jet
        found = await jet.scan(
            jet.names.hist_stream, jet.names.hist(stream), limit=self._size + 2
        )
        return _window(found, self._size, self._ttl, time.time())

    async def window(self, stream: str) -> StreamWindow:
        return (await self._window(stream))[0]

    async def since(self, stream: str, offset: int) -> StreamReplay:
        (base, entries, top), alone = await self._window(stream)
        if top == 0:
            return StreamReplay(offset == 0, [], 0)
        if offset == top:
            return StreamReplay(True, [], top)
        if offset > top:
            return StreamReplay(False, [], top)
        if base:  # everything above the last evicted offset is held
            held = offset >= base
        elif offset == 0 or any(o == offset for o, _ in entries):
            held = True  # the first alive message is the stream's first since it (re)started
        elif alone and offset == entries[0][0] - 1:
            held = await self._not_ours(stream, offset)
        else:
            held = False  # an offset of an earlier incarnation, or not one at all
        if not held:
            return StreamReplay(False, [], top)
        return StreamReplay(True, [(o, d) for o, d in entries if o > offset], top)

    async def _not_ours(self, stream: str, seq: int) -> bool:
        """Whether ``seq`` (the ``prev`` delivered with a stream's first message) was
        certainly never an offset of ``stream``: below the history stream's first
        sequence, or held by another subject. A sequence the server removed may have
        been the stream's own, in an earlier incarnation: then ``False``."""
        jet = self._jet
        if 0 < seq < jet.hist_first_seq:
            return True
        other = await jet.get(jet.names.hist_stream, seq)
        return other is not None and other.subject != jet.names.hist(stream)


def _stamp(msg: Stored) -> float:
    """The server's store time of ``msg``, Unix seconds (``inf`` when unreadable)."""
    raw = msg.headers.get(HDR_TIME_STAMP, "")
    try:
        whole, _, frac = raw.rstrip("Z").partition(".")
        t = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC).timestamp()
        return t + (float("0." + frac) if frac.isdigit() else 0.0)
    except ValueError:
        return math.inf


def _window(
    found: list[Stored], size: int, ttl: float, now: float
) -> tuple[StreamWindow, bool]:
    """What a channel's stored messages (oldest first) hold, per :class:`NatsHistory`,
    and whether its first entry has no stored predecessor at all (its delivered
    ``prev`` was ``offset - 1``)."""
    if not found:
        return StreamWindow(0, [], 0), False
    stamps = [_stamp(m) for m in found]
    cut = now - ttl
    first = len(found)  # the first alive message: every later one is alive too
    while first > 0 and stamps[first - 1] > cut:
        first -= 1
    if first == len(found):
        return StreamWindow(0, [], 0), False  # expired
    top = found[-1].seq
    if first > 0:
        before = first - 1
        fresh = stamps[first] - stamps[before] >= ttl
        base = 0 if fresh else found[before].seq
    elif len(found) > size:
        base, first = found[0].seq, 1
    else:
        base = 0
    alone = first == 0 and base == 0
    alive = found[first:]
    if len(alive) > size:  # never, with the server's limit; keep the bound anyway
        base, alive, alone = alive[-size - 1].seq, alive[len(alive) - size :], False
    return StreamWindow(base, [(m.seq, m.data) for m in alive], top), alone


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

    async def add(self, channel: str, conn_id: str, node: str, member: bytes) -> None:
        subject = self._jet.names.state("pres", channel, conn_id)
        await self._jet.publish(subject, _pack_member(node, member))

    async def remove(self, channel: str, conn_id: str) -> None:
        await self._jet.purge(self._jet.names.state("pres", channel, conn_id))

    async def members(self, channel: str) -> dict[str, tuple[str, bytes]]:
        jet = self._jet
        found = await jet.scan(jet.names.state_stream, jet.names.state("pres", channel, "*"))
        return {decode_token(m.subject.rsplit(".", 1)[1]): _unpack_member(m.data) for m in found}

    async def beat(self, node: str, ttl_s: float) -> None:
        expires = time.time() + ttl_s
        subject = self._jet.names.state("beat", node)
        await self._jet.publish(subject, repr(expires).encode(), ttl_s=ttl_s + 60)

    async def dead_nodes(self, nodes: set[str]) -> set[str]:
        jet = self._jet
        found = await jet.scan(jet.names.state_stream, jet.names.state("beat", "*"))
        beats = {decode_token(m.subject.rsplit(".", 1)[1]): float(m.data) for m in found}
        now = time.time()
        return {n for n in nodes if beats.get(n, 0.0) <= now}

    async def purge(self, channel: str, nodes: set[str]) -> list[str]:
        members = await self.members(channel)
        gone = [cid for cid, (node, _) in members.items() if node in nodes]
        await asyncio.gather(*(self.remove(channel, cid) for cid in gone))
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

    async def count(self, key: str, member: str, node: str, delta: int) -> int:
        jet = self._jet
        subject = jet.names.state("cnt", key, member)
        if delta > 0:
            await jet.publish(subject, node.encode())
        else:
            await jet.purge(subject)
        return await jet.count_subjects(jet.names.state("cnt", key, "*"))

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

    async def put(self, registration: Registration) -> None:
        data = json.dumps(registration._asdict()).encode()
        ttl = max(registration.expires_at - time.time(), 0.0) + 1
        subject = self._jet.names.state("reg", registration.name, registration.url)
        await self._jet.publish(subject, data, ttl_s=ttl)

    async def delete(self, name: str, url: str) -> None:
        await self._jet.purge(self._jet.names.state("reg", name, url))

    async def all(self) -> list[Registration]:
        jet = self._jet
        found = await jet.scan(jet.names.state_stream, jet.names.state("reg", ">"))
        now = time.time()
        regs = [Registration(**json.loads(m.data)) for m in found]
        return [r for r in regs if r.expires_at > now]
