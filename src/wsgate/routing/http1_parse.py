"""The HTTP/1.1 answer parser: bytes in, complete answers out. No I/O.

:class:`AnswerParser` holds the state of reading answers on one connection
(:class:`~wsgate.routing.http1_conn.Conn` is one; a test can be another). Call
:meth:`AnswerParser.feed` with the bytes as they arrive; for each complete
answer it calls :meth:`AnswerParser._finish`, which the subclass implements
and which must set :attr:`AnswerParser.state`: :data:`HEAD` to read another
answer, :data:`IDLE` when it expects none, :data:`DEAD` to read no more.

The parser is small and strict: status line, header lines (no obsolete line
folding, at most :data:`MAX_HEAD` bytes of them), a body by
``Content-Length``, ``Transfer-Encoding: chunked`` or, without either, until
the server closes (for a ``200``; any other status is the whole answer then,
and ``close_after`` is set); ``1xx`` answers are skipped; ``204``/``304``
have no body. A body over ``max_body`` is not read: ``_finish(None)``.

Anything else raises :class:`~wsgate.exceptions.ProtocolError` out of
:meth:`~AnswerParser.feed`; the caller drops the connection.
"""

from __future__ import annotations

import re
from typing import Final

from wsgate.exceptions import ProtocolError

__all__ = [
    "CHUNKED",
    "DEAD",
    "EOF",
    "HEAD",
    "IDLE",
    "LENGTH",
    "MAX_HEAD",
    "AnswerParser",
    "Head",
    "parse_head",
]

MAX_HEAD: Final = 65536
"""Most bytes of a status line and headers (and of a chunked body's trailers)."""
_MAX_CHUNK_LINE: Final = 1024

# States (``AnswerParser.state``)
HEAD: Final = 0
"""Reading the head of the oldest unanswered request's answer."""
LENGTH: Final = 1
"""Reading a body of known ``Content-Length``."""
CHUNKED: Final = 2
"""Reading a chunked body."""
EOF: Final = 3
"""Reading a body that ends when the server closes."""
IDLE: Final = 4
"""No answer expected: a byte now is a protocol error."""
DEAD: Final = 5
"""Reads no more (the connection was dropped)."""

# Chunked-body positions (``need`` when not a count of data bytes)
_SIZE_LINE: Final = -1
_TRAILER: Final = -2
_DATA_CRLF: Final = -3


class AnswerParser:
    """The answer-reading state of one connection (see the module docstring)."""

    __slots__ = (
        "chunks",
        "close_after",
        "max_body",
        "need",
        "rest",
        "scan",
        "size",
        "state",
        "status",
    )

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        """Largest body read; a larger one ends as ``_finish(None)``."""
        self.state = IDLE
        self.rest = b""
        """Bytes received but not parsed yet (an incomplete head or line)."""
        self.scan = 0
        """Where to resume looking for the end of the head in ``rest``."""
        self.chunks: list[bytes] = []
        """The body read so far; ``_finish`` should clear it."""
        self.size = 0
        self.need = 0
        self.status = 0
        """The status of the answer being read (valid in ``_finish``)."""
        self.close_after = False
        """The answer being read announced (or implies) that the server closes."""

    def _finish(self, body: bytes | None) -> None:
        """The oldest answer is complete (``None``: too large, unread); set ``state``."""
        raise NotImplementedError

    def feed(self, data: bytes) -> None:
        """Parse ``data``: ``_finish`` for each complete answer; raises ProtocolError."""
        if self.rest:
            data = self.rest + data
            self.rest = b""
        while data:
            state = self.state
            if state == HEAD:
                data = self._head(data)
            elif state == LENGTH:
                data = self._length(data)
            elif state == CHUNKED:
                data = self._chunked(data)
            elif state == EOF:
                data = self._until_eof(data)
            elif state == IDLE:  # nothing asked: a confused server
                raise ProtocolError("an answer nobody asked for")
            else:  # DEAD: the rest is not read
                return

    # Each step takes the bytes at hand and returns what it left

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
        head = data[:end]
        status, length, chunked, close = _seen.get(head) or parse_head(head)
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
            self.state = CHUNKED
            self.need = _SIZE_LINE
            return rest
        if length is not None:
            if length > self.max_body:
                self._finish(None)
                return b""
            if len(rest) >= length:  # the common case: the whole answer at once
                if len(rest) == length:
                    self._finish(rest)
                    return b""
                self._finish(rest[:length])
                return rest[length:]
            self.state = LENGTH
            self.need = length
            return rest
        self.close_after = True
        if status != 200:  # only a 200's body is wanted: the status is the answer
            self._finish(b"")
            return b""
        self.state = EOF
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
        if self.size > self.max_body:
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
            if self.size > self.max_body:
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
"""Heads parsed lately: a service sends the same few heads over and over. At most
``_SEEN_MAX``, cleared whole when full. :meth:`AnswerParser._head` probes it itself
(no :func:`parse_head` frame per answer) and calls :func:`parse_head` on a miss."""
_SEEN_MAX: Final = 512


def parse_head(head: bytes) -> Head:
    """Status, Content-Length, chunked, close-after, from a response head; remembered
    in ``_seen`` (a head is parsed again only once forgotten)."""
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
