"""Frames in: reassembly, limits, UTF-8, reserved bits, the close handshake."""

from __future__ import annotations

import asyncio
import struct

from tests.transport.conftest import Start
from tests.transport.helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawClient,
    RecordingHandler,
    RecordingSession,
    close_frame,
    frame,
)


async def opened(start: Start, **overrides: object) -> tuple[RawClient, RecordingSession]:
    listener, handler = await start(**overrides)
    client = await RawClient.connect(listener.port)
    assert client.status == 101
    (session,) = await handler.wait_sessions(1)
    return client, session


async def expect_close(client: RawClient, session: RecordingSession, code: int) -> None:
    """The server sends close ``code``; we answer; it drops TCP; on_close runs once."""
    _, got = await client.recv_until_close()
    assert got == code
    client.send(close_frame(code))
    await client.expect_eof()
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert len(session.closes) == 1


async def test_single_text_message(start: Start) -> None:
    client, session = await opened(start)
    client.send(frame(OP_TEXT, b'{"type":"a"}'))
    async with asyncio.timeout(5):
        await session.got_message.wait()
    assert session.messages == [b'{"type":"a"}']
    await client.aclose()


async def test_fragments_are_reassembled_with_a_ping_between(start: Start) -> None:
    client, session = await opened(start)
    text = "héllo wörld – ünïcode".encode()
    # Split inside a multi-byte character too (é is 2 bytes at offset 1..2).
    client.send(frame(OP_TEXT, text[:2], fin=False))
    client.send(frame(OP_PING, b"p1"))  # §5.4: control frames may be injected
    client.send(frame(OP_CONT, text[2:9], fin=False))
    client.send(frame(OP_CONT, text[9:], fin=True))
    op, fin, payload = await client.recv_frame()
    assert (op, fin, payload) == (OP_PONG, True, b"p1")
    async with asyncio.timeout(5):
        await session.got_message.wait()
    assert session.messages == [text]
    await client.aclose()


async def test_binary_is_handed_to_on_binary(start: Start) -> None:
    client, session = await opened(start)
    client.send(frame(OP_BINARY, b"\x00\x01", fin=False))
    client.send(frame(OP_CONT, b"\x02", fin=True))
    client.send(frame(OP_TEXT, b"after"))
    async with asyncio.timeout(5):
        await session.got_message.wait()
    assert session.binaries == 1
    assert session.messages == [b"after"]
    await client.aclose()


async def test_message_past_max_closes_1009(start: Start) -> None:
    client, session = await opened(start, max_message_bytes=1000)
    client.send(frame(OP_TEXT, b"x" * 1000))  # exactly the limit is fine
    client.send(frame(OP_TEXT, b"x" * 1001))
    _, code = await client.recv_until_close()
    assert code == 1009
    assert session.messages == [b"x" * 1000]
    await client.expect_eof()


async def test_fragmented_message_past_max_closes_1009(start: Start) -> None:
    client, session = await opened(start, max_message_bytes=1000)
    client.send(frame(OP_TEXT, b"x" * 600, fin=False))
    client.send(frame(OP_CONT, b"x" * 600, fin=True))  # each fragment fits, the sum does not
    await expect_close(client, session, 1009)
    assert session.messages == []


async def test_invalid_utf8_closes_1007(start: Start) -> None:
    client, session = await opened(start)
    client.send(frame(OP_TEXT, b'{"a":"\xc3\x28"}'))
    await expect_close(client, session, 1007)
    assert session.messages == []


async def test_invalid_utf8_in_a_fragment_closes_1007_fast(start: Start) -> None:
    client, session = await opened(start)
    client.send(frame(OP_TEXT, b"ok \xff", fin=False))  # never ends: fail fast
    await expect_close(client, session, 1007)


async def test_truncated_utf8_at_the_end_closes_1007(start: Start) -> None:
    client, session = await opened(start)
    client.send(frame(OP_TEXT, b"ok", fin=False))
    client.send(frame(OP_CONT, b"\xe2\x82", fin=True))  # an incomplete 3-byte sequence
    await expect_close(client, session, 1007)
    assert session.messages == []


async def test_reserved_bits_close_1002(start: Start) -> None:
    for rsv in (1, 2, 4):
        client, session = await opened(start)
        client.send(frame(OP_TEXT, b"hi", rsv=rsv))
        await expect_close(client, session, 1002)
        assert session.messages == []


