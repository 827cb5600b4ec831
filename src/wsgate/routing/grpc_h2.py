"""The HTTP/2 client side of gRPC calls, Sans-I/O (issue 10): bytes in, calls' events and bytes out.

One :class:`H2Client` is one HTTP/2 connection (RFC 9113) to a gRPC server.
It does no I/O: the adapter (:mod:`wsgate.routing.grpc_channel`) feeds it
what the socket read (:meth:`H2Client.receive`) and writes what
:meth:`H2Client.data_to_send` returns after every call into it.

Order of calls: :meth:`H2Client.initiate` once (the connection preface and
our SETTINGS), then :meth:`H2Client.open` per call (HEADERS and the one
request message in DATA; the call's :class:`Listener` hears the rest),
:meth:`H2Client.consumed` when a paused stream's reader caught up,
:meth:`H2Client.reset` to cancel a call, :meth:`H2Client.lost` when the
socket closed. Every listener hears ``end`` exactly once.

What a gRPC client must handle, and where:

- SETTINGS are acked, PING answered (RFC 9113 §6.5, §6.7); the peer's
  ``MAX_CONCURRENT_STREAMS`` is :meth:`H2Client.can_open`'s bound, its
  ``INITIAL_WINDOW_SIZE`` and ``MAX_FRAME_SIZE`` shape what we send.
- Flow control both ways (§5.2, §6.9): request DATA waits for the peer's
  window; we grant the connection window back as DATA arrives, a stream's
  once its bytes reached an unpaused reader (a paused stream grants
  nothing, so a slow reader stops the server: back-pressure, and its queue
  is bounded by the stream window plus one message).
- HEADERS + CONTINUATION (§6.10), decoded by ``hpack`` (each block, even a
  closed stream's, so the dynamic table stays in step; ``hpack`` is the
  ``grpc`` extra's, imported with the first connection); a block over
  :data:`MAX_HEADER_BLOCK` is a connection error. Requests are encoded here
  as literals without indexing (RFC 7541 §6.2.2): no encoder state, so a
  method's pseudo-headers are one precomputed byte string.
- Answers: headers, length-prefixed messages (§ "Length-Prefixed-Message" of
  gRPC's PROTOCOL-HTTP2), trailers; or trailers only. ``grpc-status`` and
  ``grpc-message`` end the call; a non-200 ``:status`` maps like gRPC's
  http-grpc-status-mapping. A message over ``max_message`` ends the call
  ``RESOURCE_EXHAUSTED`` (and resets the stream); a frame over our
  ``MAX_FRAME_SIZE`` is a connection error.
- RST_STREAM from the peer ends its call (REFUSED_STREAM: ``UNAVAILABLE``);
  GOAWAY ends the calls above its last stream id ``UNAVAILABLE`` and makes
  the connection refuse new streams (the adapter connects anew).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from typing import Final, Protocol
from urllib.parse import unquote

__all__ = [
    "CANCEL",
    "MAX_HEADER_BLOCK",
    "STATUS_NAMES",
    "H2Client",
    "Listener",
    "Stream",
    "metadata_block",
    "metadata_name",
    "request_prefix",
    "timeout_header",
]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION: Final = 9
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes (§7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
FRAME_SIZE_ERROR: Final = 6
REFUSED_STREAM: Final = 7
CANCEL: Final = 8
COMPRESSION_ERROR: Final = 9
ENHANCE_YOUR_CALM: Final = 11

MAX_FRAME: Final = 16384
"""Our SETTINGS_MAX_FRAME_SIZE (the default): a bigger frame is a FRAME_SIZE_ERROR."""
STREAM_WINDOW: Final = 1 << 18
"""Our SETTINGS_INITIAL_WINDOW_SIZE: what one stream may have unread in the gateway."""
CONNECTION_WINDOW: Final = 1 << 22
"""The connection's receive window (granted back as DATA arrives)."""
MAX_HEADER_BLOCK: Final = 1 << 16
"""Our SETTINGS_MAX_HEADER_LIST_SIZE, and the bound on a block being assembled."""
MAX_STREAM_ID: Final = (1 << 31) - 1

