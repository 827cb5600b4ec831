"""picows' protocol, fed so that nothing after a client's close frame is parsed.

picows (2.3) parses the *next* frame of a read before it delivers the
current one. When the next frame is one it refuses, picows sends its own
close (1002) and the current frame never reaches :class:`GateListener`. Two
cases matter (Autobahn 7.1.2, 4.1.3–4.2.5):

- a second close frame in the same read as the first: picows answers 1002
  ("CLOSE for the second time") instead of our echo of the first close;
- a text message followed, in the same read, by a frame picows refuses
  (reserved opcode...): the text is never delivered, only the 1002 goes out.

:class:`GateProtocol` sits between the event loop and picows: the loop reads
into picows' own buffer (picows' ``get_buffer``, not overridden) and, in
``buffer_updated``, this class walks the frame headers of the new bytes (one
header parse per frame, state carried across reads, including a header split
between two reads) before passing them on:

- up to the first byte of a close frame, then the close frame alone; the
  bytes after a close frame (opcode 8, whatever its RSV bits: picows takes
  it for the peer's close too) are dropped, in this read and every
  later one (RFC 6455 §5.5.1: after a close, no more data frames; §1.4: the
  peer "MUST NOT send any more data frames" after its close);
- up to the first byte of a frame picows will refuse, then that frame's
  header alone (picows answers it with its 1002/1009 close); everything
  after is dropped.

The bytes are never copied on the ordinary path (the loop writes into
picows' buffer and picows reads them there); only a split copies the tail it
feeds again (at most one close frame, 131 bytes, or 14 header bytes), once
per connection.

Once picows has answered the request head (the 101 is written and
``on_ws_connected`` has run inside that read), the headers of the request
and of the 101, which picows keeps on its transport for the connection's
life, are replaced by one shared empty multidict and the request's path
by ``b""`` (memory per idle
connection: :meth:`GateProtocol._forget_handshake`).

Which frames picows refuses is copied from ``_get_next_frame_impl`` of
picows 2.3.1 (hence the pin ``picows>=2.3.1,<2.4``): an opcode other than
0, 1, 2, 8, 9, 10; a control frame without FIN or longer than 125 bytes; a
frame without the MASK bit; a non-minimal 16- or 64-bit length; a 64-bit
length with the top bit set; a data frame longer than ``max_frame_size``.
Only those exact conditions cut a read, so a frame this class lets through
is parsed by picows as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:

    class _WSProtocol(asyncio.BufferedProtocol):
        """What we use of ``picows.picows.WSProtocol`` (absent from picows.pyi)."""

        listener: object
        transport: WSTransport

        def __init__(self, *args: object) -> None: ...
        def get_buffer(self, sizehint: int) -> memoryview: ...
        def buffer_updated(self, nbytes: int) -> None: ...

else:
    from picows.picows import WSProtocol as _WSProtocol

from multidict import CIMultiDict, CIMultiDictProxy
from picows import WSAutoPingStrategy, WSTransport

from wsgate.transport.listener import GateListener, ListenerContext
from wsgate.transport.outbound import BufferedListener

__all__ = ["GateProtocol", "frame_size"]

_HTTP: Final = 0
"""Before the end of the HTTP request head (``\\r\\n\\r\\n``)."""
_FRAMES: Final = 1
"""Walking frame headers."""
_DEAD: Final = 2
"""After a client close frame or a refused frame: every byte is dropped."""
_CLOSE_REST: Final = 3
"""The rest of a client close frame (``_skip`` bytes) is still to come; then ``_DEAD``."""

HTTP_MAX_HEAD: Final = 16 * 1024
"""The request head picows takes (picows 2.3.1 ``_http_max_size``): a head
(up to the blank line) of this many bytes or more is answered 431."""
_431: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 44\r\nConnection: close\r\n\r\n"
    b"431 Request Header Fields Too Large (16 KiB)"
)

_NO_HEADERS: Final = cast("CIMultiDict[str]", CIMultiDictProxy(CIMultiDict[str]()))
"""What a connection's upgrade request and 101 hold after the handshake (read-only)."""
_SHARED: Final = {b"GET": b"GET", b"HTTP/1.1": b"HTTP/1.1"}
"""The request line's usual method and version, one object each for every connection."""

_PLAIN: Final = 0x81
"""A frame's first byte when it is a final text frame without RSV bits
(:attr:`ListenerContext.plain_read <wsgate.transport.listener.ListenerContext.plain_read>`)."""

MORE: Final = 0
""":func:`frame_size`: the header is not complete yet."""
BAD: Final = -1
""":func:`frame_size`: picows refuses this frame."""

# The first byte of a client frame: 0 a data frame (any RSV bits, FIN or not),
# 1 a ping or pong with FIN, 2 a close with FIN, 3 refused by picows (an
# opcode outside 0, 1, 2, 8, 9, 10, or a control frame without FIN).
_KIND: Final = tuple(
    0
    if b & 0x0F in (0, 1, 2)
    else 3
    if not b & 0x80 or b & 0x0F not in (8, 9, 10)
    else 2
    if b & 0x0F == 8
    else 1
    for b in range(256)
)


