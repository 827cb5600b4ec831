"""The fan-out bench's frame-counting receivers (bench/_clients.py, ``FrameCounter``).

The bench's figures rest on these counts: a frame miscounted across a read
boundary would make a receiver "arrive" early or never. The walk is checked
on every split of one byte stream, then on real connections taken over from
picows.
"""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from bench._clients import FrameCounter, Pool


def _frame(op: int, payload: bytes) -> bytes:
    """A server's (unmasked) frame with FIN set, length in its minimal form."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | op, n])
    elif n < 1 << 16:
        head = bytes([0x80 | op, 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | op, 127]) + struct.pack("!Q", n)
    return head + payload


def _counter() -> FrameCounter:
    client: Any = SimpleNamespace(pool=SimpleNamespace(closes=[]))
    return FrameCounter(client)


# Text frames of every length form, with a binary frame and a ping between them.
STREAM = b"".join(
    [
        _frame(1, b"a" * 5),
        _frame(2, b"b" * 7),  # binary: not counted
        _frame(1, b"c" * 125),
        _frame(9, b""),  # ping: not counted
        _frame(1, b"d" * 126),
        _frame(1, b"e" * 70_000),
        _frame(1, b""),
        _frame(1, b"f" * 253),
    ]
)
TEXT_FRAMES = 6


def test_one_read_counts_the_text_frames_only() -> None:
    c = _counter()
    assert c.feed(STREAM) == TEXT_FRAMES
    assert c.last_len == 253


@pytest.mark.parametrize("step", [1, 2, 3, 7, 125, 4096])
def test_reads_of_any_size_count_the_same(step: int) -> None:
    c = _counter()
    total = sum(c.feed(STREAM[i : i + step]) for i in range(0, len(STREAM), step))
    assert total == TEXT_FRAMES
    assert c.last_len == 253


def test_every_two_way_split_counts_each_frame_once_when_it_ends() -> None:
    ends = []  # offset just past each text frame
    p = 0
    for op, size in [(1, 5), (2, 7), (1, 125), (9, 0), (1, 126), (1, 70_000), (1, 0), (1, 253)]:
        p += len(_frame(op, b"x" * size))
        if op == 1:
            ends.append(p)
    cuts = sorted({*range(0, 300), *range(len(STREAM) - 400, len(STREAM) + 1), *ends})
    for cut in cuts:
        c = _counter()
        first = c.feed(STREAM[:cut])
        second = c.feed(STREAM[cut:]) if cut < len(STREAM) else 0
        assert first == sum(1 for e in ends if e <= cut), cut
        assert first + second == TEXT_FRAMES, cut


def test_a_close_frame_is_recorded_and_ends_the_walk() -> None:
    c = _counter()
    data = _frame(1, b"x") + _frame(8, struct.pack("!H", 4000) + b"slow") + _frame(1, b"y")
    assert c.feed(data) == 1
    assert c.client.pool.closes == [4000]


class _Broadcaster(WSListener):  # type: ignore[misc]
    """Sends ``count`` text frames of mixed sizes to every other connection on "go <count>"."""

    def __init__(self, members: list[WSTransport]) -> None:
        self.members = members

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.members.append(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            count = int(frame.get_payload_as_bytes().split()[1])
            for i in range(count):
                body = b'"bench/MSG"' + b"x" * (i * 997 % 70_000)
                for member in self.members:
                    if member is not transport:
                        member.send(WSMsgType.TEXT, body)


async def test_receivers_taken_from_picows_count_real_frames() -> None:
    members: list[WSTransport] = []
    server = await ws_create_server(lambda _: _Broadcaster(members), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/"
    try:
        pool = Pool(gateway=False, join=None)
        [pub] = await pool.connect(url, 1, publisher=True)
        receivers = await pool.connect(url, 4)
        pool.count_frames(receivers)
        for count in (1, 40, 3):
            _, arrivals = await pool.measure(
                count, 4, 30, lambda n=count: pub.wst.send(WSMsgType.TEXT, b"go %d" % n)
            )
            assert len(arrivals) == 4
            pool.check_counts(receivers)
        assert [c.got for c in receivers] == [44] * 4
        await pool.close_all()
        assert pool.disconnected == pool.opened == 5
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
