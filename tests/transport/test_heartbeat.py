"""Heartbeats: ping after silence, 4408 when the ping gets no pong."""

from __future__ import annotations

import asyncio
import time

from tests.transport.conftest import Start
from tests.transport.helpers import OP_PING, OP_PONG, OP_TEXT, RawClient, frame
from wsgate.transport.heartbeat import HB_IDLE, HB_STOP, HeartbeatWheel


async def test_no_pong_closes_4408(start: Start) -> None:
    listener, handler = await start(heartbeat_ms=200, heartbeat_timeout_ms=200)
    t0 = time.monotonic()
    client = await RawClient.connect(listener.port)  # never answers pings
    (session,) = await handler.wait_sessions(1)
    op, _, _ = await client.recv_frame(timeout=3)
    t_ping = time.monotonic()
    assert op == OP_PING
    # Pinged after between 1 and 1.5 intervals of silence (plus one tick).
    assert 0.18 <= t_ping - t0 <= 0.6, t_ping - t0
    data, code = await client.recv_until_close(timeout=3)
    t_close = time.monotonic()
    assert (data, code) == ([], 4408)
    assert 0.18 <= t_close - t_ping <= 0.6, t_close - t_ping
    await client.expect_eof(timeout=5)
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [1006]  # the peer never sent a close frame
    assert listener.connection_count == 0


async def test_a_client_that_answers_pings_stays(start: Start) -> None:
    """Pinged again and again (so the heartbeat runs), answering each: never closed."""
    listener, handler = await start(heartbeat_ms=100, heartbeat_timeout_ms=100)
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    pings = 0
    for _ in range(5):  # five pings: five times the timeout would have closed a silent client
        op, _, data = await client.recv_frame(timeout=3)
        assert op == OP_PING, op
        pings += 1
        client.send(frame(OP_PONG, data))
    client.send(frame(OP_TEXT, b"still here"))
    async with asyncio.timeout(5):
        await session.got_message.wait()
    assert (pings, session.closes, session.messages) == (5, [], [b"still here"])
    assert listener.connection_count == 1
    await client.aclose()


async def test_traffic_counts_as_alive(start: Start) -> None:
    listener, handler = await start(heartbeat_ms=200, heartbeat_timeout_ms=100)
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    # Send something every 50 ms for ~1 s: never silent for a heartbeat, so no ping.
    for i in range(20):
        client.send(frame(OP_TEXT, str(i).encode()))
        await asyncio.sleep(0.05)  # the behaviour: traffic paced under the heartbeat interval
    assert len(session.messages) == 20
    assert session.closes == []
    assert client.reader.at_eof() is False
    assert len(client.reader._buffer) == 0  # nothing came: no ping


class _Beat:
    """A connection as the wheel sees it: answers ``kinds`` in turn, then HB_STOP."""

    def __init__(self, wheel: HeartbeatWheel, kinds: list[int], remove_in_check: bool = False):
        self._hb_slot = -1
        self.wheel = wheel
        self.kinds = kinds
        self.remove_in_check = remove_in_check
        self.checks = 0
        self.checked = asyncio.Event()

    def heartbeat_due(self) -> int:
        self.checks += 1
        self.checked.set()
        if self.remove_in_check:
            self.wheel.remove(self)
        return self.kinds.pop(0) if self.kinds else HB_STOP


async def test_the_wheel_keeps_a_stopped_connection_until_it_is_removed() -> None:
    # The wheel is the listener's registry: a closing connection (HB_STOP) is
    # parked, still counted, never checked again; remove() frees it.
    wheel = HeartbeatWheel(asyncio.get_running_loop(), 0.04, 0.04)
    stopping = _Beat(wheel, [])
    going = _Beat(wheel, [HB_IDLE, HB_IDLE], remove_in_check=True)
    for conn in (stopping, going):
        wheel.add(conn, HB_IDLE)
    assert len(wheel) == 2
    async with asyncio.timeout(5):
        await stopping.checked.wait()
        await going.checked.wait()
    await asyncio.sleep(0.2)  # a dozen ticks: a parked one is not checked again
    assert (stopping.checks, going.checks) == (1, 1)  # removed during its check: gone
    assert wheel.members() == [stopping] and len(wheel) == 1
    wheel.remove(stopping)
    wheel.remove(stopping)  # idempotent
    assert wheel.members() == [] and len(wheel) == 0
    wheel.stop()