def frame_size(buf: memoryview | bytes, i: int, avail: int, max_frame: int) -> int:
    """The size of the client frame whose header starts at ``buf[i]``.

    ``avail`` bytes from ``i`` on are there. Returns the whole frame's size
    (header, mask, payload) for a frame picows accepts, negated for a close
    frame; :data:`MORE` when the header is not all there (at most 10 bytes
    decide); :data:`BAD` when picows refuses the frame (module docstring).
    """
    if avail < 2:
        return MORE
    kind = _KIND[buf[i]]
    b1 = buf[i + 1]
    if kind == 3 or b1 < 0x80:
        return BAD
    n = b1 & 0x7F
    if n < 126:
        if n > max_frame and not kind:
            return BAD
        return -6 - n if kind == 2 else 6 + n
    if kind:
        return BAD  # a control frame longer than 125 bytes
    if n == 126:
        if avail < 4:
            return MORE
        n = buf[i + 2] << 8 | buf[i + 3]
        if n < 126:
            return BAD
        size = 8 + n
    else:
        if avail < 10:
            return MORE
        n = int.from_bytes(buf[i + 2 : i + 10], "big")
        if n >> 63 or n < 65536:
            return BAD
        size = 14 + n
    if n > max_frame:
        return BAD
    return size


_base_get_buffer: Final[Callable[[Any, int], memoryview]] = _WSProtocol.get_buffer
_base_updated: Final[Callable[[Any, int], None]] = _WSProtocol.buffer_updated