_HEAD: Final = struct.Struct(">IBI")
"""A frame header (§4.1) as three fields: length << 8 | type, flags, stream id."""
_PREFIX: Final = struct.Struct(">BI")
"""A Length-Prefixed-Message's prefix: compressed flag, length."""

STATUS_NAMES: Final = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)
"""gRPC status code -> its name (``grpc.StatusCode`` names)."""

_HTTP_STATUS: Final = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
"""A non-200 ``:status`` without ``grpc-status`` (gRPC's http-grpc-status-mapping); else UNKNOWN."""

_RESET_STATUS: Final = {REFUSED_STREAM: 14, CANCEL: 1, ENHANCE_YOUR_CALM: 8}
"""The peer's RST_STREAM code -> the call's status; any other is INTERNAL."""


class Listener(Protocol):
    """What one call hears, in order: ``message`` per answer message, then ``end`` once."""

    def message(self, data: bytes) -> None:
        """One answer message (the protobuf bytes)."""

    def end(self, status: int, details: str) -> None:
        """The call is over: its gRPC status code and message (no client ever sees the message)."""


class Stream:
    """One call's HTTP/2 stream."""

    __slots__ = (
        "buffer", "headers_seen", "id", "listener", "owed", "paused", "pending", "send_window",
    )

    def __init__(self, stream_id: int, listener: Listener, send_window: int) -> None:
        self.id = stream_id
        self.listener = listener
        self.send_window = send_window
        self.pending = b""
        """Request bytes the peer's window did not take yet (at most one message)."""
        self.buffer: bytearray | None = None
        """A message being assembled (at most 5 + ``max_message`` bytes); made when one is."""
        self.headers_seen = False
        self.owed = 0
        """Bytes received and not yet granted back on the stream's window."""
        self.paused = False
        """Set by the reader's side: grant nothing until :meth:`H2Client.consumed`."""


def _int(value: int, prefix: int, first: int) -> bytes:
    """An HPACK integer with a ``prefix``-bit prefix, OR'ed into ``first`` (RFC 7541 §5.1)."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _int(len(data), 7, 0) + data


def literal(name: str | int, value: bytes) -> bytes:
    """A header field as a literal without indexing: a static-table name index or a new name."""
    if isinstance(name, int):
        return _int(name, 4, 0) + _string(value)
    return b"\x00" + _string(name.encode()) + _string(value)


def request_prefix(path: str, authority: str, tls: bool) -> bytes:
    """The header block's fixed part for calls to ``path``: pseudo-headers, content-type, te."""
    return b"".join((
        b"\x83",  # :method POST (static 3)
        b"\x87" if tls else b"\x86",  # :scheme https / http (static 7 / 6)
        literal(4, path.encode()),  # :path
        literal(1, authority.encode()),  # :authority
        literal(31, b"application/grpc"),  # content-type
        literal("te", b"trailers"),
    ))


_NAMES: dict[str, bytes] = {}
"""Metadata key -> its literal's first bytes (bounded: see :func:`metadata_block`)."""
_TIMEOUTS: dict[float, bytes] = {}
"""Deadline -> its ``grpc-timeout`` field (bounded like ``_NAMES``)."""


def metadata_name(key: str) -> bytes:
    """The first bytes of a literal without indexing named ``key``: its value's length follows."""
    name = _NAMES.get(key)
    if name is None:
        name = b"\x00" + _string(key.encode())
        if len(_NAMES) < 256:  # the gateway's keys are a dozen
            _NAMES[key] = name
    return name


def metadata_block(pairs: Iterable[tuple[str, str | bytes]]) -> bytes:
    """Call metadata as literals; a ``-bin`` key's bytes go base64 (gRPC's binary headers)."""
    out = bytearray()
    for key, value in pairs:
        name = metadata_name(key)
        if isinstance(value, bytes):
            data = base64.b64encode(value).rstrip(b"=") if key.endswith("-bin") else value
        else:
            data = value.encode()
        out += name
        n = len(data)
        out += bytes((n,)) if n < 127 else _int(n, 7, 0)
        out += data
    return bytes(out)


