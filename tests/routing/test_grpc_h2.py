"""The Sans-I/O HTTP/2 client of gRPC calls: frames in, calls' events and frames out, no socket."""

from __future__ import annotations

import hpack
import pytest

from wsgate.routing import grpc_h2 as h2
from wsgate.routing.grpc_h2 import H2Client, request_prefix


class Call:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.ended: list[tuple[int, str]] = []

    def message(self, data: bytes) -> None:
        self.messages.append(data)

    def end(self, status: int, details: str) -> None:
        self.ended.append((status, details))


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """What the client sent, preface skipped, as (type, flags, stream, payload)."""
    if data.startswith(h2.PREFACE):
        data = data[len(h2.PREFACE) :]
    out = []
    while data:
        n = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big"), data[9 : 9 + n]))
        data = data[9 + n :]
    return out


def grpc_message(body: bytes) -> bytes:
    return b"\x00" + len(body).to_bytes(4, "big") + body


class Server:
    """The server's side of the frames: an hpack encoder in step with the client's decoder."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def headers(self, sid: int, pairs: list[tuple[str, str]], flags: int = h2.END_HEADERS) -> bytes:
        return frame(h2.HEADERS, flags, sid, self.encoder.encode(pairs))

    def answer(self, sid: int, body: bytes, status: str = "0") -> bytes:
        return (
            self.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            + frame(h2.DATA, 0, sid, grpc_message(body))
            + self.headers(sid, [("grpc-status", status)], h2.END_HEADERS | h2.END_STREAM)
        )


def client(max_message: int = 1 << 20) -> H2Client:
    conn = H2Client(max_message=max_message)
    conn.initiate()
    conn.data_to_send()
    return conn


BLOCK = request_prefix("/p.S/M", "127.0.0.1:1", tls=False)


def test_the_preface_our_settings_and_the_connection_window_go_first() -> None:
    conn = H2Client(max_message=1)
    conn.initiate()
    data = conn.data_to_send()
    assert data.startswith(h2.PREFACE)
    sent = frames(data)
    assert [f[0] for f in sent] == [h2.SETTINGS, h2.WINDOW_UPDATE]
    assert b"\x00\x02\x00\x00\x00\x00" in sent[0][3]  # ENABLE_PUSH = 0


def test_settings_are_acked_and_a_ping_answered_with_its_payload() -> None:
    conn = client()
    conn.receive(frame(h2.SETTINGS, 0, 0, b"") + frame(h2.PING, 0, 0, b"12345678"))
    assert frames(conn.data_to_send()) == [
        (h2.SETTINGS, h2.ACK, 0, b""),
        (h2.PING, h2.ACK, 0, b"12345678"),
    ]


def test_a_unary_answer_split_anyhow_reaches_the_call_then_ok() -> None:
    conn, server, call = client(), Server(), Call()
    stream = conn.open(BLOCK, b"req", call)
    sent = frames(conn.data_to_send())
    assert [(f[0], f[1]) for f in sent] == [(h2.HEADERS, h2.END_HEADERS), (h2.DATA, h2.END_STREAM)]
    assert sent[1][3] == grpc_message(b"req")
    data = server.answer(stream.id, b"answer")
    for i in range(len(data)):  # one byte at a time
        conn.receive(data[i : i + 1])
    assert call.messages == [b"answer"] and call.ended == [(0, "")]
    assert conn.streams == {}


@pytest.mark.parametrize("cut", [1, 9, 10, 40, -9, -1])
def test_several_answers_in_one_read_and_a_frame_across_two_reads(cut: int) -> None:
    conn, server = client(), Server()
    calls = [Call() for _ in range(3)]
    streams = [conn.open(BLOCK, b"req", c) for c in calls]
    data = b"".join(server.answer(s.id, b"answer %d" % s.id) for s in streams)
    cut = cut if cut > 0 else len(data) + cut
    conn.receive(data[:cut])
    conn.receive(data[cut:])
    assert [c.messages for c in calls] == [[b"answer %d" % s.id] for s in streams]
    assert [c.ended for c in calls] == [[(0, "")]] * 3
    assert conn.streams == {}


def test_headers_continued_in_continuation_frames_and_trailers_only() -> None:
    conn, server, call = client(), Server(), Call()
    stream = conn.open(BLOCK, b"", call)
    block = server.encoder.encode(
        [(":status", "200"), ("grpc-status", "7"), ("grpc-message", "no%20way")]
    )
    conn.receive(
        frame(h2.HEADERS, h2.END_STREAM, stream.id, block[:3])
        + frame(h2.CONTINUATION, 0, stream.id, block[3:5])
        + frame(h2.CONTINUATION, h2.END_HEADERS, stream.id, block[5:])
    )
    assert call.ended == [(7, "no way")]  # PERMISSION_DENIED, percent-decoded


def test_a_frame_between_headers_and_their_continuation_is_a_connection_error() -> None:
    conn, server, call = client(), Server(), Call()
    stream = conn.open(BLOCK, b"", call)
    block = server.encoder.encode([(":status", "200")])
    conn.receive(frame(h2.HEADERS, 0, stream.id, block) + frame(h2.PING, 0, 0, b"12345678"))
    assert call.ended == [(14, "connection error: CONTINUATION expected")]
    assert conn.closed and frames(conn.data_to_send())[-1][0] == h2.GOAWAY


@pytest.mark.parametrize(("http", "status"), [("404", 12), ("503", 14), ("401", 16), ("500", 2)])
def test_a_non_200_status_maps_like_grpc(http: str, status: int) -> None:
    conn, server, call = client(), Server(), Call()
    stream = conn.open(BLOCK, b"", call)
    conn.receive(server.headers(stream.id, [(":status", http)]))
    assert call.ended == [(status, f"HTTP status {http}")]


def test_data_ending_the_stream_without_trailers_is_internal() -> None:
    conn, server, call = client(), Server(), Call()
    stream = conn.open(BLOCK, b"", call)
    conn.receive(
        server.headers(stream.id, [(":status", "200")])
        + frame(h2.DATA, h2.END_STREAM, stream.id, grpc_message(b"x"))
    )
    assert call.ended[0][0] == 13


def test_goaway_ends_the_calls_above_its_last_stream_and_lets_the_others_finish() -> None:
    conn, server = client(), Server()
    first, second = Call(), Call()
    s1 = conn.open(BLOCK, b"", first)
    s3 = conn.open(BLOCK, b"", second)
    conn.receive(frame(h2.GOAWAY, 0, 0, s1.id.to_bytes(4, "big") + bytes(4)))
    assert second.ended == [(14, "GOAWAY")] and first.ended == []
    assert not conn.can_open() and not conn.usable
    conn.receive(server.answer(s1.id, b"late"))
    assert first.messages == [b"late"] and first.ended == [(0, "")]
    assert s3.id not in conn.streams


def test_rst_stream_from_the_server_ends_its_call() -> None:
    conn, call = client(), Call()
    stream = conn.open(BLOCK, b"", call)
    conn.receive(frame(h2.RST_STREAM, 0, stream.id, h2.REFUSED_STREAM.to_bytes(4, "big")))
    assert call.ended[0][0] == 14  # UNAVAILABLE: it never ran


def test_a_frame_over_our_max_frame_size_is_a_connection_error() -> None:
    conn, call = client(), Call()
    stream = conn.open(BLOCK, b"", call)
    conn.data_to_send()
    conn.receive((h2.MAX_FRAME + 1).to_bytes(3, "big") + bytes((h2.DATA, 0)) + stream.id.to_bytes(4, "big"))
    assert call.ended[0][0] == 14 and conn.closed
    goaway = frames(conn.data_to_send())[-1]
    assert goaway[0] == h2.GOAWAY and goaway[3][4:] == h2.FRAME_SIZE_ERROR.to_bytes(4, "big")


def test_an_answer_message_over_the_limit_ends_the_call_and_resets_the_stream() -> None:
    conn, server, call = client(max_message=10), Server(), Call()
    stream = conn.open(BLOCK, b"", call)
    conn.data_to_send()
    conn.receive(
        server.headers(stream.id, [(":status", "200")])
        + frame(h2.DATA, 0, stream.id, grpc_message(b"x" * 11)[:8])  # the prefix tells
    )
    assert call.ended == [(8, "answer message over the size limit")]  # RESOURCE_EXHAUSTED
    assert frames(conn.data_to_send()) == [
        (h2.RST_STREAM, 0, stream.id, h2.CANCEL.to_bytes(4, "big"))
    ]


def test_a_request_waits_for_the_peers_window_and_goes_on_window_update() -> None:
    conn, call = client(), Call()
    body = b"y" * 70_000  # over the initial 65,535-byte windows
    stream = conn.open(BLOCK, body, call)
    sent = frames(conn.data_to_send())
    data = [f for f in sent if f[0] == h2.DATA]
    assert sum(len(f[3]) for f in data) == 65535 and not any(f[1] & h2.END_STREAM for f in data)
    assert all(len(f[3]) <= h2.MAX_FRAME for f in data)
    increment = (10_000).to_bytes(4, "big")
    conn.receive(frame(h2.WINDOW_UPDATE, 0, 0, increment))
    assert conn.data_to_send() == b""  # the stream's own window is still empty
    conn.receive(frame(h2.WINDOW_UPDATE, 0, stream.id, increment))
    rest = frames(conn.data_to_send())
    assert sum(len(f[3]) for f in rest) == 70_005 - 65535 and rest[-1][1] & h2.END_STREAM


def test_the_peers_max_concurrent_streams_bounds_can_open() -> None:
    conn = client()
    conn.receive(frame(h2.SETTINGS, 0, 0, (3).to_bytes(2, "big") + (2).to_bytes(4, "big")))
    conn.open(BLOCK, b"", Call())
    assert conn.can_open()
    conn.open(BLOCK, b"", Call())
    assert not conn.can_open() and conn.usable


def test_a_paused_stream_grants_no_window_until_its_reader_caught_up() -> None:
    conn, server, call = client(), Server(), Call()
    stream = conn.open(BLOCK, b"", call)
    conn.receive(server.headers(stream.id, [(":status", "200")]))
    conn.data_to_send()
    stream.paused = True
    chunk = grpc_message(b"z" * 16000)
    for _ in range(h2.STREAM_WINDOW // len(chunk)):
        conn.receive(frame(h2.DATA, 0, stream.id, chunk))
    updates = [f for f in frames(conn.data_to_send()) if f[0] == h2.WINDOW_UPDATE]
    assert all(f[2] == 0 for f in updates)  # the connection's, never the stream's
    conn.consumed(stream)
    updates = [f for f in frames(conn.data_to_send()) if f[0] == h2.WINDOW_UPDATE]
    assert [f[2] for f in updates] == [stream.id]


def test_loss_of_the_connection_ends_every_call_unavailable() -> None:
    conn = client()
    calls = [Call() for _ in range(3)]
    for call in calls:
        conn.open(BLOCK, b"", call)
    conn.lost()
    assert [c.ended for c in calls] == [[(14, "connection lost")]] * 3
    assert not conn.can_open()


def test_binary_metadata_goes_base64_and_the_deadline_in_milliseconds() -> None:
    block = h2.metadata_block([("a-bin", "é".encode()), ("b", "v")]) + h2.timeout_header(1.5)
    decoded = hpack.Decoder().decode(block)
    assert decoded == [("a-bin", "w6k"), ("b", "v"), ("grpc-timeout", "1500m")]


def test_a_remembered_indexed_block_means_what_the_current_table_says() -> None:
    conn, server = client(), Server()
    ended: list[int] = []
    for status in ("0", "0", "7", "7"):  # literal, indexed (62), literal (now 62), indexed (62)
        call = Call()
        stream = conn.open(BLOCK, b"", call)
        block = server.encoder.encode([(":status", "200"), ("grpc-status", status)])
        conn.receive(frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, block))
        ended.append(call.ended[0][0])
        if status == "0" and len(ended) == 2:
            assert min(block) >= 0x80  # the remembered kind
    assert ended == [0, 0, 7, 7]


def test_start_sends_the_block_and_its_metadata_as_open_would_in_one_write() -> None:
    """``start`` (the fast path: one join of both frames) says what ``open`` of the
    whole block says, byte for byte."""
    metadata = h2.metadata_block([("wsgate-request-id", "r-1")])
    one, other = client(), client()
    assert one.start(BLOCK, metadata, b"req", Call()) is not None
    other.open(BLOCK + metadata, b"req", Call())
    data = one.data_to_send()
    assert data == other.data_to_send()
    assert frames(data) == [
        (h2.HEADERS, h2.END_HEADERS, 1, BLOCK + metadata),
        (h2.DATA, h2.END_STREAM, 1, grpc_message(b"req")),
    ]


def test_start_splits_a_block_over_the_peers_frame_size_into_continuations() -> None:
    conn = client()
    metadata = h2.metadata_block([("x-big", "v" * 20_000)])
    conn.start(BLOCK, metadata, b"req", Call())
    sent = frames(conn.data_to_send())
    assert [(f[0], f[1]) for f in sent] == [
        (h2.HEADERS, 0), (h2.CONTINUATION, h2.END_HEADERS), (h2.DATA, h2.END_STREAM),
    ]  # fmt: skip
    assert sent[0][3] + sent[1][3] == BLOCK + metadata


def test_start_is_none_when_no_stream_can_open_and_open_then_raises() -> None:
    conn = client()
    conn.receive(frame(h2.SETTINGS, 0, 0, (3).to_bytes(2, "big") + (1).to_bytes(4, "big")))
    assert conn.start(BLOCK, b"", b"", Call()) is not None
    assert not conn.can_open()
    assert conn.start(BLOCK, b"", b"", Call()) is None
    with pytest.raises(RuntimeError):
        conn.open(BLOCK, b"", Call())
    assert len(conn.streams) == 1


@pytest.mark.parametrize(
    ("answer", "details"),
    [
        (lambda sid, s: frame(h2.DATA, 0, sid, grpc_message(b"x")), "DATA before HEADERS"),
        (
            lambda sid, s: s.headers(sid, [(":status", "200")])
            + frame(h2.DATA, 0, sid, b"\x01" + grpc_message(b"x")[1:]),
            "compressed message without an agreed encoding",
        ),
        (
            lambda sid, s: s.headers(sid, [(":status", "200")]) + s.headers(sid, [("a", "b")]),
            "a second header block without END_STREAM",
        ),
    ],
)
def test_an_answer_out_of_order_ends_the_call_internal_and_resets_the_stream(
    answer: object, details: str
) -> None:
    conn, server, call = client(), Server(), Call()
    stream = conn.open(BLOCK, b"req", call)
    conn.data_to_send()
    conn.receive(answer(stream.id, server))  # type: ignore[operator]
    assert call.messages == [] and call.ended == [(13, details)]
    assert frames(conn.data_to_send())[-1][:3] == (h2.RST_STREAM, 0, stream.id)
    assert conn.streams == {}
