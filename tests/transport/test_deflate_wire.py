"""permessage-deflate on real sockets: the `websockets` client and hand-made frames.

The `websockets` client negotiates RFC 7692 itself, so it checks our side:
the 101's answer, our compressed frames (it inflates them with the window
we promised), and our inflating of its compressed and fragmented messages.
The raw client sends what `websockets` never would: bombs, RSV1 on a
control frame or a continuation, garbage.
"""

from __future__ import annotations

import asyncio
import os
import zlib

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)

from tests.helpers import eventually
from tests.transport.conftest import Start
from tests.transport.helpers import (
    COOKIE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    TIMEOUT,
    RawClient,
    RecordingHandler,
    frame,
    record_calls,
)
from wsgate.transport.framing import encode_text_frame
from wsgate.typing import ConnectionId

BASE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
OFFER = {"Cookie": COOKIE, "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}


def _url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


def _compress(data: bytes) -> bytes:
    """A client's compressed message (§7.2.1: the 4-byte tail removed)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _inflate(payload: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


def _deflate_of(ws: ClientConnection) -> PerMessageDeflate:
    [ext] = ws.protocol.extensions
    assert isinstance(ext, PerMessageDeflate)
    return ext


def _messages() -> list[str]:
    block = os.urandom(600).hex()
    return [
        '{"type":"chat/SAY","payload":{"text":"hello"}}',
        "",
        '{"type":"orders/LIST","payload":' + '{"id":42,"state":"open"},' * 200 + "null}",
        block * 8,  # repeats 1.2 KB apart: a 1 KiB window must not reach them
        "é" * 3000,
    ]


async def test_off_by_default(start: Start) -> None:
    listener, _ = await start(RecordingHandler(echo=True))
    async with connect(_url(listener.port), additional_headers={"Cookie": COOKIE}) as ws:
        assert ws.protocol.extensions == []
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send("plain")
        assert await ws.recv() == "plain"


async def test_the_answer_to_an_offer(start: Start) -> None:
    listener, _ = await start(RecordingHandler(), compression=True)
    client = await RawClient.connect(listener.port, headers=OFFER)
    assert client.status == 101
    assert client.headers["sec-websocket-extensions"] == BASE
    declined = await RawClient.connect(
        listener.port,
        headers={
            "Cookie": COOKIE,
            "Sec-WebSocket-Extensions": "permessage-deflate; server_max_window_bits=8",
        },
    )
    assert declined.status == 101
    assert "sec-websocket-extensions" not in declined.headers


@pytest.mark.parametrize(
    ("factory", "server_bits"),
    [
        (ClientPerMessageDeflateFactory(client_max_window_bits=True), 15),  # what websockets offers
        (ClientPerMessageDeflateFactory(), 15),
        (ClientPerMessageDeflateFactory(client_no_context_takeover=True), 15),
        (ClientPerMessageDeflateFactory(server_no_context_takeover=True), 15),
        (ClientPerMessageDeflateFactory(server_max_window_bits=10), 10),
        (ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9), 9),
    ],
    ids=[
        "default",
        "bare",
        "client-no-takeover",
        "server-no-takeover",
        "server-window-10",
        "windows-9",
    ],
)
async def test_websockets_round_trip(
    start: Start, factory: ClientPerMessageDeflateFactory, server_bits: int
) -> None:
    listener, handler = await start(RecordingHandler(echo=True), compression=True)
    async with connect(
        _url(listener.port),
        additional_headers={"Cookie": COOKIE},
        compression=None,
        extensions=[factory],
        open_timeout=TIMEOUT,
    ) as ws:
        ext = _deflate_of(ws)
        # Whatever the client offered, neither side keeps a context; the server
        # keeps to the window the client asked for.
        assert ext.remote_no_context_takeover and ext.local_no_context_takeover
        assert ext.remote_max_window_bits == server_bits
        messages = _messages()
        for text in messages:  # several in a row: no context is carried over
            await ws.send(text)
            assert await ws.recv() == text
        [session] = handler.sessions
        assert session.messages == [m.encode() for m in messages]


async def test_fragmented_compressed_messages(start: Start) -> None:
    listener, handler = await start(RecordingHandler(echo=True), compression=True)
    parts = ['{"type":"bulk","payload":"', "abc" * 2000, "é" * 500, "xyz" * 3000, '"}']
    async with connect(_url(listener.port), additional_headers={"Cookie": COOKIE}) as ws:
        _deflate_of(ws)
        for _ in range(3):
            await ws.send(parts)  # one frame per part; RSV1 on the first only
            assert await ws.recv() == "".join(parts)
        await ws.send([b"\x00\x01" * 100, b"\x02" * 3000])  # binary: refused by the session
    assert handler.sessions[0].messages == ["".join(parts).encode()] * 3
    assert handler.sessions[0].binaries == 1


async def test_one_compressed_frame_for_a_fan_out(start: Start) -> None:
    """The same payload object to every sink: deflate members get RSV1, others plain."""
    listener, handler = await start(RecordingHandler(), compression=True)
    squeezed = [await RawClient.connect(listener.port, headers=OFFER) for _ in range(3)]
    plain = await RawClient.connect(listener.port)
    async with connect(_url(listener.port), additional_headers={"Cookie": COOKIE}) as ws:
        sessions = await handler.wait_sessions(5)
        payload = b'{"type":"chat/SAY","payload":{"text":"' + b"fan out " * 100 + b'"}}'
        for session in sessions:
            session.sink.send(payload)
        for client in squeezed:
            op, fin, data = await client.recv_frame()
            assert (op, fin, client.rsv) == (OP_TEXT, True, 4)
            assert len(data) < len(payload) // 4
            assert _inflate(data) == payload
        op, fin, data = await plain.recv_frame()
        assert (op, fin, plain.rsv, data) == (OP_TEXT, True, 0, payload)
        assert (await ws.recv()).encode() == payload


async def test_uncompressed_messages_still_pass(start: Start) -> None:
    """§6: RSV1 clear on a compressed connection is a message sent as is."""
    listener, handler = await start(RecordingHandler(), compression=True)
    client = await RawClient.connect(listener.port, headers=OFFER)
    client.send(frame(OP_TEXT, b'{"plain":1}'))
    client.send(frame(OP_TEXT, _compress(b'{"squeezed":2}'), rsv=4))
    [session] = await handler.wait_sessions(1)
    async with asyncio.timeout(TIMEOUT):
        while len(session.messages) < 2:
            session.got_message.clear()
            await session.got_message.wait()
    assert session.messages == [b'{"plain":1}', b'{"squeezed":2}']


async def _closed_with(
    start: Start, frames: list[bytes], *, offer: bool = True, **cfg: object
) -> int | None:
    listener, handler = await start(RecordingHandler(), compression=True, **cfg)
    client = await RawClient.connect(listener.port, headers=OFFER if offer else None)
    for f in frames:
        client.send(f)
    _, code = await client.recv_until_close()
    [session] = await handler.wait_sessions(1)
    assert session.messages == []
    return code


async def test_bomb_closes_1009(start: Start) -> None:
    bomb = _compress(bytes(4 << 20))  # 4 MiB of zeros in about 4 KiB
    assert len(bomb) < 8192
    assert await _closed_with(start, [frame(OP_TEXT, bomb, rsv=4)], max_message_bytes=65536) == 1009


async def test_fragmented_bomb_closes_1009(start: Start) -> None:
    wire = _compress(b"x" * 200_000)
    half = len(wire) // 2
    frames = [frame(OP_TEXT, wire[:half], fin=False, rsv=4), frame(OP_CONT, wire[half:])]
    assert await _closed_with(start, frames, max_message_bytes=150_000) == 1009


async def test_rsv1_on_a_control_frame_closes_1002(start: Start) -> None:
    assert await _closed_with(start, [frame(OP_PING, b"hi", rsv=4)]) == 1002


async def test_rsv1_on_a_continuation_closes_1002(start: Start) -> None:
    wire = _compress(b"two frames " * 50)
    frames = [frame(OP_TEXT, wire[:10], fin=False, rsv=4), frame(OP_CONT, wire[10:], rsv=4)]
    assert await _closed_with(start, frames) == 1002


async def test_rsv1_without_negotiation_closes_1002(start: Start) -> None:
    frames = [frame(OP_TEXT, _compress(b'{"a":1}'), rsv=4)]
    assert await _closed_with(start, frames, offer=False) == 1002


@pytest.mark.parametrize("rsv", [2, 1, 6])
async def test_rsv2_or_rsv3_closes_1002(start: Start, rsv: int) -> None:
    assert await _closed_with(start, [frame(OP_TEXT, _compress(b'{"a":1}'), rsv=rsv)]) == 1002


async def test_invalid_compressed_data_closes_1007(start: Start) -> None:
    assert await _closed_with(start, [frame(OP_TEXT, b"\xff\xff\xff\xff", rsv=4)]) == 1007


async def test_compressed_invalid_utf8_closes_1007(start: Start) -> None:
    assert await _closed_with(start, [frame(OP_TEXT, _compress(b"ok \xff\xfe"), rsv=4)]) == 1007
    wire = _compress(b"ok " * 100 + b"\xc3")
    frames = [frame(OP_TEXT, wire[:20], fin=False, rsv=4), frame(OP_CONT, wire[20:])]
    assert await _closed_with(start, frames) == 1007


async def test_a_channel_batch_is_compressed_once_per_compressor(start: Start) -> None:
    """A channel's batch (wsgate.transport.batch): members with compression take the
    batch's frames compressed and joined once, the same bytes for each; plain ones plain."""
    listener, handler = await start(RecordingHandler(), compression=True)
    squeezed = [await RawClient.connect(listener.port, headers=OFFER) for _ in range(2)]
    plain = await RawClient.connect(listener.port)
    sessions = await handler.wait_sessions(3)
    conns = list(listener._ctx.connections)
    calls = [record_calls(next(c for c in conns if c._session is s)) for s in sessions]
    sends = {ConnectionId(f"c{i}"): s.sink.send for i, s in enumerate(sessions)}
    payloads = [b'{"n":%d,"text":"%s"}' % (i, b"batched " * 50) for i in range(5)]
    for p in payloads:
        listener._ctx.flusher.publish(sends, p, None)
    await eventually(lambda: all(calls), what="the batch's writes")
    assert all(len(c) == 1 and c[0][0] == "write" for c in calls)
    assert calls[0][0][1] is calls[1][0][1]  # compressed and joined once, shared
    assert calls[2][0][1] == b"".join(encode_text_frame(p) for p in payloads)
    for client in squeezed:
        for p in payloads:
            op, fin, data = await client.recv_frame()
            assert (op, fin, client.rsv) == (OP_TEXT, True, 4)
            assert _inflate(data) == p
    for p in payloads:
        assert await plain.recv_frame() == (OP_TEXT, True, p)
