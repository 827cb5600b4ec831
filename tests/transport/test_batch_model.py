"""The channel batch against a model of the fan-out without it, on real sockets.

Each round runs a random sequence of operations inside one loop iteration:
deliveries into two channels and into the hub of all members (sometimes
skipping one member, as a relay skips its sender), direct sends to one connection, and members joining or leaving a
channel (``Flusher.settle`` first, as ``Pool.join``/``Pool.leave`` do). The
model appends to each member's expected list what the unbatched fan-out would
have sent it, at the moment it was sent; every client must then read exactly
that, in that order. One client negotiated compression (its frames are
inflated before comparing). Seeded: a failure names its seed and round.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from types import SimpleNamespace

from tests.transport.conftest import Start
from tests.transport.helpers import COOKIE, OP_TEXT, RawClient
from wsgate.typing import ConnectionId

OFFER = {"Cookie": COOKIE, "Sec-WebSocket-Extensions": "permessage-deflate"}
MEMBERS = 4
ROUNDS = 60
OPS = 30


def _inflate(payload: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


async def test_random_interleavings_reach_each_member_as_without_the_batch(
    start: Start,
) -> None:
    listener, handler = await start(compression=True)
    clients = [await RawClient.connect(listener.port) for _ in range(MEMBERS - 1)]
    clients.append(await RawClient.connect(listener.port, headers=OFFER))
    sessions = await handler.wait_sessions(MEMBERS)
    ids = [ConnectionId(f"m{i}") for i in range(MEMBERS)]
    send_of: dict[ConnectionId, Callable[[bytes], None]] = {
        cid: s.sink.send for cid, s in zip(ids, sessions, strict=True)
    }
    flusher = listener._ctx.flusher
    # The hub (an organization): every member, as connections with a sink.
    hub = {cid: SimpleNamespace(sink=s.sink) for cid, s in zip(ids, sessions, strict=True)}
    channels: list[dict[ConnectionId, Callable[[bytes], None]]] = [{}, {}]
    expected: dict[ConnectionId, list[bytes]] = {cid: [] for cid in ids}
    rng = random.Random(20261208)
    n = 0
    batched = 0
    for round_ in range(ROUNDS):
        written = flusher.batches_written
        for _ in range(rng.randint(1, OPS)):
            n += 1
            op = rng.random()
            cid = rng.choice(ids)
            sends = rng.choice(channels)
            if op < 0.55:  # a delivery into a channel, maybe skipping one member
                data = b'{"n":%d}' % n
                skip = rng.choice([None, rng.choice(list(sends) or ids)])
                got = flusher.publish(sends, data, skip)
                assert got == len(sends) - (skip in sends)
                for member in sends:
                    if member != skip:
                        expected[member].append(data)
            elif op < 0.62:  # a delivery to the hub
                data = b'{"hub":%d}' % n
                skip = rng.choice([None, cid])
                assert flusher.publish_hub(hub, data, skip) == MEMBERS - (skip is not None)
                for member in ids:
                    if member != skip:
                        expected[member].append(data)
            elif op < 0.7:  # a reply to one connection
                data = b'{"direct":%d}' % n
                send_of[cid](data)
                expected[cid].append(data)
            elif op < 0.85:  # a join (the pool settles first)
                if cid not in sends:
                    flusher.settle()
                    sends[cid] = send_of[cid]
            elif cid in sends:  # a leave
                flusher.settle()
                del sends[cid]
        for cid, client in zip(ids, clients, strict=True):
            for want in expected[cid]:
                op_, fin, data = await client.recv_frame()
                if client.rsv:
                    data = _inflate(data)
                assert (op_, fin, data) == (OP_TEXT, True, want), (round_, cid)
            expected[cid].clear()
        batched += flusher.batches_written - written
    assert batched >= ROUNDS // 2  # most rounds wrote at least one batch whole
