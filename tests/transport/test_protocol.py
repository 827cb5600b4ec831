"""GateProtocol: nothing after the client's close is parsed; refused frames cut the read.

Two levels: over real sockets (everything in ONE write, so the server reads
it in one ``recv``), and the frame-boundary walk itself, with picows' own
``get_buffer``/``buffer_updated`` replaced by a recorder and the same bytes
fed in every chunking (a header cut between two reads included).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    close_frame,
    frame,
)
from wsgate.transport import protocol as protocol_mod
from wsgate.transport.listener import GateListener, ListenerContext
from wsgate.transport.protocol import BAD, MORE, GateProtocol, frame_size

MAX = 100_000


async def _rest_until_eof(client: RawClient) -> bytes:
    async with asyncio.timeout(5):
        return await client.reader.read()


# -- over the wire -------------------------------------------------------------


async def test_two_close_frames_in_one_write_get_one_1000_echo(start: Start) -> None:
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    client.send(close_frame(1000) + close_frame(1000))  # one write, one segment
    _, code = await client.recv_until_close()
    assert code == 1000  # picows alone answers 1002 ("CLOSE for the second time")
    assert await _rest_until_eof(client) == b""  # no second close frame, then EOF
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [1000]


async def test_data_after_close_in_the_same_write_is_not_delivered(start: Start) -> None:
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    client.send(
        frame(OP_TEXT, b"before")
        + close_frame(1000)
        + frame(OP_TEXT, b"after")
        + frame(OP_PING, b"p")
        + close_frame(1001)
    )
    data, code = await client.recv_until_close()
    assert (data, code) == ([], 1000)
    assert await _rest_until_eof(client) == b""  # no pong, no second close
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.messages == [b"before"]
    assert session.closes == [1000]


async def test_handshake_frames_and_two_closes_in_one_write(start: Start) -> None:
    listener, _handler = await start(handler=RecordingHandler(echo=True))
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nCookie: session=good\r\n\r\n"
    ).encode()
    client = RawClient(reader, writer)
    client.send(head + frame(OP_TEXT, b"hi") + close_frame(3001) + close_frame(1000))
    async with asyncio.timeout(5):
        await reader.readuntil(b"\r\n\r\n")
    data, code = await client.recv_until_close()
    assert (data, code) == ([b"hi"], 3001)
    assert await _rest_until_eof(client) == b""


async def test_text_then_reserved_opcode_in_one_write_echoes_the_text_first(
    start: Start,
) -> None:
    # Autobahn 4.1.3: the echo must come before the 1002, and no pong after it.
    listener, handler = await start(handler=RecordingHandler(echo=True))
    client = await RawClient.connect(listener.port)
    await handler.wait_sessions(1)
    client.send(frame(OP_TEXT, b"hello") + frame(0x5, b"") + frame(OP_PING, b"p"))
    data, code = await client.recv_until_close()
    assert (data, code) == ([b"hello"], 1002)


# -- frame_size ----------------------------------------------------------------


def test_frame_size_matches_what_picows_accepts() -> None:
    def size(data: bytes, max_frame: int = MAX) -> int:
        return frame_size(data, 0, len(data), max_frame)

    assert size(frame(OP_TEXT, b"abc")) == 2 + 4 + 3
    assert size(frame(OP_BINARY, b"x" * 126)) == 4 + 4 + 126
    assert size(frame(OP_BINARY, b"x" * 65536)) == 10 + 4 + 65536
    assert size(frame(OP_CONT, b"", fin=False, rsv=7)) == 6  # RSV: ours to refuse
    assert size(frame(OP_PING, b"p")) == 7
    assert size(frame(OP_PONG, b"")) == 6
    assert size(close_frame(1000)) == -8  # negative: a close frame
    assert size(frame(OP_CLOSE, b"", rsv=4)) == -6
    assert size(frame(OP_TEXT, b"")[:1]) == MORE
    assert size(frame(OP_TEXT, b"x" * 300)[:3]) == MORE
    assert size(frame(OP_TEXT, b"x" * 70000)[:9]) == MORE
    for opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
        assert size(frame(opcode, b"")) == BAD, opcode
    assert size(frame(OP_PING, b"", fin=False)) == BAD
    assert size(frame(OP_CLOSE, b"", fin=False)) == BAD
    assert size(frame(OP_PING, b"x" * 126)) == BAD
    assert size(frame(OP_TEXT, b"abc", mask=False)) == BAD
    assert size(struct.pack("!BBH", 0x81, 0xFE, 125)) == BAD  # non-minimal 16-bit
    assert size(struct.pack("!BBQ", 0x81, 0xFF, 65535)) == BAD  # non-minimal 64-bit
    assert size(struct.pack("!BBQ", 0x81, 0xFF, 1 << 63)) == BAD
    assert size(frame(OP_TEXT, b"x" * 11), max_frame=10) == BAD
    assert size(frame(OP_PING, b"x" * 11), max_frame=10) == 17  # control: not limited


# -- the walk, chunk by chunk ----------------------------------------------------


class _Recorder:
    """Stands in for picows' get_buffer/buffer_updated: records what picows would get."""

    def __init__(self) -> None:
        self.buf = bytearray(1 << 20)
        self.fed: list[bytes] = []

    def get_buffer(self, _proto: object, _hint: int) -> memoryview:
        return memoryview(self.buf)

    def updated(self, _proto: object, n: int) -> None:
        self.fed.append(bytes(self.buf[:n]))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    rec = _Recorder()
    monkeypatch.setattr(protocol_mod, "_base_get_buffer", rec.get_buffer)
    monkeypatch.setattr(protocol_mod, "_base_updated", rec.updated)
    return rec


