"""One WebSocket connection: picows frames in, a :class:`Session` driven, frames out.

picows parses frames; everything above a single frame is ours (design §8):
message reassembly, UTF-8 validation, the size limit, the close handshake,
heartbeats, the outbound buffer, and pongs: picows' auto-pong is off, so a
pong is queued like any other frame and counts against the high-water mark,
and pings and pongs are charged to the connection's :class:`ControlLimit`.

Lifecycle, in call order::

    GateListener(ctx, principal)         # by the server's listener factory,
                                         # before the 101 response
    on_ws_connected(transport)           # after the 101: handler.open(...)
    on_ws_frame(transport, frame) ...    # each frame; complete messages go
                                         # to session.on_message / on_binary
    close(code) / peer close / failure   # close handshake (RFC 6455 §7)
    on_ws_disconnected(transport)        # socket gone: session.on_close(code),
                                         # exactly once

States: ``OPEN`` (messages flow), ``CLOSING`` (a close frame went out; only a
close frame is still awaited, everything else is ignored and ``send`` is a
no-op), ``CLOSED`` (the handshake is done or the socket is gone).

Close codes this module sends: 1000 (echo of an empty close), the peer's own
code echoed (RFC 6455 §5.5.1), 1002 (protocol error: reserved bits, bad
fragmentation, invalid close code or length; RSV1 outside the first frame of
a message, or without permessage-deflate), 1007 (text that is not UTF-8,
§8.1, or compressed data that does not inflate), 1009 (message past
``max_message_bytes``, compressed or not), 4000 (slow consumer), 4401
(unauthenticated, after an ``ERROR`` action), 4408 (heartbeat timeout), and
4429 (a flood of control frames, :mod:`wsgate.transport.control`), and
whatever :meth:`GateListener.close` is given.
"""

from __future__ import annotations

import asyncio
import codecs
import sys
import time
from collections.abc import Callable
from typing import Final

from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport

from wsgate.auth.principal import Principal
from wsgate.transport.base import ConnectionHandler, Session
from wsgate.transport.batch import ChannelBatch
from wsgate.transport.control import ControlLimit
from wsgate.transport.deflate import Inflater, SharedDeflater
from wsgate.transport.framing import _cache as _frame_cache
from wsgate.transport.framing import encode_binary_frame, encode_frame, encode_text_frame
from wsgate.transport.heartbeat import HB_IDLE, HB_STOP, HB_WAIT, HeartbeatWheel
from wsgate.transport.outbound import MAX_FRAMES, BufferedListener, OutboundContext

__all__ = [
    "CLOSE_GRACE_S",
    "MAX_USER_AGENT",
    "GateListener",
    "ListenerContext",
    "is_valid_close_code",
]

MAX_USER_AGENT: Final = 256
"""Characters of the upgrade's ``User-Agent`` kept (for ``GET /@connections/{id}``)."""

CLOSE_GRACE_S: Final = 3.0
"""How long a closing connection waits for the peer's close frame (or for its
socket to drain) before the TCP connection is aborted."""

_OPEN: Final = 0
_CLOSING: Final = 1
_CLOSED: Final = 2
_CONNECTING: Final = 3

_TEXT: Final = WSMsgType.TEXT
_BINARY: Final = WSMsgType.BINARY
_CONT: Final = WSMsgType.CONTINUATION
_CLOSE: Final = WSMsgType.CLOSE
_PONG: Final = WSMsgType.PONG
_PING: Final = WSMsgType.PING
_OP_PONG: Final = 0xA

_IDLE_CHECKS_BEFORE_PING: Final = 3
"""Checks run every heartbeat/2; a ping goes out after three checks without a
frame, i.e. after between 1 and 1.5 heartbeat intervals of silence."""

_utf8_decoder: Final = codecs.getincrementaldecoder("utf-8")