async def test_new_message_inside_fragmented_one_closes_1002(start: Start) -> None:
    client, session = await opened(start)
    client.send(frame(OP_TEXT, b"part", fin=False))
    client.send(frame(OP_TEXT, b"other"))
    await expect_close(client, session, 1002)
    assert session.messages == []


async def test_continuation_without_start_closes_1002(start: Start) -> None:
    client, session = await opened(start)
    client.send(frame(OP_CONT, b"x"))
    await expect_close(client, session, 1002)


async def test_client_close_is_echoed_and_server_drops_tcp(start: Start) -> None:
    client, session = await opened(start)
    client.send(close_frame(1000, b"bye"))
    _, code = await client.recv_until_close()
    assert code == 1000
    await client.expect_eof()
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [1000]


async def test_application_close_code_is_echoed(start: Start) -> None:
    client, session = await opened(start)
    client.send(close_frame(4321))
    _, code = await client.recv_until_close()
    assert code == 4321
    await client.expect_eof()
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [4321]


async def test_empty_close_gets_1000_and_reports_1005(start: Start) -> None:
    client, session = await opened(start)
    client.send(close_frame())
    _, code = await client.recv_until_close()
    assert code == 1000
    await client.expect_eof()
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [1005]


async def test_invalid_close_codes_get_1002(start: Start) -> None:
    # 0 and 1006 pass picows' own check; 1005/1015/5000 must not be sent either.
    for bad in (0, 1005, 1006, 1015, 2000, 5000):
        client, _session = await opened(start)
        client.send(close_frame(bad))
        _, code = await client.recv_until_close()
        assert code == 1002, bad
        await client.expect_eof()


async def test_close_payload_of_one_byte_gets_1002(start: Start) -> None:
    client, _ = await opened(start)
    client.send(frame(OP_CLOSE, b"\x03"))
    _, code = await client.recv_until_close()
    assert code == 1002


async def test_close_reason_not_utf8_gets_1007(start: Start) -> None:
    client, _ = await opened(start)
    client.send(close_frame(1000, b"\xff\xfe"))
    _, code = await client.recv_until_close()
    assert code == 1007


async def test_sink_close_flushes_first_then_waits_for_the_peer(start: Start) -> None:
    client, session = await opened(start)
    session.sink.send(b"one")
    session.sink.send(b"two")
    session.sink.close(4403, "forbidden")
    session.sink.send(b"after close")  # a no-op
    session.sink.close(1000)  # a no-op: already closing
    data, code = await client.recv_until_close()
    assert data == [b"one", b"two"]
    assert code == 4403
    assert session.closes == []  # still waiting for our close frame
    client.send(close_frame(4403))
    await client.expect_eof()
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [4403]


async def test_sink_close_reason_is_sent(start: Start) -> None:
    client, session = await opened(start)
    session.sink.close(4403, "x" * 300)  # cut to fit a control frame
    op, _, payload = await client.recv_frame()
    assert op == OP_CLOSE
    assert struct.unpack("!H", payload[:2])[0] == 4403
    assert payload[2:] == b"x" * 123
    await client.aclose()


async def test_peer_that_never_answers_close_is_dropped(start: Start) -> None:
    import wsgate.transport.listener as listener_module

    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    for conn in list(listener._ctx.connections):  # shorten the grace for the test
        conn._ctx.close_grace = 0.2
    session.sink.close(1000)
    _, code = await client.recv_until_close()
    assert code == 1000
    await client.expect_eof(timeout=3)  # aborted after the grace
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [1006]
    assert listener.connection_count == 0
    assert listener_module.CLOSE_GRACE_S > 0.2


async def test_echo_through_sink(start: Start) -> None:
    listener, _handler = await start(handler=RecordingHandler(echo=True))
    client = await RawClient.connect(listener.port)
    for i in range(20):
        client.send(frame(OP_TEXT, f"m{i}".encode()))
    got = []
    for _ in range(20):
        op, fin, payload = await client.recv_frame()
        assert (op, fin) == (OP_TEXT, True)
        got.append(payload)
    assert got == [f"m{i}".encode() for i in range(20)]
    await client.aclose()
