"""Control-frame floods stay inside the bounds (docs/hardening.md).

A client that sends pings (or pongs) and never reads must neither grow the
server's memory nor be served forever: pongs go through the bounded outbound
buffer (close 4000 past ``outbound_high_water_bytes``) and control frames
count against the connection's inbound rate (refused past it; too many
refusals close 4429). A flood of close frames ends at the first one.
"""

from __future__ import annotations

import asyncio

from tests.helpers import eventually
from tests.transport.conftest import Start
from tests.transport.helpers import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawClient,
    RecordingSession,
    close_frame,
    frame,
)
from wsgate.transport import ControlLimit, Listener
from wsgate.transport.listener import GateListener

HIGH_WATER = 64 * 1024
PAYLOAD = b"p" * 125  # the largest control payload: a 127-byte pong each


def held_bytes(listener: Listener) -> int:
    """What the server holds for its connections' peers: pending + transport buffer."""
    total = 0
    for conn in list(listener._ctx.connections):
        assert isinstance(conn, GateListener)
        total += conn.queued_bytes
        total += conn._wst.underlying_transport.get_write_buffer_size()
    return total


def open_conn(listener: Listener) -> GateListener | None:
    for conn in list(listener._ctx.connections):
        assert isinstance(conn, GateListener)
        if conn._state == 0:  # open
            return conn
    return None


async def flood(
    client: RawClient, listener: Listener, session: RecordingSession, op: int, count: int
) -> int:
    """Send up to ``count`` control frames of ``op``, never reading; the most the server held.

    Each batch ends with a text marker, and the next batch goes only once the
    server has read the marker (or closed): so the flood stops right where the
    server closes, and no unread bytes turn its close into a reset.
    """
    most = 0
    batch = 50
    one = frame(op, PAYLOAD)
    for i in range(count // batch):
        marker = b"m%d" % i
        client.send(one * batch + frame(OP_TEXT, marker))
        await eventually(
            lambda: marker in session.messages[-1:] or open_conn(listener) is None,  # noqa: B023
            every=0.0005, what="the server reading the batch (it stopped reading)",
        )
        most = max(most, held_bytes(listener))
        if open_conn(listener) is None:
            return most
    raise AssertionError(f"{count} control frames accepted, no close")


async def wait_gone(listener: Listener, timeout: float = 5.0) -> None:
    await eventually(lambda: not listener.connection_count, timeout, what="the flooding connection closed")


async def test_ping_flood_from_a_non_reader_is_closed_4429(start: Start) -> None:
    limit = ControlLimit(interval=0.01, tolerance=0.01 * 99, abuse_refusals=20, abuse_window_s=10)
    listener, handler = await start(outbound_high_water_bytes=1 << 20, control=limit)
    client = await RawClient.connect(listener.port, rcvbuf=4096)  # never reads while flooding
    (session,) = await handler.wait_sessions(1)
    most = await flood(client, listener, session, OP_PING, 20_000)
    # Bounded: at most the burst's worth of pongs (100), far below the high-water mark.
    assert most <= 100 * 127 + 50 * 127, most
    _data, code = await client.recv_until_close()
    assert code == 4429
    await wait_gone(listener)
    assert session.closes, "the session was never closed"
    assert held_bytes(listener) == 0


async def test_pongs_for_a_non_reader_count_against_high_water(start: Start) -> None:
    listener, handler = await start(outbound_high_water_bytes=HIGH_WATER)
    client = await RawClient.connect(listener.port, rcvbuf=4096)
    (session,) = await handler.wait_sessions(1)
    most = await flood(client, listener, session, OP_PING, 200_000)
    assert most <= HIGH_WATER + 127 * 50, most
    ops: list[int] = []
    code = None
    async with asyncio.timeout(10):
        for _ in range(200_000):
            op, _fin, payload = await client.recv_frame()
            ops.append(op)
            if op == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big")
                break
    assert code == 4000
    assert set(ops) == {OP_PONG, OP_CLOSE}
    await wait_gone(listener)
    assert session.closes


async def test_unsolicited_pong_flood_is_closed_4429(start: Start) -> None:
    limit = ControlLimit(interval=0.01, tolerance=0.01 * 99, abuse_refusals=20, abuse_window_s=10)
    listener, handler = await start(control=limit)
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    await flood(client, listener, session, OP_PONG, 20_000)
    _data, code = await client.recv_until_close()
    assert code == 4429
    await wait_gone(listener)


async def test_pings_within_the_rate_are_all_answered(start: Start) -> None:
    limit = ControlLimit(interval=0.01, tolerance=0.01 * 99, abuse_refusals=20, abuse_window_s=10)
    listener, handler = await start(control=limit)
    client = await RawClient.connect(listener.port)
    await handler.wait_sessions(1)
    for i in range(50):
        client.send(frame(OP_PING, b"%d" % i))
    for i in range(50):
        op, _fin, payload = await client.recv_frame()
        assert (op, payload) == (OP_PONG, b"%d" % i)
    assert listener.connection_count == 1


async def test_close_frame_flood_ends_at_the_first(start: Start) -> None:
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    client.send(close_frame(1000) * 10_000 + frame(OP_TEXT, b"after"))
    try:
        _data, code = await client.recv_until_close()
        assert code == 1000
        await client.expect_eof()
    except ConnectionResetError:
        pass  # the server closed with our closes unread: a reset may beat the close frame
    await wait_gone(listener)
    assert session.messages == []
    assert session.closes == [1000]