# RFC 6455 §7.4.1 and the IANA registry: 1000–1003, 1007–1014 may be sent;
# 1004 is reserved, 1005/1006/1015 must never appear in a close frame;
# 1016–2999 are reserved; 3000–4999 are for libraries and applications.
_VALID_LOW_CODES: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame (RFC 6455 §7.4)."""
    return code in _VALID_LOW_CODES or 3000 <= code <= 4999


def _close_payload(reason: str) -> bytes:
    """The reason as UTF-8, cut to fit a control frame (§5.5: ≤ 125 bytes, 2 for the code)."""
    data = reason.encode()
    if len(data) > 123:
        data = data[:123].decode(errors="ignore").encode()
    return data


class ListenerContext(OutboundContext):
    """What every connection of one listener shares (one object, one slot each)."""

    __slots__ = (
        "close_grace",
        "control",
        "handler",
        "max_message",
        "on_empty",
        "plain_read",
        "slow_closes",
        "unauthenticated_frame",
        "wheel",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        handler: ConnectionHandler,
        max_message: int,
        high_water: int,
        heartbeat_s: float,
        heartbeat_timeout_s: float,
        unauthenticated_frame: bytes,
        close_grace: float = CLOSE_GRACE_S,
        control: ControlLimit | None = None,
    ) -> None:
        super().__init__(loop, high_water)
        self.handler = handler
        self.max_message = max_message
        self.wheel: HeartbeatWheel[GateListener] = HeartbeatWheel(
            loop, heartbeat_s, heartbeat_timeout_s
        )
        self.unauthenticated_frame = unauthenticated_frame
        """The encoded ``ERROR`` (``UNAUTHENTICATED``, ``signInUrl``) sent before 4401."""
        self.close_grace = close_grace
        self.control = control
        """The budget of pings and pongs per connection; ``None``: unlimited."""
        self.on_empty: asyncio.Event | None = None
        """Set when ``connections`` becomes empty, while someone (drain) waits."""
        self.slow_closes = 0
        """Connections closed 4000 (slow consumer) by this listener (only grows; metrics)."""
        self.plain_read = False
        """Set by :class:`~wsgate.transport.protocol.GateProtocol` only while picows
        delivers the frames of one read whose every frame header starts 0x81 (final,
        uncompressed text): then :meth:`GateListener.on_ws_frame` need not ask picows.
        Here, not per connection: one loop delivers one read at a time (memory per idle
        connection)."""

    @property
    def connections(self) -> list[GateListener]:
        """Connections past the 101 whose socket is not gone yet (a copy).

        The heartbeat wheel is the one registry of them (on it from the
        handshake until the socket is gone, parked once closing).
        """
        return self.wheel.members()


class _Fragments:
    """The message being reassembled from fragments (RFC 6455 §5.4); one per
    fragmented message, made at its first fragment and dropped at its last, so
    an idle connection holds one ``None`` instead of four fields."""

    __slots__ = ("buf", "dec", "inflate", "op")

    def __init__(
        self,
        buf: bytearray,
        op: WSMsgType,
        dec: codecs.IncrementalDecoder | None,
        inflate: Inflater | None,
    ) -> None:
        self.buf = buf
        self.op = op
        self.dec = dec
        """UTF-8 check of a text message, fragment by fragment (fail fast)."""
        self.inflate = inflate
        """The inflater of a compressed message; freed with the message."""


class GateListener(BufferedListener):
    """One connection: the :class:`~wsgate.transport.base.Sink` the core sees.

    ``principal is None`` marks a connection that failed authentication: it
    gets the ``UNAUTHENTICATED`` error and a 4401 close, and no session.
    ``deflater`` is the shared compressor of a connection that negotiated
    permessage-deflate (``None``: it did not; :mod:`wsgate.transport.deflate`).
    """

    __slots__ = (
        "_active",
        "_close_timer",
        "_ctl_refused",
        "_ctl_since",
        "_ctl_tat",
        "_deflate",
        "_frag",
        "_hb_slot",
        "_idle",
        "_peer_code",
        "_ping_out",
        "_principal",
        "_session",
        "_state",
        "_user_agent",
    )

    _ctx: ListenerContext

    def __init__(
        self,
        ctx: ListenerContext,
        principal: Principal | None,
        user_agent: str = "",
        deflater: SharedDeflater | None = None,
    ) -> None:
        super().__init__(ctx)
        self._principal = principal
        # Interned: the same few agents repeat across thousands of connections
        # (CPython frees an interned string with its last reference).
        self._user_agent = sys.intern(user_agent[:MAX_USER_AGENT])
        self._active = time.time()
        """Unix time of the last message received (one clock read per message)."""
        self._session: Session | None = None
        self._state = _CONNECTING
        self._frag: _Fragments | None = None
        """The message being reassembled (RFC 6455 §5.4)."""
        self._idle = 0
        """Heartbeat checks since the last inbound frame."""
        self._ping_out = False
        self._hb_slot = -1
        self._close_timer: asyncio.TimerHandle | None = None
        self._peer_code = 1006
        """The close code the peer sent (1005 for an empty close), 1006 if none."""
        self._ctl_tat = 0.0
        """GCRA theoretical arrival time of the next control frame (loop time)."""
        self._ctl_since = 0.0
        """Start of the window in which ``_ctl_refused`` refusals were counted."""
        self._ctl_refused = 0
        self._deflate = deflater

    # -- Sink -------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue one text message; a no-op unless the connection is open.

        The fan-out's hot path: the frame cache check and :meth:`_enqueue` are
        inlined (one call per delivery instead of three).
        """
        if self._state:
            return
        ctx = self._ctx
        if ctx.flusher.batch is not None:
            ctx.flusher.settle()  # the channel's frames sent before this one go first
        deflater = self._deflate
        if deflater is None:
            cache = _frame_cache
            frame = cache.frame if data is cache.payload else encode_text_frame(data)
        else:
            # The same identity cache, in the shared compressor: one compression per fan-out.
            frame = deflater.frame if data is deflater.payload else deflater.text_frame(data)
        out = self._out
        if out is None:
            self._out = [frame]
            ctx.flusher.mark(self)
        else:
            out.append(frame)
            if len(out) > MAX_FRAMES:
                self.flush()

    def take_shared(self, data: bytes, size: int, batch: ChannelBatch) -> bool:
        """Write a channel batch's joined text frames (:mod:`wsgate.transport.batch`).

        ``data`` is the batch's plain frames; with compression, the batch's frames
        compressed by this connection's shared compressor are written instead.
        ``False`` when this connection must get the batch's actions one by one:
        it has frames of its own queued (they go first). ``True`` otherwise,
        written or, when the connection is not open, dropped, as :meth:`send`
        would have.
        """
        if self._state:
            return True
        if self._out is not None:
            return False
        deflater = self._deflate
        if deflater is not None:
            data, size = batch.compressed(deflater)
        self._write_shared(data, size)
        return True

    def send_binary(self, data: bytes) -> None:
        """Queue one binary message (Autobahn echo only); no-op unless open."""
        if self._state:
            return
        deflater = self._deflate
        frame = encode_binary_frame(data) if deflater is None else deflater.binary_frame(data)
        self._enqueue(frame)

    def close(self, code: int, reason: str = "") -> None:
        """Flush what is queued, send a close frame with ``code``, await the peer's.

        The TCP connection is closed when the peer's close frame arrives, or
        aborted after ``close_grace`` seconds. A no-op unless open.
        """
        if self._state == _OPEN:
            self._start_close(code, reason)

    # -- picows callbacks -------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._wst = transport
        self._state = _OPEN
        ctx = self._ctx
        ctx.wheel.add(self, HB_IDLE)
        principal = self._principal
        if principal is None:
            # design §3: an upgrade without a valid session gets ERROR
            # (signInUrl), then 4401 — not an HTTP error, which a browser
            # could not read.
            self._enqueue(ctx.unauthenticated_frame)
            self._start_close(4401, "unauthenticated")
            return
        self._principal = None  # the session keeps what it needs
        peer = transport.underlying_transport.get_extra_info("peername")
        self._session = ctx.handler.open(self, principal, peer[0] if peer else "")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._idle = 0
        if self._state:
            # RFC 6455 §5.5.1: after sending a close frame, only the peer's
            # close frame matters.
            if self._state == _CLOSING and frame.msg_type is _CLOSE:
                self._state = _CLOSED
                self._peer_code = self._received_code(frame)
                transport.disconnect()
            return
        if self._ctx.plain_read:
            # GateProtocol saw this frame's first byte, 0x81: FIN, no RSV bit, text. So
            # picows' enum and flag properties are not read (~2,000 instructions).
            op = _TEXT
            compressed = 0
            fin = 1
        else:
            op = frame.msg_type
            # §5.2: "MUST be 0 unless an extension is negotiated". RFC 7692 §6:
            # permessage-deflate gives RSV1 a meaning on a message's first frame
            # only, never on a control frame or a continuation (§6.1).
            compressed = frame.rsv1
            if (compressed or frame.rsv2 or frame.rsv3) and (
                frame.rsv2
                or frame.rsv3
                or self._deflate is None
                or (op is not _TEXT and op is not _BINARY)
            ):
                self._fail(1002, "reserved bits set")
                return
            fin = frame.fin
        if op is _TEXT or op is _BINARY:
            if self._frag is not None:
                # §5.4: fragments of one message must not be interleaved with
                # another data message.
                self._fail(1002, "data frame inside a fragmented message")
                return
            if frame.payload_size > self._ctx.max_message:
                self._fail(1009, "message too big")
                return
            if fin:
                if compressed:
                    data = self._inflated(Inflater(self._ctx.max_message), frame)
                    if data is None:
                        return
                else:
                    data = frame.get_payload_as_bytes()
                if op is _TEXT:
                    # A whole text message (its handling here, not in a frame of its own).
                    self._active = time.time()
                    # §8.1: a text message must be valid UTF-8. isascii() is a fast scan
                    # and covers nearly all JSON; decode only when it says no.
                    if not data.isascii():
                        try:
                            data.decode()
                        except UnicodeDecodeError:
                            self._fail(1007, "invalid UTF-8")
                            return
                    self._session.on_message(data)  # type: ignore[union-attr]
                else:
                    self._binary(data)
                return
            inflater = None
            if compressed:
                inflater = Inflater(self._ctx.max_message)
                head = self._inflated(inflater, frame)
                if head is None:
                    return
                started = bytearray(head)
            else:
                started = bytearray(frame.get_payload_as_memoryview())
            dec = _utf8_decoder() if op is _TEXT else None
            self._frag = _Fragments(started, op, dec, inflater)
            if dec is not None:
                self._check_fragment(dec, started, False)
        elif op is _CONT:
            msg = self._frag
            if msg is None:
                self._fail(1002, "continuation without a message")
                return
            buf = msg.buf
            pending = msg.inflate
            if pending is not None:
                payload: bytes | memoryview | None = self._inflated(pending, frame)
                if payload is None:
                    return
            elif len(buf) + frame.payload_size > self._ctx.max_message:
                self._fail(1009, "message too big")
                return
            else:
                payload = frame.get_payload_as_memoryview()
            buf += payload
            checker = msg.dec
            if checker is not None and not self._check_fragment(checker, payload, frame.fin):
                return
            if fin:
                data = bytes(buf)
                self._frag = None
                if msg.op is _TEXT:
                    self._session.on_message(data)  # type: ignore[union-attr]
                else:
                    self._binary(data)
        elif op is _PING:
            # §5.5.2/§5.5.3: answer with the same payload — through the
            # outbound buffer, so pongs for a peer that never reads count
            # against the high-water mark (4000) like any other frame.
            if self._charge_control():
                self._enqueue(encode_frame(_OP_PONG, frame.get_payload_as_bytes()))
        elif op is _PONG:
            if self._charge_control():
                self._ping_out = False
        elif op is _CLOSE:
            self._peer_close(frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._state = _CLOSED
        self._out = None
        if self._waiters is not None:
            self.release_waiters()
        self._frag = None
        timer = self._close_timer
        if timer is not None:
            self._close_timer = None
            timer.cancel()
        ctx = self._ctx
        wheel = ctx.wheel
        wheel.remove(self)
        if not wheel and ctx.on_empty is not None:
            ctx.on_empty.set()
        session = self._session
        if session is not None:
            self._session = None
            session.on_close(self._peer_code)

    # -- heartbeat (called by the wheel) ----------------------------------

    def heartbeat_due(self) -> int:
        """Ping after a silence, close 4408 when the ping gets no answer."""
        if self._state:
            return HB_STOP
        if self._ping_out:
            if self._idle:
                # Nothing at all since the ping (a frame resets _idle to 0).
                self._terminate(4408, "heartbeat timeout")
                return HB_STOP
            self._ping_out = False
            return HB_IDLE
        self._idle = idle = self._idle + 1
        if idle < _IDLE_CHECKS_BEFORE_PING:
            return HB_IDLE
        self._ping_out = True
        self._idle = 1  # stays non-zero unless a frame (the pong) arrives
        self._wst.send_ping()
        return HB_WAIT

    # -- internals --------------------------------------------------------

    def _charge_control(self) -> bool:
        """Charge one ping or pong (GCRA); ``False``: refused, drop it.

        More than ``abuse_refusals`` refusals within ``abuse_window_s`` close
        the connection with 4429 (:mod:`wsgate.transport.control`).
        """
        limit = self._ctx.control
        if limit is None:
            return True
        now = self._ctx.loop.time()
        tat = max(self._ctl_tat, now)
        if tat - now <= limit.tolerance:
            self._ctl_tat = tat + limit.interval
            return True
        if limit.abuse_refusals:
            if now - self._ctl_since > limit.abuse_window_s:
                self._ctl_since = now
                self._ctl_refused = 0
            self._ctl_refused += 1
            if self._ctl_refused > limit.abuse_refusals:
                self._terminate(4429, "too many control frames")
        return False

    @property
    def user_agent(self) -> str:
        return self._user_agent

    @property
    def last_active(self) -> float:
        return self._active

    def _binary(self, data: bytes) -> None:
        self._active = time.time()
        session = self._session
        echo: Callable[[bytes], None] | None = getattr(session, "on_binary_message", None)
        if echo is not None:
            echo(data)
        else:
            session.on_binary()  # type: ignore[union-attr]

    def _inflated(self, inflater: Inflater, frame: WSFrame) -> bytes | None:
        """One frame's payload inflated; ``None`` after closing 1009 or 1007."""
        out = inflater.feed(frame.get_payload_as_memoryview(), frame.fin)
        if isinstance(out, int):
            self._fail(out, "message too big" if out == 1009 else "invalid compressed data")
            return None
        return out

    def _check_fragment(
        self, dec: codecs.IncrementalDecoder, payload: bytes | bytearray | memoryview, final: bool
    ) -> bool:
        # §8.1 allows failing as soon as the bytes so far cannot be UTF-8.
        try:
            dec.decode(payload, final)
        except UnicodeDecodeError:
            self._fail(1007, "invalid UTF-8")
            return False
        return True

    @staticmethod
    def _received_code(frame: WSFrame) -> int:
        # §7.1.5: a close frame without a code means 1005 (no status received).
        if frame.payload_size < 2:
            return 1005
        return int.from_bytes(frame.get_payload_as_memoryview()[:2], "big")

    def _peer_close(self, frame: WSFrame) -> None:
        """The peer started the close handshake: answer it, then close TCP."""
        self._ctx.flusher.settle()  # a channel's frames sent before go out before the close
        wst = self._wst
        self._state = _CLOSED
        self._frag = None
        code = self._received_code(frame)
        self._peer_code = code
        if code == 1005:
            reply = 1000
        elif frame.payload_size == 1 or not is_valid_close_code(code):
            reply = 1002  # §5.5.1 (a 1-byte body has no code) and §7.4
        else:
            # picows already refused a reason that is not UTF-8 (1007).
            reply = code  # §5.5.1: "typically echoing the status code it received"
        self.flush()
        wst.send_close(WSCloseCode(reply))
        # §7.1.1: the server should close the TCP connection first.
        wst.disconnect()

    def _start_close(self, code: int, reason: str) -> None:
        """Flush, send our close frame, and wait for the peer's (bounded)."""
        self._ctx.flusher.settle()  # a channel's frames sent before go out before the close
        self._state = _CLOSING
        self._frag = None
        self.flush()
        self._wst.send_close(WSCloseCode(code), _close_payload(reason))
        self._close_timer = self._ctx.loop.call_later(self._ctx.close_grace, self._abort)

    def _fail(self, code: int, reason: str) -> None:
        """_Fail the WebSocket Connection_ (§7.1.7) for a peer's protocol error."""
        self._start_close(code, reason)

    def _terminate(self, code: int, reason: str) -> None:
        """Close a peer that does not read or answer: close frame, then disconnect.

        Pending frames are dropped; the socket is closed once what the
        transport holds is written, or aborted after ``close_grace``.
        """
        self._state = _CLOSING
        self._out = None
        self._frag = None
        wst = self._wst
        wst.send_close(WSCloseCode(code), _close_payload(reason))
        wst.disconnect()
        if self._close_timer is None:
            self._close_timer = self._ctx.loop.call_later(self._ctx.close_grace, self._abort)

    def _overflow(self) -> None:
        if self._state == _OPEN:
            self._ctx.slow_closes += 1
            self._terminate(4000, "slow consumer")

    def _abort(self) -> None:
        self._close_timer = None
        self._wst.underlying_transport.abort()
