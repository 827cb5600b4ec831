"""Frames out: the framing cache, one write per iteration, the slow consumer."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.helpers import eventually
from tests.transport.conftest import Start
from tests.transport.helpers import (
    COOKIE,
    OP_BINARY,
    OP_TEXT,
    RawClient,
    close_frame,
    frame,
    record_calls,
)
from wsgate.transport.framing import encode_binary_frame, encode_text_frame
from wsgate.transport.outbound import JOIN_FRAMES, JOIN_MAX, MAX_FRAMES
from wsgate.typing import ConnectionId


def test_text_frame_headers() -> None:
    # RFC 6455 §5.2: 7-bit, 16-bit (126) and 64-bit (127) lengths; no mask bit.
    assert encode_text_frame(b"") == b"\x81\x00"
    assert encode_text_frame(b"a" * 125)[:2] == b"\x81\x7d"
    assert encode_text_frame(b"a" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert encode_text_frame(b"a" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert encode_text_frame(b"a" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")
    assert len(encode_text_frame(b"a" * 65536)) == 65536 + 10
    assert encode_binary_frame(b"\x00")[:2] == b"\x82\x01"


def test_same_object_is_framed_once() -> None:
    payload = b'{"type":"x"}' * 3
    first = encode_text_frame(payload)
    assert encode_text_frame(payload) is first
    equal_copy = bytes(bytearray(payload))
    assert equal_copy is not payload
    second = encode_text_frame(equal_copy)
    assert second == first and second is not first  # compared by identity, not value
    other = encode_text_frame(b"other")
    assert other.endswith(b"other")
    assert encode_text_frame(payload) is not first  # the cache holds one entry


async def test_frames_of_one_iteration_go_out_in_one_write(start: Start) -> None:
    # The test loop is asyncio's, so the transport is a Python object whose
    # write() can be wrapped to count calls.
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    (conn,) = listener._ctx.connections
    tr = conn._wst.underlying_transport
    assert isinstance(tr, asyncio.Transport)
    writes: list[int] = []
    real_write = tr.write

    def counting_write(data: Any) -> None:
        writes.append(len(data))
        real_write(data)

    tr.write = counting_write  # type: ignore[method-assign]
    for i in range(100):
        session.sink.send(f"m{i:03d}".encode())
    assert writes == []  # nothing written yet: buffered
    await eventually(lambda: writes, what="the flusher's write")
    assert writes == [100 * (2 + 4)]  # 100 frames of 2+4 bytes, one write
    for i in range(100, 150):  # a later iteration: a second write
        session.sink.send(f"m{i:03d}".encode())
    await eventually(lambda: len(writes) == 2, what="the second write")
    assert writes == [600, 300]
    for i in range(150):
        assert await client.recv_frame() == (OP_TEXT, True, f"m{i:03d}".encode())


async def test_frames_queued_in_one_iteration_are_held_by_reference_not_copied(
    start: Start,
) -> None:
    # A burst relayed into a channel queues many frames per connection in one
    # iteration. Appending them to one growing buffer copied every frame, and
    # the buffer's exact-size growth copied it again and again (quadratic):
    # the fan-out's largest cost (bench/README.md). Queued frames must be
    # references to the one shared frame, written together by the flush.
    listener, handler = await start(outbound_high_water_bytes=64 * 1024 * 1024)
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    n, size = 64, 64 * 1024
    payload = b"x" * size
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            session.sink.send(payload)  # one object: framed once (the fan-out cache)
        queued = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # One frame (64 KiB + header) and a pointer per frame, not n copies (4 MiB).
    assert queued < 2 * size, queued
    for _ in range(n):
        assert await client.recv_frame() == (OP_TEXT, True, payload)


async def test_slow_consumer_is_closed_4000_and_others_are_not_slowed(start: Start) -> None:
    listener, handler = await start(outbound_high_water_bytes=256 * 1024)
    slow = await RawClient.connect(listener.port, rcvbuf=4096)  # never reads (for now)
    await handler.wait_sessions(1)
    n, size = 500, 10_000
    async with connect(
        f"ws://127.0.0.1:{listener.port}/ws",
        additional_headers={"Cookie": COOKIE},
        open_timeout=5,
        max_size=None,
        max_queue=None,
    ) as fast:
        slow_session, fast_session = await handler.wait_sessions(2)

        async def receive_all() -> int:
            got = 0
            async with asyncio.timeout(10):
                while got < n:
                    msg = await fast.recv(decode=False)
                    assert len(msg) == size
                    got += 1
            return got

        reader = asyncio.create_task(receive_all())
        t0 = time.monotonic()
        for i in range(n):
            msg = str(i % 10).encode() * size  # one object, sent to both: framed once
            slow_session.sink.send(msg)
            fast_session.sink.send(msg)
            if i % 5 == 4:
                await asyncio.sleep(0)  # pacing: the fast client's reader runs between sends
        assert await reader == n
        elapsed = time.monotonic() - t0
        # The fast client got everything while the slow one was still being
        # given its grace period: nobody waited for the stalled socket.
        assert not slow_session.closed.is_set()
        assert elapsed < 3.0, elapsed
        assert fast_session.closes == []
    # The slow client, reading at last: part of the data, then close 4000.
    data, code = await slow.recv_until_close(timeout=10)
    assert code == 4000
    assert 0 < sum(len(d) for d in data) < n * size
    await slow.expect_eof()
    async with asyncio.timeout(5):
        await slow_session.closed.wait()
    assert listener.connection_count == 0


async def _relay_room(start: Start, members: int) -> tuple[RawClient, list[RawClient], Any, Any]:
    """A sender and ``members`` receivers; the sender's messages go to every receiver's sink."""
    listener, handler = await start()
    sender = await RawClient.connect(listener.port)
    (first,) = await handler.wait_sessions(1)
    receivers = [await RawClient.connect(listener.port) for _ in range(members)]
    sessions = await handler.wait_sessions(1 + members)
    return sender, receivers, listener, (first, sessions[1:])


async def test_a_burst_in_one_read_is_one_write_per_member(start: Start) -> None:
    # Frames read together (a relayed burst) are written together, once per member.
    sender, receivers, listener, (first, members) = await _relay_room(start, 3)
    calls: list[tuple[str, Any]] = []
    for m in members:
        (conn,) = [c for c in listener._ctx.connections if c._session is m]
        record_calls(conn, calls)

    def relay(data: bytes) -> None:
        for m in members:
            m.sink.send(data)

    first.on_message = relay  # type: ignore[method-assign]
    sender.send(b"".join(frame(OP_TEXT, f"m{i:02d}".encode()) for i in range(20)))
    for client in receivers:
        for i in range(20):
            assert await client.recv_frame() == (OP_TEXT, True, f"m{i:02d}".encode())
    # One call per member: a write of the joined frames (they fit JOIN_MAX, no backlog).
    assert [kind for kind, _ in calls] == ["write"] * 3


async def test_a_flush_past_join_max_hands_over_the_shared_frames(start: Start) -> None:
    # Joining copies: past JOIN_MAX the transport gets the frames themselves, so
    # whatever the kernel does not take stays shared by every member, not copied.
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    (conn,) = listener._ctx.connections
    calls = record_calls(conn)
    big = b"b" * (JOIN_MAX // 2 + 1)  # two of them pass JOIN_MAX
    session.sink.send(big)
    session.sink.send(big)
    await eventually(lambda: calls, what="the flush")
    ((kind, frames),) = calls
    assert kind == "writelines"
    assert len(frames) == 2 and frames[0] is frames[1]  # the one cached frame, twice
    for _ in range(2):
        assert await client.recv_frame() == (OP_TEXT, True, big)
    # A flush that fits is joined: one buffer, one write.
    session.sink.send(b"s1")
    session.sink.send(b"s2")
    await eventually(lambda: len(calls) == 2, what="the second flush")
    assert calls[1] == ("write", encode_text_frame(b"s1") + encode_text_frame(b"s2"))


async def test_a_backlogged_transport_gets_references_not_a_joined_copy(start: Start) -> None:
    listener, handler = await start(outbound_high_water_bytes=256 * 1024 * 1024)
    slow = await RawClient.connect(listener.port, rcvbuf=4096)  # does not read yet
    (session,) = await handler.wait_sessions(1)
    (conn,) = listener._ctx.connections
    tr = conn._wst.underlying_transport
    session.sink.send(b"x" * (64 * 1024 * 1024))  # more than the kernel takes at once
    await eventually(lambda: conn._backlog > 0, what="a backlog in the transport")
    calls = record_calls(conn)
    session.sink.send(b"y1")
    session.sink.send(b"y2")
    await eventually(lambda: calls, what="the flush")
    assert [kind for kind, _ in calls] == ["writelines"]
    assert tr.get_write_buffer_size() > 0
    await slow.aclose()


async def test_past_max_frames_in_one_iteration_the_buffer_is_flushed_early_in_order(
    start: Start,
) -> None:
    # The queue is bounded in frames, not only bytes: a burst of small frames
    # in one iteration is written in slices of MAX_FRAMES, in order.
    listener, handler = await start(outbound_high_water_bytes=64 * 1024 * 1024)
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    (conn,) = listener._ctx.connections
    calls = record_calls(conn)
    n = 2 * MAX_FRAMES + 7
    most = 0
    for i in range(n):
        session.sink.send(b"%05d" % i)
        most = max(most, len(conn._out or ()))
    assert most == MAX_FRAMES  # never past the bound
    assert len(calls) == 2  # two early flushes inside the iteration
    await eventually(lambda: len(calls) == 3, what="the end-of-iteration flush")
    # Past JOIN_FRAMES a flush is not joined (no transient copy of a long burst).
    assert [kind for kind, _ in calls] == ["writelines", "writelines", "write"]
    assert [len(frames) for _, frames in calls[:2]] == [MAX_FRAMES + 1] * 2
    for i in range(n):
        assert await client.recv_frame() == (OP_TEXT, True, b"%05d" % i)


@pytest.mark.parametrize(
    ("frames", "size"),
    [(1, 90 * 1024), (3, 30 * 1024), (JOIN_FRAMES + 1, 1024)],
    ids=["one frame", "joined", "past JOIN_FRAMES"],
)
async def test_past_high_water_in_one_iteration_nothing_is_written_and_it_closes_4000(
    start: Start, frames: int, size: int
) -> None:
    # Bytes are counted at the flush, on each of its three paths: a connection
    # given more than high_water in one iteration is closed 4000 with none of it written.
    listener, handler = await start(outbound_high_water_bytes=64 * 1024)
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    for i in range(frames):
        session.sink.send(b"%d" % i + b"z" * size)  # > 64 KiB in all, one iteration
    data, code = await client.recv_until_close()
    assert code == 4000
    assert data == []


async def test_a_channel_batch_is_one_shared_write_per_member(start: Start) -> None:
    # A channel's actions of one iteration (Flusher.publish) are framed and joined
    # once: every member's transport gets the same bytes object, in one write.
    sender, receivers, listener, (_, members) = await _relay_room(start, 3)
    calls: list[list[tuple[str, Any]]] = []
    for m in members:
        (conn,) = [c for c in listener._ctx.connections if c._session is m]
        calls.append(record_calls(conn))
    sends = {ConnectionId(f"m{i}"): m.sink.send for i, m in enumerate(members)}
    flusher = listener._ctx.flusher
    payloads = [b"a%02d" % i for i in range(10)]
    assert [flusher.publish(sends, p, ConnectionId("m0") if i == 9 else None)
            for i, p in enumerate(payloads)] == [3] * 9 + [2]
    assert all(c == [] for c in calls)  # held until the end of the iteration
    await eventually(lambda: all(calls), what="the batch's writes")
    joined = b"".join(encode_text_frame(p) for p in payloads)
    assert calls[1] == calls[2] == [("write", joined)]
    assert calls[1][0][1] is calls[2][0][1]  # one object, shared
    assert calls[0] == [("write", joined[: -len(encode_text_frame(payloads[9]))])]
    for i, client in enumerate(receivers):
        for p in payloads[: 9 if i == 0 else 10]:
            assert await client.recv_frame() == (OP_TEXT, True, p)
    await sender.aclose()


async def test_a_channel_batch_past_high_water_closes_the_member_4000_unwritten(
    start: Start,
) -> None:
    listener, handler = await start(outbound_high_water_bytes=64 * 1024)
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    sends = {ConnectionId("c"): session.sink.send}
    for i in range(3):  # 90 KiB in one iteration: past BATCH_BYTES, so written at once
        listener._ctx.flusher.publish(sends, b"%d" % i + b"z" * (30 * 1024), None)
    assert listener._ctx.flusher.batch is None
    data, code = await client.recv_until_close()
    assert code == 4000
    assert data == []


async def test_a_frame_queued_between_a_channels_actions_keeps_its_place(start: Start) -> None:
    # Any frame queued on the listener (here a binary one, through _enqueue, as pongs
    # go) settles the open channel batch first, so it arrives between the two actions.
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    (conn,) = listener._ctx.connections
    sends = {ConnectionId("c"): session.sink.send}
    flusher = listener._ctx.flusher
    flusher.publish(sends, b"a1", None)
    conn.send_binary(b"\x00between")
    flusher.publish(sends, b"a2", None)
    assert await client.recv_frame() == (OP_TEXT, True, b"a1")
    assert await client.recv_frame() == (OP_BINARY, True, b"\x00between")
    assert await client.recv_frame() == (OP_TEXT, True, b"a2")


async def test_a_channels_action_sent_before_the_peers_close_goes_out_before_the_answer(
    start: Start,
) -> None:
    # The client's message and its close frame arrive in one read: the message's
    # handler delivers into a channel (a batch opens), then the close is answered.
    # What was sent before the answer goes out before it, as a flush does.
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    sends = {ConnectionId("c"): session.sink.send}
    flusher = listener._ctx.flusher

    def deliver(data: bytes) -> None:
        flusher.publish(sends, b"reply to " + data, None)

    session.on_message = deliver  # type: ignore[method-assign]
    client.send(frame(OP_TEXT, b"go") + close_frame(1000))
    data, code = await client.recv_until_close()
    assert (data, code) == ([b"reply to go"], 1000)