def timeout_header(timeout_s: float) -> bytes:
    """``grpc-timeout`` in milliseconds (at most 8 digits)."""
    field = _TIMEOUTS.get(timeout_s)
    if field is None:
        ms = min(max(1, round(timeout_s * 1000)), 99_999_999)
        field = literal("grpc-timeout", b"%dm" % ms)
        if len(_TIMEOUTS) < 256:  # one per target's timeout_ms
            _TIMEOUTS[timeout_s] = field
    return field


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return _HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


class H2Client:
    """One HTTP/2 client connection carrying gRPC calls (see the module docstring)."""

    def __init__(self, *, max_message: int) -> None:
        self.max_message = max_message
        self._out: list[bytes] = []
        """Bytes for the socket; emptied by :meth:`data_to_send` after every call."""
        self._in = bytearray()
        """Received bytes not yet a whole frame (at most one frame: 9 + MAX_FRAME)."""
        self.streams: dict[int, Stream] = {}
        """Open calls; each removed when it ends (bounded by ``can_open``)."""
        self._next_id = 1
        import hpack  # the grpc extra's: imported with the first connection

        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = MAX_HEADER_BLOCK
        self._decoded: dict[bytes, _Block] = {}
        """Header blocks of indexed fields only -> what they say, while the table stays put."""
        self._block = bytearray()
        self._block_stream = 0
        self._block_end = False
        self._peer_max_streams = 100
        """Until the peer's SETTINGS say otherwise (RFC 9113 recommends ≥ 100)."""
        self._peer_window = 65535
        self._peer_initial = 65535
        self._peer_frame = MAX_FRAME
        self._conn_owed = 0
        self.goaway: int | None = None
        """The peer's last stream id once it sent GOAWAY (no new streams)."""
        self.closed = False

    # Calls from the adapter ----------------------------------------------------

    def initiate(self) -> None:
        """The connection preface, our SETTINGS and the connection window."""
        settings = b"".join(
            key.to_bytes(2, "big") + value.to_bytes(4, "big")
            for key, value in ((2, 0), (4, STREAM_WINDOW), (6, MAX_HEADER_BLOCK))
        )
        self._out.append(PREFACE + _frame(SETTINGS, 0, 0, settings))
        self._out.append(
            _frame(WINDOW_UPDATE, 0, 0, (CONNECTION_WINDOW - 65535).to_bytes(4, "big"))
        )

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def can_open(self) -> bool:
        """Whether a new call may start now (open, no GOAWAY, ids left, under the peer's cap)."""
        return (
            not self.closed
            and self.goaway is None
            and self._next_id <= MAX_STREAM_ID
            and len(self.streams) < self._peer_max_streams
        )

    @property
    def usable(self) -> bool:
        """Whether new calls can ever start here (else the adapter connects anew)."""
        return not self.closed and self.goaway is None and self._next_id <= MAX_STREAM_ID

    def open(self, block: bytes, message: bytes, listener: Listener) -> Stream:
        """Start a call: headers ``block`` (see :func:`request_prefix`), one request message.

        Call only when :meth:`can_open` (else ``RuntimeError``); ``message`` is at most
        ``max_message`` bytes.
        """
        stream = self.start(block, b"", message, listener)
        if stream is None:
            raise RuntimeError("open() when the connection cannot open a stream")
        return stream

    def start(
        self, block: bytes, metadata: bytes, message: bytes, listener: Listener
    ) -> Stream | None:
        """:meth:`open` with headers ``block + metadata`` if :meth:`can_open`, else ``None``.

        One call for both (a call per round trip less). The common case — the
        block in one frame, the message in one within both windows — is one
        join of both frames, no frame built on its own.
        """
        if not self.can_open():
            return None
        sid = self._next_id
        self._next_id += 2
        stream = Stream(sid, listener, self._peer_initial)
        self.streams[sid] = stream
        size = len(block) + len(metadata)
        n = 5 + len(message)
        limit = self._peer_frame
        if size <= limit and n <= limit and n <= stream.send_window and n <= self._peer_window:
            stream.send_window -= n
            self._peer_window -= n
            self._out.append(b"".join((
                _HEAD.pack(size << 8 | HEADERS, END_HEADERS, sid), block, metadata,
                _HEAD.pack(n << 8 | DATA, END_STREAM, sid), _PREFIX.pack(0, n - 5), message,
            )))  # fmt: skip
            return stream
        self._send_headers(sid, block + metadata)
        stream.pending = _PREFIX.pack(0, len(message)) + message
        self._flush(stream)
        return stream

    def reset(self, stream: Stream, code: int = CANCEL) -> None:
        """Cancel ``stream`` (RST_STREAM) without telling its listener."""
        if self.streams.pop(stream.id, None) is not None and not self.closed:
            self._out.append(_frame(RST_STREAM, 0, stream.id, code.to_bytes(4, "big")))

    def consumed(self, stream: Stream) -> None:
        """A paused stream's reader caught up: unpause it and grant what it owes."""
        stream.paused = False
        if stream.owed >= STREAM_WINDOW // 4 and stream.id in self.streams:
            self._grant(stream)

    def lost(self) -> None:
        """The socket closed: every open call ends ``UNAVAILABLE``."""
        self.closed = True
        self._fail_from(0, "connection lost")

    def receive(self, data: bytes) -> None:
        """Frames from the peer; a protocol error closes the connection (GOAWAY, calls end)."""
        if self.closed:
            return
        if self._in:  # a frame's start came with the last read
            self._in += data
            buf = bytes(self._in)
            self._in.clear()
        else:  # the common case: parse the read itself, copying each payload once
            buf = bytes(data)
        pos, size = 0, len(buf)
        unpack = _HEAD.unpack_from
        try:
            while size - pos >= 9:
                head, flags, sid = unpack(buf, pos)
                length = head >> 8
                if length > MAX_FRAME:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "frame over MAX_FRAME_SIZE")
                end = pos + 9 + length
                if end > size:
                    break
                kind = head & 0xFF
                payload = buf[pos + 9 : end]
                pos = end
                if self._block_stream and kind != CONTINUATION:
                    raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION expected")
                # An answer's frames here, the rest in _frame (one frame less each).
                if kind == DATA:
                    self._data(flags, sid & MAX_STREAM_ID, payload)
                elif kind == HEADERS:
                    if flags & PADDED:
                        payload = _unpad(payload)
                    if flags & PRIORITY_FLAG:
                        payload = payload[5:]
                    self._fragment(sid & MAX_STREAM_ID, payload, flags)
                else:
                    self._frame(kind, flags, sid & MAX_STREAM_ID, payload)
        except _ConnectionError as exc:
            self._error(exc.code, exc.reason)
            return
        if pos < size and not self.closed:
            self._in += memoryview(buf)[pos:]

    # Frames ----------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        """Any frame but DATA and HEADERS (:meth:`receive` hands those on itself)."""
        if kind == CONTINUATION:
            if sid != self._block_stream or not sid:
                raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION out of place")
            self._fragment(sid, payload, flags | (END_STREAM if self._block_end else 0))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == PING:
            if not flags & ACK:
                self._out.append(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            stream = self.streams.pop(sid, None)
            if stream is not None:
                code = int.from_bytes(payload[:4], "big")
                status = _RESET_STATUS.get(code, 13)
                stream.listener.end(status, f"stream reset by the server ({code})")
        elif kind == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
            self.goaway = last if self.goaway is None else min(last, self.goaway)
            self._fail_from(last + 1, "GOAWAY")
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
        # PRIORITY and unknown frame types are ignored (§5.5).

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        self._conn_owed += n
        if self._conn_owed >= CONNECTION_WINDOW // 2:
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, self._conn_owed.to_bytes(4, "big")))
            self._conn_owed = 0
        stream = self.streams.get(sid)
        if stream is None:
            return
        if flags & PADDED:
            payload = _unpad(payload)
        stream.owed += n
        buf = stream.buffer
        whole = len(payload) >= 5 and len(payload) == 5 + _PREFIX.unpack_from(payload)[1]
        if whole and not buf:  # the common case: one whole message in one frame
            if not self._message(stream, payload[0], payload[5:]):
                return
        elif payload:
            if buf is None:
                buf = stream.buffer = bytearray()
            buf += payload
            while len(buf) >= 5:
                length = int.from_bytes(buf[1:5], "big")
                if length > self.max_message:
                    self._end(stream, 8, "answer message over the size limit", reset=True)
                    return
                if len(buf) < 5 + length:
                    break
                flag, message = buf[0], bytes(buf[5 : 5 + length])
                del buf[: 5 + length]
                if not self._message(stream, flag, message):
                    return
            if len(buf) >= 5 and int.from_bytes(buf[1:5], "big") > self.max_message:
                self._end(stream, 8, "answer message over the size limit", reset=True)
                return
        if flags & END_STREAM:
            self._end(stream, 13, "stream ended without trailers")
        elif not stream.paused and stream.owed >= STREAM_WINDOW // 4:
            self._grant(stream)

    def _message(self, stream: Stream, flag: int, message: bytes) -> bool:
        """Hand one message to the call; ``False`` if that ended it."""
        if len(message) > self.max_message:
            self._end(stream, 8, "answer message over the size limit", reset=True)
            return False
        if flag:
            self._end(stream, 13, "compressed message without an agreed encoding", reset=True)
            return False
        if not stream.headers_seen:
            self._end(stream, 13, "DATA before HEADERS", reset=True)
            return False
        stream.listener.message(message)
        return stream.id in self.streams

    def _fragment(self, sid: int, fragment: bytes, flags: int) -> None:
        block = self._block
        if len(block) + len(fragment) > MAX_HEADER_BLOCK:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "header block over the limit")
        if not flags & END_HEADERS:
            block += fragment
            self._block_stream = sid
            self._block_end = bool(flags & END_STREAM)
            return
        if block:
            block += fragment
            fragment = bytes(block)
            block.clear()
        self._block_stream = 0
        said = self._decoded.get(fragment)
        if said is None:
            said = self._decode(fragment)
        stream = self.streams.get(sid)
        if stream is None:
            return
        if not flags & END_STREAM:
            if stream.headers_seen:
                self._end(stream, 13, "a second header block without END_STREAM", reset=True)
                return
            stream.headers_seen = True  # the response headers
            if said.http is not None and said.http != "200":
                code = _HTTP_STATUS.get(int(said.http) if said.http.isdigit() else 0, 2)
                self._end(stream, code, f"HTTP status {said.http}", reset=True)
            return
        self._end(stream, said.status, said.details)  # trailers, or trailers-only

    def _decode(self, block: bytes) -> _Block:
        """Decode ``block``; remember it if it is indexed fields only (the common answer).

        A block whose every byte has the high bit set is single-byte indexed
        fields only (RFC 7541 §6.1): decoding it does not change the dynamic
        table, so while the table stays put it means the same headers. Any
        other block may change the table: the remembered blocks are dropped.
        hpack's decoding costs 10-15 µs a block, the lookup well under 1.
        """
        try:
            decoded = self._decoder.decode(block)  # (str, str) pairs: raw=False
            headers: list[tuple[str, str]] = list(decoded)  # type: ignore[arg-type]
        except Exception as exc:  # hpack's errors: the connection's table is lost
            raise _ConnectionError(COMPRESSION_ERROR, f"header block: {exc}") from None
        said = _Block(headers)
        if block and min(block) >= 0x80:
            if len(self._decoded) < 64:
                self._decoded[block] = said
        else:
            self._decoded.clear()
        return said

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS length")
        for i in range(0, len(payload), 6):
            key = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == 3:
                self._peer_max_streams = value
            elif key == 4:
                if value > MAX_STREAM_ID:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE")
                delta, self._peer_initial = value - self._peer_initial, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == 5:
                if not MAX_FRAME <= value <= (1 << 24) - 1:
                    raise _ConnectionError(PROTOCOL_ERROR, "MAX_FRAME_SIZE")
                self._peer_frame = value
        self._out.append(_frame(SETTINGS, ACK, 0, b""))
        self._flush_all()

    def _window_update(self, sid: int, payload: bytes) -> None:
        increment = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
        if sid == 0:
            self._peer_window += increment
            if self._peer_window > MAX_STREAM_ID:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._flush_all()
            return
        stream = self.streams.get(sid)
        if stream is not None:
            stream.send_window += increment
            self._flush(stream)

    # Sending ---------------------------------------------------------------------

    def _send_headers(self, sid: int, block: bytes) -> None:
        limit = self._peer_frame
        if len(block) <= limit:
            self._out.append(_frame(HEADERS, END_HEADERS, sid, block))
            return
        self._out.append(_frame(HEADERS, 0, sid, block[:limit]))
        for i in range(limit, len(block), limit):
            last = i + limit >= len(block)
            flags = END_HEADERS if last else 0
            self._out.append(_frame(CONTINUATION, flags, sid, block[i : i + limit]))

    def _flush(self, stream: Stream) -> None:
        """Send what the windows allow of ``stream``'s request; END_STREAM with its last byte."""
        data = stream.pending
        n = len(data)
        if n and n <= stream.send_window and n <= self._peer_window and n <= self._peer_frame:
            stream.send_window -= n  # the common case: the whole request in one frame
            self._peer_window -= n
            self._out.append(_frame(DATA, END_STREAM, stream.id, data))
            stream.pending = b""
            return
        while data:
            n = min(len(data), stream.send_window, self._peer_window, self._peer_frame)
            if n <= 0:
                break
            chunk, data = data[:n], data[n:]
            stream.send_window -= n
            self._peer_window -= n
            self._out.append(_frame(DATA, 0 if data else END_STREAM, stream.id, chunk))
        stream.pending = data

    def _flush_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.pending:
                self._flush(stream)

    def _grant(self, stream: Stream) -> None:
        self._out.append(_frame(WINDOW_UPDATE, 0, stream.id, stream.owed.to_bytes(4, "big")))
        stream.owed = 0

    # Ends ------------------------------------------------------------------------

    def _end(self, stream: Stream, status: int, details: str, *, reset: bool = False) -> None:
        if self.streams.pop(stream.id, None) is None:
            return
        if reset and not self.closed:
            self._out.append(_frame(RST_STREAM, 0, stream.id, CANCEL.to_bytes(4, "big")))
        stream.listener.end(status, details)

    def _fail_from(self, first: int, reason: str) -> None:
        for sid in [sid for sid in self.streams if sid >= first]:
            stream = self.streams.pop(sid)
            stream.listener.end(14, reason)

    def _error(self, code: int, reason: str) -> None:
        # The last stream id is the peer's (it opens none: push is off), so 0.
        self._out.append(_frame(GOAWAY, 0, 0, bytes(4) + code.to_bytes(4, "big")))
        self.closed = True
        self._in.clear()
        self._fail_from(0, f"connection error: {reason}")


class _Block:
    """What a decoded header block says: its ``:status``, and as trailers the call's end."""

    __slots__ = ("details", "http", "status")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        status: int | None = None
        details = ""
        http: str | None = None
        for name, value in headers:
            if name == "grpc-status":
                status = int(value) if value.isdigit() else 2
            elif name == "grpc-message":
                details = unquote(value)
            elif name == ":status" and http is None:
                http = value
        self.http = http
        """The first ``:status``, ``None`` when absent (fine for response headers)."""
        if status is None:  # as trailers: no grpc-status
            shown = http or "200"
            code = int(shown) if shown.isdigit() else 0
            status = 13 if code == 200 else _HTTP_STATUS.get(code, 2)
            details = details or f"no grpc-status (HTTP {shown})"
        self.status = status
        """As trailers: the call's gRPC status."""
        self.details = details


class _ConnectionError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


def _unpad(payload: bytes) -> bytes:
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR, "bad padding")
    return payload[1 : len(payload) - payload[0]]