class GateProtocol(_WSProtocol):
    """A server-side picows protocol that stops reading at the client's close.

    Built with the arguments ``picows.ws_create_server`` (2.3.1) gives its
    own protocol; see :func:`wsgate.transport.server.start_listener`.
    """

    __slots__ = ("_carry", "_ctx", "_max_frame", "_mode", "_skip")

    def __init__(
        self,
        listener_factory: Callable[..., object],
        logger: object,
        *,
        handshake_timeout: float | None,
        max_frame_size: int,
        read_buffer_init_size: int,
        enable_auto_pong: bool = True,
    ) -> None:
        # The positional arguments of WSProtocol.__init__, in the order and
        # with the defaults picows 2.3.1's ws_create_server passes them.
        super().__init__(
            None,  # host+port
            None,  # ws_path
            False,  # is_client_side
            listener_factory,
            logger,
            True,  # disconnect_on_exception
            handshake_timeout,
            False,  # enable_auto_ping (ours: heartbeat.py)
            20,  # auto_ping_idle_timeout
            20,  # auto_ping_reply_timeout
            WSAutoPingStrategy.PING_WHEN_IDLE,
            enable_auto_pong,
            max_frame_size,
            None,  # extra_headers
            read_buffer_init_size,
        )
        self._max_frame = max_frame_size
        self._mode = _HTTP
        self._skip = 0
        """Bytes before the next frame header (the rest of the current frame); in
        ``_HTTP``, bytes of the request head read before this read (one slot for both:
        memory per idle connection)."""
        self._carry = b""
        """The start of a header cut by the end of the last read (< 10 bytes),
        or the last 3 bytes of the HTTP head so far (before the upgrade)."""
        self._ctx: ListenerContext | None = None
        """The listener's context, told of plain reads; set once picows has made the
        listener (the 101), ``None`` if it is not a :class:`GateListener`."""

    # get_buffer is picows' own: uvloop reads into picows' buffer directly.
    # buffer_updated finds the bytes just read where get_buffer put them: picows'
    # get_buffer (no side effect) gives the same region again until picows'
    # own buffer_updated moves its write position, so no view is kept.

    def buffer_updated(self, nbytes: int) -> None:
        """Walk the frame headers of the new bytes (``_FRAMES``), then feed picows.

        The walk is here, not in a method of its own: it runs for every read.
        """
        if self._mode != _FRAMES:
            self._not_frames(nbytes)
            return
        p = self._skip
        if p > nbytes:
            # The whole read is inside one frame (large payloads).
            self._skip = p - nbytes
            _base_updated(self, nbytes)
            return
        view = _base_get_buffer(self, nbytes)
        max_frame = self._max_frame
        if self._carry:
            # A header began in the last read: decide it on carry + new bytes.
            carry = self._carry
            buf = carry + bytes(view[: min(nbytes, 14)])
            size = frame_size(buf, 0, len(buf), max_frame)
            p = -len(carry)
            if size == MORE:
                self._carry = buf
                _base_updated(self, nbytes)
                return
            self._carry = b""
            if size > 0:
                p += size
            else:
                self._cut(view, nbytes, p, size)
                return
        plain = p == 0  # a read that starts at a frame header (no frame of an earlier one)
        while p < nbytes:
            size = frame_size(view, p, nbytes - p, max_frame)
            if size > 0:
                plain = plain and view[p] == _PLAIN
                p += size
            elif size == MORE:
                self._carry = bytes(view[p:nbytes])
                self._skip = 0
                _base_updated(self, nbytes)
                return
            else:
                self._cut(view, nbytes, p, size)
                return
        self._skip = p - nbytes
        if plain:
            # Every frame picows delivers in this read was walked above as 0x81.
            ctx = self._ctx
            if ctx is not None:
                ctx.plain_read = True
                try:
                    _base_updated(self, nbytes)
                finally:
                    ctx.plain_read = False
                return
        _base_updated(self, nbytes)

    def _not_frames(self, nbytes: int) -> None:
        """A read in any mode but ``_FRAMES``."""
        mode = self._mode
        if mode == _HTTP:
            self._http(nbytes)
        elif mode == _CLOSE_REST:
            # The last bytes of a close frame: pass them, drop the rest.
            skip = self._skip
            if skip > nbytes:
                self._skip = skip - nbytes
                _base_updated(self, nbytes)
                return
            self._mode = _DEAD
            _base_updated(self, skip)
        # _DEAD: every byte is dropped.

    def _http(self, nbytes: int) -> None:
        """A read before the end of the request head (``_HTTP``)."""
        view = _base_get_buffer(self, nbytes)
        # picows takes the head up to the first blank line, at most 16 KiB;
        # past that it would drop TCP without a word, so we answer 431.
        carry = self._carry
        head = carry + bytes(view[: min(nbytes, HTTP_MAX_HEAD)])
        end = head.find(b"\r\n\r\n")
        if end < 0:
            seen = self._skip + nbytes
            if seen >= HTTP_MAX_HEAD:
                self._too_large()
                return
            self._skip = seen
            self._carry = head[-3:]
            _base_updated(self, nbytes)
            return
        if self._skip - len(carry) + end >= HTTP_MAX_HEAD:
            self._too_large()
            return
        self._carry = b""
        self._mode = _FRAMES
        self._skip = end + 4 - len(carry)  # the frames start after the head
        try:
            # picows answers the head (and calls on_ws_connected) in here; get_buffer
            # gives buffer_updated the same bytes again (picows has not moved them).
            self.buffer_updated(nbytes)
        finally:
            listener = self.listener
            if isinstance(listener, GateListener):
                self._ctx = listener._ctx
            self._forget_handshake()

    def _forget_handshake(self) -> None:
        """Drop the headers of the upgrade request and of our answer.

        picows keeps both messages on its transport for the connection's
        life (``WSTransport.request``/``response``, read-only attributes),
        headers in a ``CIMultiDict``: about 1.5 KB per idle connection
        (bench/README.md, idle memory). What the gateway needs of them was
        taken by the listener factory before the 101 (principal, user agent,
        subprotocol, extensions, the path); their slots are writable, so the
        headers are replaced by one shared empty, read-only multidict, the
        method and version by shared bytes, the path by ``b""``.
        """
        tr = self.transport
        if tr is None:
            return
        for message in (tr.request, tr.response):
            if message is not None:
                message.headers = _NO_HEADERS
        request = tr.request
        if request is not None:
            # picows parses a fresh bytes object of each per request (~110 B);
            # the path (~36 B) was read by the listener factory, before the 101.
            request.method = _SHARED.get(request.method, request.method)
            request.version = _SHARED.get(request.version, request.version)
            request.path = b""

    # -- the rare paths ------------------------------------------------------

    def _cut(self, view: memoryview, nbytes: int, p: int, size: int) -> None:
        """A close frame (``size`` < -1) or a refused frame (BAD) starts at ``p``.

        ``p`` may be negative: the header began in an earlier read, whose
        bytes picows already holds. Feeds the bytes before it (if any) on
        their own, so picows delivers them, then the frame (a close frame in
        full if it is all there, at most 14 bytes of a refused one).
        """
        end = p + 14 if size == BAD else p - size
        self._mode = _DEAD
        if p <= 0:
            self._flush_listener()
            _base_updated(self, min(end, nbytes))
        else:
            tail = bytes(view[p : min(end, nbytes)])
            _base_updated(self, p)
            self._flush_listener()
            self._feed(tail)
        if size != BAD and end > nbytes:
            # The rest of the close frame is in the next reads.
            self._mode = _CLOSE_REST
            self._skip = end - nbytes

    def _too_large(self) -> None:
        """The request head passed :data:`HTTP_MAX_HEAD`: 431, then close (RFC 6585 §5).

        picows never sees these bytes (it would close TCP without an
        answer); nothing is read after them.
        """
        self._mode = _DEAD
        self._carry = b""
        tr = self.transport.underlying_transport
        tr.write(_431)
        tr.close()  # after the write buffer is flushed

    def _flush_listener(self) -> None:
        """Write what the listener queued (echoes of the frames before the cut).

        picows answers a refused frame (or a close frame it finds invalid)
        with a close written at once; what our listener queued for this loop
        iteration must go out before it (RFC 6455 §5.5.1).
        """
        listener = self.listener
        if isinstance(listener, BufferedListener):
            listener.flush()

    def _feed(self, data: bytes) -> None:
        """Hand picows ``data`` as if it had just been read."""
        while data:
            view = _base_get_buffer(self, len(data))
            n = min(len(view), len(data))
            view[:n] = data[:n]
            data = data[n:]
            _base_updated(self, n)
