"""One keep-alive HTTP/1.1 client connection: requests out, answers matched in order.

A :class:`Conn` carries any number of requests at once (HTTP/1.1
pipelining; how many is the caller's choice, see :mod:`.http1`). A request
is queued with :meth:`Conn.queue`; the queued requests of one event-loop
iteration are written together, with one ``transport.write``, when the
client flushes (at the end of the iteration). Answers come back in request
order and are matched first in, first out.

The answer parser is small and strict: status line, header lines (no
obsolete line folding, at most 64 KiB of them), a body by ``Content-Length``,
``Transfer-Encoding: chunked`` or, without either, until the server closes
(for a ``200``; any other status is the whole answer then, and the
connection is closed); ``1xx`` answers are skipped; ``204``/``304`` have no
body. A body over ``max_response_bytes`` is not read: its call gets the
status with ``None`` for the body and the connection is dropped.

Failures reach the calls as :class:`HttpError` subclasses:

- :class:`ResponseTimeout`: a call on the connection passed its deadline.
  The connection is dropped and every call on it gets this error: the calls
  behind a stuck one would wait for it. One timer per connection, re-armed
  only when it fires (deadlines of one service grow in queue order);
- :class:`Unanswered`: the connection closed with no byte of an answer since
  the requests were written (the keep-alive race: the server closed an idle
  connection as they crossed), or after an answer that announced
  ``Connection: close`` — the server processed none of them, so the caller
  may send them again;
- :class:`Dropped`: it closed mid-answer, or after answering some of the
  calls (the others may have been processed: they are not sent again);
- :class:`ProtocolError`: the answer is not valid HTTP/1.1 as this parser
  reads it (every call on the connection fails with it);
- :class:`ConnectFailed` is raised by the pool (no connection was made).

A call whose caller gave up is detached (:meth:`Pending.abandon`): its
answer is still read, so the connection stays usable, and then discarded.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from wsgate.routing.http1 import Pool

__all__ = [
    "Conn",
    "ConnectFailed",
    "Done",
    "Dropped",
    "HttpError",
    "Pending",
    "ProtocolError",
    "ResponseTimeout",
    "Unanswered",
]

log = logging.getLogger(__name__)

MAX_HEAD: Final = 65536
"""Most bytes of a status line and headers (and of a chunked body's trailers)."""
_MAX_CHUNK_LINE: Final = 1024

# Parser states
_HEAD: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_EOF: Final = 3
_IDLE: Final = 4
_DEAD: Final = 5

# Chunked-body positions (``Conn.need`` when not a count of data bytes)
_SIZE_LINE: Final = -1
_TRAILER: Final = -2
_DATA_CRLF: Final = -3


class HttpError(Exception):
    """A failed exchange (see the subclasses)."""


class ConnectFailed(HttpError):
    """No connection: refused, DNS, TLS handshake, bad URL. Nothing was sent."""


class ResponseTimeout(HttpError):
    """No complete answer before the deadline."""


class Dropped(HttpError):
    """The connection closed before the answer was complete."""


class ProtocolError(HttpError):
    """The answer is not valid HTTP/1.1."""


class Unanswered(HttpError):
    """Closed before the server processed the request: it may be sent again."""


Done = Callable[[int, "bytes | None", "HttpError | None"], None]
"""Told the outcome of a call once: ``(status, body, None)`` or ``(0, None, error)``."""


def _ignore(status: int, body: bytes | None, exc: HttpError | None) -> None:
    """The callback of an abandoned call."""


class Pending:
    """A call written (or about to be) on a connection, waiting for its answer."""

    __slots__ = ("deadline", "done")

    def __init__(self, done: Done, deadline: float) -> None:
        self.done = done
        self.deadline = deadline

    def abandon(self) -> None:
        """The caller gave up: the answer will be read and dropped."""
        self.done = _ignore


def _tell(done: Done, status: int, body: bytes | None, exc: HttpError | None) -> None:
    try:
        done(status, body, exc)
    except Exception:
        log.exception("HTTP call callback failed")


class Conn(asyncio.Protocol):
    """One keep-alive connection to a service instance (see the module docstring)."""

    __slots__ = (
        "calls",
        "chunks",
        "close_after",
        "got",
        "idle_since",
        "need",
        "out",
        "pool",
        "reserved",
        "rest",
        "scan",
        "size",
        "state",
        "status",
        "timer",
        "timer_at",
        "transport",
    )

    def __init__(self, pool: Pool, *, reserved: int = 0) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reserved = reserved
        """Places held for a caller that opened the connection and has not queued yet."""
        self.calls: deque[Pending] = deque()
        """Calls written or queued, oldest (the one being answered) first."""
        self.out: list[bytes] = []
        """Requests queued in this loop iteration, not written yet."""
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.state = _IDLE
        self.rest = b""
        """Bytes received but not parsed yet (an incomplete head or line)."""
        self.scan = 0
        """Where to resume looking for the end of the head in ``rest``."""
        self.chunks: list[bytes] = []
        self.size = 0
        self.need = 0
        self.status = 0
        self.got = False
        """A byte of an answer arrived since the connection was last idle."""
        self.close_after = False
        self.idle_since = 0.0

    def usable(self) -> bool:
        transport = self.transport
        return self.state != _DEAD and transport is not None and not transport.is_closing()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.pool.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.conns.discard(self)
        if self.state == _DEAD:
            return
        if self.state == _EOF and self.calls:
            self._finish(b"".join(self.chunks))  # the body ends with the connection
            return  # (it announced the close: the calls behind are Unanswered)
        if not self.calls:
            self._drop(Dropped, "", abort=False)  # leaves the pool's lists
        elif not self.got:
            self._drop(Unanswered, f"closed before answering: {exc}", abort=False)
        else:
            self._drop(Dropped, f"closed mid-answer: {exc}", abort=False)

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
            self.rest = b""
        try:
            while data:
                if not self.calls:
                    if self.state != _DEAD:  # nothing asked: a confused server
                        raise ProtocolError("an answer nobody asked for")
                    return
                self.got = True
                state = self.state
                if state == _HEAD:
                    data = self._head(data)
                elif state == _LENGTH:
                    data = self._length(data)
                elif state == _CHUNKED:
                    data = self._chunked(data)
                else:  # _EOF
                    data = self._until_eof(data)
        except ProtocolError as exc:
            self._drop(ProtocolError, str(exc), abort=True)

    # Calls

    def queue(self, request: bytes, deadline: float, done: Done) -> Pending:
        """Queue ``request``; it is written when the client flushes.

        ``done`` gets the answer, never from within this call.
        """
        call = Pending(done, deadline)
        self.calls.append(call)
        if self.state == _IDLE:
            self.state = _HEAD
        out = self.out
        out.append(request)
        if len(out) == 1:
            self.pool.client.dirty(self)
        if self.timer is None or deadline < self.timer_at:
            self._arm(deadline)
        return call

    def flush(self) -> None:
        """Write the queued requests (the client's end-of-iteration flush)."""
        out = self.out
        if not out:
            return
        self.out = []
        transport = self.transport
        if self.state != _DEAD and transport is not None:
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def drop(self, exc: type[HttpError], reason: str, *, abort: bool = True) -> None:
        """Close (or abort) the connection; every call on it gets ``exc(reason)``."""
        self._drop(exc, reason, abort=abort)

    def _arm(self, deadline: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = deadline
        self.timer = self.pool.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if not self.calls or self.state == _DEAD:
            return
        first = min(call.deadline for call in self.calls)
        if first <= self.pool.loop.time():
            self._drop(ResponseTimeout, "no answer in time", abort=True)
        else:
            self._arm(first)

    def _drop(self, exc: type[HttpError], reason: str, *, abort: bool) -> None:
        if self.state == _DEAD:
            return
        self.state = _DEAD
        self.pool.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        calls = self.calls
        self.calls = deque()
        self.out = []
        self.chunks = []
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()
        for call in calls:
            _tell(call.done, 0, None, exc(reason))

    def _finish(self, body: bytes | None) -> None:
        """The oldest call's answer is complete (``None``: too large, unread)."""
        call = self.calls.popleft()
        self.chunks = []
        if body is None:
            self._drop(Dropped, "an answer ahead of it was too large", abort=True)
        elif self.close_after:
            self._drop(Unanswered, "the server announced it closes", abort=False)
        elif not self.calls:
            self.state = _IDLE
            self.got = False
            self.pool.release(self)
        else:
            self.state = _HEAD
        _tell(call.done, self.status, body, None)

    # The parser: each step takes the bytes at hand, returns what it left

    def _head(self, data: bytes) -> bytes:
        end = data.find(b"\r\n\r\n", self.scan)
        if end < 0:
            if len(data) > MAX_HEAD:
                raise ProtocolError("header block too large")
            self.scan = max(0, len(data) - 3)
            self.rest = data
            return b""
        if end > MAX_HEAD:
            raise ProtocolError("header block too large")
        self.scan = 0
        status, length, chunked, close = parse_head(data[:end])
        rest = data[end + 4 :]
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("unexpected 101")
            return rest  # an interim answer: the real one follows
        self.status = status
        self.close_after = close
        self.size = 0
        if status == 204 or status == 304:
            length, chunked = 0, False
        if chunked:
            if length is not None:
                raise ProtocolError("both Content-Length and chunked")
            self.state = _CHUNKED
            self.need = _SIZE_LINE
            return rest
        if length is not None:
            if length > self.pool.max_body:
                self._finish(None)
                return b""
            if len(rest) >= length:  # the common case: the whole answer at once
                if len(rest) == length:
                    self._finish(rest)
                    return b""
                self._finish(rest[:length])
                return rest[length:]
            self.state = _LENGTH
            self.need = length
            return rest
        self.close_after = True
        if status != 200:  # only a 200's body is wanted: the status is the answer
            self._finish(b"")
            return b""
        self.state = _EOF
        return rest

    def _length(self, data: bytes) -> bytes:
        missing = self.need - self.size
        if len(data) < missing:
            self.chunks.append(data)
            self.size += len(data)
            return b""
        self.chunks.append(data[:missing])
        self._finish(b"".join(self.chunks))
        return data[missing:]

    def _until_eof(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self.pool.max_body:
            self._finish(None)
            return b""
        self.chunks.append(data)
        return b""

    def _chunked(self, data: bytes) -> bytes:
        pos = 0
        end = len(data)
        while True:
            need = self.need
            if need > 0:  # chunk data
                take = min(need, end - pos)
                self.chunks.append(data[pos : pos + take])
                pos += take
                self.need = need - take
                if self.need:
                    return b""
                self.need = _DATA_CRLF
                continue
            if pos == end:
                return b""
            if need == _DATA_CRLF:
                if end - pos < 2:
                    self.rest = data[pos:]
                    return b""
                if data[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self.need = _SIZE_LINE
                continue
            i = data.find(b"\r\n", pos)
            if i < 0:
                if need == _SIZE_LINE and end - pos > _MAX_CHUNK_LINE:
                    raise ProtocolError("chunk size line too long")
                if end - pos > MAX_HEAD:
                    raise ProtocolError("trailers too large")
                self.rest = data[pos:]
                return b""
            line = data[pos:i]
            pos = i + 2
            if need == _TRAILER:
                if not line:
                    self.scan = 0
                    self._finish(b"".join(self.chunks))
                    return data[pos:]
                self.scan += len(line) + 2
                if self.scan > MAX_HEAD:
                    raise ProtocolError("trailers too large")
                continue
            digits = line.split(b";", 1)[0].strip()
            if not digits or len(digits) > 15 or digits.strip(b"0123456789abcdefABCDEF"):
                raise ProtocolError("bad chunk size")
            size = int(digits, 16)
            if size == 0:
                self.need = _TRAILER
                self.scan = 0  # counts trailer bytes until the head of the next answer
                continue
            self.size += size
            if self.size > self.pool.max_body:
                self._finish(None)
                return b""
            self.need = size


_HEAD_RE: Final = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?"
    rb"((?:\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\r\n]*)*)"
)
"""A whole head: the status line, then header lines ``name:value`` (names are
RFC 9110 tokens: no space before the colon, no obsolete line folding)."""
_FIELD_RE: Final = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection):([^\r\n]*)", re.IGNORECASE
)
"""The header lines that matter to the parser, in a head that matched ``_HEAD_RE``."""


Head = tuple[int, int | None, bool, bool]
"""Status, Content-Length, chunked, close-after."""

_seen: dict[bytes, Head] = {}
"""Heads parsed lately: a service sends the same few heads over and over."""
_SEEN_MAX: Final = 512


def parse_head(head: bytes) -> Head:
    """Status, Content-Length, chunked, close-after, from a response head."""
    parsed = _seen.get(head)
    if parsed is None:
        parsed = _parse_head(head)
        if len(_seen) >= _SEEN_MAX:
            _seen.clear()
        _seen[head] = parsed
    return parsed


def _parse_head(head: bytes) -> Head:
    m = _HEAD_RE.fullmatch(head)
    if m is None:
        raise ProtocolError(_why(head))
    minor, code, fields = m.groups()
    close = minor == b"0"
    length: int | None = None
    chunked = False
    for field in _FIELD_RE.finditer(fields):
        name = field.group(1).lower()
        value = field.group(2)
        if name == b"content-length":
            v = value.strip()
            if not v.isdigit() or len(v) > 18 or (length is not None and int(v) != length):
                raise ProtocolError("bad Content-Length")
            length = int(v)
        elif name == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if codings != [b"chunked"] or chunked:
                raise ProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}")
            chunked = True
        else:  # connection
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens and minor == b"0":
                close = False
    return int(code), length, chunked, close


def _why(head: bytes) -> str:
    """What is wrong with a head that did not match ``_HEAD_RE`` (for the log)."""
    lines = head.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return "bare CR or LF in the head"
    line = lines[0]
    if line[:7] == b"HTTP/1." and line[7:8] not in (b"0", b"1"):
        return f"unsupported version {line[:8]!r}"
    if _HEAD_RE.fullmatch(line) is None:
        return f"bad status line {line[:40]!r}"
    bad = next((raw for raw in lines[1:] if _HEAD_RE.fullmatch(line + b"\r\n" + raw) is None), b"")
    return f"bad header line {bad[:40]!r}"