def _run(rec: _Recorder, stream: bytes, cuts: list[int]) -> list[bytes]:
    proto = GateProtocol(
        lambda _request: None,
        logging.getLogger("test.protocol"),
        handshake_timeout=None,
        max_frame_size=MAX,
        read_buffer_init_size=2048,
    )
    rec.fed = []
    pos = 0
    for end in [*sorted(set(cuts)), len(stream)]:
        if end <= pos:
            continue
        # The loop calls picows' get_buffer (GateProtocol does not override it).
        view = protocol_mod._base_get_buffer(proto, -1)
        view[: end - pos] = stream[pos:end]
        proto.buffer_updated(end - pos)
        pos = end
    return [chunk for chunk in rec.fed if chunk]


HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

# (opcode, payload size, FIN): the frames are built in the test, so that
# hypothesis reports small examples.
_specs = st.lists(
    st.tuples(
        st.sampled_from([OP_TEXT, OP_BINARY, OP_CONT]),
        st.sampled_from([0, 1, 125, 126, 127, 300, 65535, 65536, 70000]),
        st.booleans(),
    )
    | st.tuples(st.sampled_from([OP_PING, OP_PONG]), st.integers(0, 125), st.just(True)),
    max_size=5,
)


def _frames(specs: list[tuple[int, int, bool]]) -> bytes:
    return b"".join(frame(op, b"d" * n, fin=fin) for op, n, fin in specs)


def _feed_start(chunks: list[bytes], index: int) -> int:
    """Where the feed holding stream byte ``index`` starts."""
    pos = 0
    for chunk in chunks:
        if pos <= index < pos + len(chunk):
            return pos
        pos += len(chunk)
    raise AssertionError(f"byte {index} never fed")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frames=_specs,
    after=_specs,
    cuts=st.lists(st.integers(0, 200_000), max_size=8),
    reason=st.binary(max_size=123),
)
async def test_close_ends_what_picows_gets_in_any_chunking(
    recorder: _Recorder,
    frames: list[tuple[int, int, bool]],
    after: list[tuple[int, int, bool]],
    cuts: list[int],
    reason: bytes,
) -> None:
    before = HEAD + _frames(frames)
    close = close_frame(1000, reason)
    stream = before + close + _frames(after) + close_frame(1000)
    fed = _run(recorder, stream, [c % (len(stream) + 1) for c in cuts])
    assert b"".join(fed) == before + close  # nothing after the first close
    # The feed that completes the close frame holds no byte before it: picows
    # delivers the frames before it without parsing the close first.
    assert _feed_start(fed, len(before) + len(close) - 1) >= len(before)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frames=_specs,
    bad=st.sampled_from(
        [
            frame(0x3, b"xyz"),
            frame(0xB, b""),
            frame(OP_PING, b"", fin=False),
            frame(OP_TEXT, b"no mask", mask=False),
            frame(OP_PING, b"p" * 126),
            struct.pack("!BBH", 0x81, 0xFE, 5) + b"mask12345",
            frame(OP_BINARY, b"b" * (MAX + 1)),
        ]
    ),
    cuts=st.lists(st.integers(0, 100_000), max_size=8),
)
async def test_refused_frame_cuts_the_read_in_any_chunking(
    recorder: _Recorder, frames: list[tuple[int, int, bool]], bad: bytes, cuts: list[int]
) -> None:
    before = HEAD + _frames(frames)
    stream = before + bad + frame(OP_TEXT, b"after") + close_frame(1000)
    fed = _run(recorder, stream, [c % (len(stream) + 1) for c in cuts])
    got = b"".join(fed)
    # All the frames before it, then at most its 14 header bytes.
    assert got.startswith(before)
    assert 2 <= len(got) - len(before) <= 14
    # The feed in which picows can tell the frame is bad holds no byte before it.
    decisive = next(k for k in range(2, 11) if frame_size(bad, 0, k, MAX) == BAD)
    assert _feed_start(fed, len(before) + decisive - 1) >= len(before)


