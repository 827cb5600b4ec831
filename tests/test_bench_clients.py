"""The fan-out bench's C receivers (bench/anchors/recv_count.c via bench/_clients.py).

The bench's figures rest on their counts: a frame miscounted across a read
boundary would make a receiver "arrive" early or never. A real picows server
sends frames of all three length forms (up to 70 KB, so most cross reads) to
sockets opened by picows clients and then handed to the counting process; the
bench's own client frames (one write of many) reach it intact.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from bench._clients import CountingReceivers, Pool
from bench._servers import BenchError

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


class _Broadcaster(WSListener):  # type: ignore[misc]
    """On "go <count>" sends ``count`` text frames of mixed sizes to every other
    connection, a binary frame and a ping after each; on "two 0", two one-byte text
    frames in one write."""

    def __init__(self, members: list[WSTransport]) -> None:
        self.members = members

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.members.append(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        command, count = frame.get_payload_as_bytes().split()
        others = [m for m in self.members if m is not transport]
        if command == b"two":  # two text frames in one write: one read at the receiver
            for member in others:
                member.underlying_transport.write(b"\x81\x01a\x81\x01b")
            return
        for i in range(int(count)):
            body = b'"bench/MSG"' + b"x" * (i * 997 % 70_000)
            for member in others:
                member.send(WSMsgType.TEXT, body)
                member.send(WSMsgType.BINARY, b"b" * 300)
                member.send(WSMsgType.PING, b"")


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    members: list[WSTransport] = []
    server = await ws_create_server(lambda _: _Broadcaster(members), "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def test_counts_every_text_frame_across_reads(server_url: str) -> None:
    pool = Pool(gateway=False, join=None)
    [pub] = await pool.connect(server_url, 1, publisher=True)
    receivers = await pool.connect(server_url, 4)
    counting = await CountingReceivers.start(receivers, 0)
    try:
        for count in (1, 40, 3):
            t0, last, median = await counting.measure(
                count, 30, lambda n=count: pub.wst.send(WSMsgType.TEXT, b"go %d" % n)
            )
            assert t0 <= median <= last
            assert counting.expect == {1: 1, 40: 41, 3: 44}[count]
        assert counting.frame_size == len(b'"bench/MSG"') + 2 * 997
        # Commands framed and masked by the bench, in one write (--publisher-writes one).
        fire = Pool.sender(pub, [b"go 1", b"go 2", b"go " + b"0" * 200], one_write=True)
        await counting.measure(3, 30, fire)
        # A frame more than expected, read before the round ends: an error.
        with pytest.raises(BenchError, match="4 receivers got more than 48"):
            await counting.measure(1, 30, lambda: pub.wst.send(WSMsgType.TEXT, b"two 0"))
    finally:
        await counting.close()
        await pool.close_all()
    assert pool.disconnected == pool.opened == 5