async def test_byte_by_byte(recorder: _Recorder) -> None:
    before = (
        HEAD + frame(OP_TEXT, b"x" * 200) + frame(OP_PING, b"") + frame(OP_BINARY, b"y" * 70000)
    )
    close = close_frame(1001, b"bye")
    stream = before + close + frame(OP_TEXT, b"z")
    fed = _run(recorder, stream, list(range(len(stream))))
    assert b"".join(fed) == before + close
    assert all(len(chunk) == 1 for chunk in fed)


# -- plain reads: the listener is told every frame of the read is 0x81 ------------


class _Told(GateProtocol):
    """A GateProtocol whose picows listener is a GateListener made here (no handshake)."""

    def __init__(self, sink: GateListener) -> None:
        super().__init__(
            lambda _request: None,
            logging.getLogger("test.protocol"),
            handshake_timeout=None,
            max_frame_size=MAX,
            read_buffer_init_size=2048,
        )
        self._sink = sink
        self._ctx = sink._ctx  # what the end of a handshake read sets

    @property
    def listener(self) -> object:  # type: ignore[override]
        return self._sink


def _context() -> ListenerContext:
    """A listener context of the running loop, for a protocol fed by hand."""
    return ListenerContext(
        asyncio.get_running_loop(), handler=RecordingHandler(), max_message=MAX,
        high_water=1 << 24, heartbeat_s=30.0, heartbeat_timeout_s=30.0,
        unauthenticated_frame=b"",
    )  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=_specs, cuts=st.lists(st.integers(0, 200_000), max_size=8))
async def test_plain_read_is_told_only_for_reads_of_whole_final_text_frames(
    recorder: _Recorder,
    monkeypatch: pytest.MonkeyPatch,
    frames: list[tuple[int, int, bool]],
    cuts: list[int],
) -> None:
    ctx = _context()
    seen: list[bool] = []
    updated = recorder.updated

    def watch(proto: object, n: int) -> None:
        seen.append(ctx.plain_read)
        updated(proto, n)

    monkeypatch.setattr(protocol_mod, "_base_updated", watch)
    body = _frames(frames)
    starts, pos = {}, 0  # frame offset -> its first byte
    for op, n, fin in frames:
        starts[pos] = frame(op, b"d" * n, fin=fin)[0]
        pos += len(frame(op, b"d" * n, fin=fin))
    proto = _Told(GateListener(ctx, None))
    proto._mode = protocol_mod._FRAMES  # past the handshake
    recorder.fed = []
    pos = 0
    for end in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        if end <= pos:
            continue
        view = protocol_mod._base_get_buffer(proto, -1)
        view[: end - pos] = body[pos:end]
        proto.buffer_updated(end - pos)
        assert not ctx.plain_read  # told only while picows delivers
        pos = end
    assert b"".join(recorder.fed) == body
    at = 0
    for chunk, plain in zip(recorder.fed, seen, strict=True):
        inside = [s for s in starts if at <= s < at + len(chunk)]
        if plain:
            assert at in starts  # the read starts at a frame header
            assert all(starts[s] == 0x81 for s in inside)
        at += len(chunk)
    if not cuts and body and all(b == 0x81 for b in starts.values()):
        assert seen == [True]  # one read of whole final text frames: told


async def test_one_read_of_two_texts_is_plain_and_one_with_a_ping_is_not(
    recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context()
    seen: list[bool] = []
    monkeypatch.setattr(protocol_mod, "_base_updated", lambda _p, _n: seen.append(ctx.plain_read))
    proto = _Told(GateListener(ctx, None))
    proto._mode = protocol_mod._FRAMES
    for data in (
        frame(OP_TEXT, b"a") + frame(OP_TEXT, b"b" * 300),
        frame(OP_TEXT, b"a") + frame(OP_PING, b""),
        frame(OP_TEXT, b"a", fin=False) + frame(OP_CONT, b"b"),
    ):
        view = protocol_mod._base_get_buffer(proto, -1)
        view[: len(data)] = data
        proto.buffer_updated(len(data))
    assert seen == [True, False, False]
    assert not ctx.plain_read


async def test_the_handshake_read_gives_the_protocol_its_listeners_context(start: Start) -> None:
    """Without it no read is ever plain (nothing breaks, every frame costs more)."""
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    (session,) = await handler.wait_sessions(1)
    sink = session.sink
    assert isinstance(sink, GateListener)
    protocol = sink._wst.underlying_transport.get_protocol()
    assert isinstance(protocol, GateProtocol)
    assert protocol._ctx is sink._ctx
    client.send(frame(OP_TEXT, b'{"type":"x"}'))
    async with asyncio.timeout(5):
        await session.got_message.wait()
    assert session.messages == [b'{"type":"x"}']  # delivered through the plain path
