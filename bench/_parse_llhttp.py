"""The candidate: wsgate's HTTP/1.1 answer parser rebuilt on httptools (llhttp), for the bench.

``bench/http_parse.py`` measures it against the hand-written
:mod:`wsgate.routing.http1_parse` on the same answers. It has the same
interface and behaviour (it passed tests/routing/test_routing_http1_parse.py,
test_routing_http1.py and test_routing_pipeline.py in place of it), but lost
the same-run measurement, so the gateway keeps its own (docs/routing.md).
The rest of this docstring is the one it would have had in ``src``.

:class:`AnswerParser` holds the state of reading answers on one connection
(:class:`~wsgate.routing.http1_conn.Conn` is one; a test can be another). Call
:meth:`AnswerParser.feed` with the bytes as they arrive; for each complete
answer it calls :meth:`AnswerParser._finish`, which the subclass implements
and which must set :attr:`AnswerParser.state`: :data:`HEAD` to read another
answer, :data:`IDLE` when it expects none, :data:`DEAD` to read no more.

llhttp does the parsing (strict: no obsolete line folding, no bare LF, one
``Content-Length``, not both it and ``Transfer-Encoding``); this module adds
what the gateway wants on top: HTTP/1.0 or 1.1 only; ``Transfer-Encoding``
``chunked`` or nothing; at most :data:`MAX_HEAD` bytes of status line and
headers (and of a chunked body's framing and trailers beyond ``8 x`` its
data); a body by ``Content-Length``, chunked or, without either, until the
server closes (for a ``200``: state :data:`EOF`, which the connection ends;
any other status is the whole answer then, and ``close_after`` is set);
``1xx`` answers are skipped (``101`` is an error); ``204``/``304`` have no
body. A body over ``max_body`` is not read: ``_finish(None)`` (as soon as
its ``Content-Length`` is seen).

Anything else raises :class:`~wsgate.exceptions.ProtocolError` out of
:meth:`~AnswerParser.feed`; the caller drops the connection.
"""

from __future__ import annotations

from typing import Final

import httptools

from wsgate.exceptions import ProtocolError

__all__ = ["DEAD", "EOF", "HEAD", "IDLE", "MAX_HEAD", "AnswerParser"]

MAX_HEAD: Final = 65536
"""Most bytes of a status line and headers (and of a chunked body's framing)."""
_SLICE: Final = 4096
"""Reads longer than this are fed in slices of it, so that bytes held inside
llhttp for an unfinished line are counted within one slice of the bound."""

# States (``AnswerParser.state``)
HEAD: Final = 0
"""Reading the oldest unanswered request's answer (head or framed body)."""
EOF: Final = 3
"""Reading a body that ends when the server closes."""
IDLE: Final = 4
"""No answer expected: a byte now is a protocol error."""
DEAD: Final = 5
"""Reads no more (the connection was dropped)."""


class _Stop(Exception):
    """Raised from a callback: read nothing more of this feed."""


class AnswerParser:
    """The answer-reading state of one connection (see the module docstring)."""

    __slots__ = (
        "_fed",
        "_framed",
        "_interim",
        "_parser",
        "_slice",
        "_too_big",
        "chunks",
        "close_after",
        "max_body",
        "size",
        "state",
        "status",
    )

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        """Largest body read; a larger one ends as ``_finish(None)``."""
        self.state = IDLE
        self.chunks: list[bytes] = []
        """The body read so far; ``_finish`` should clear it."""
        self.size = 0
        """Body bytes of the answer being read."""
        self.status = 0
        """The status of the answer being read (valid in ``_finish``)."""
        self.close_after = False
        """The answer being read announced (or implies) that the server closes."""
        self._parser = httptools.HttpResponseParser(self)
        self._framed = False
        self._interim = False
        self._too_big = False
        self._fed = 0
        """Bytes of the answer fed so far, but for the slice it began in (less
        ``size``: what is not body data, its head, chunk lines and trailers)."""
        self._slice = 0

    def _finish(self, body: bytes | None) -> None:
        """The oldest answer is complete (``None``: too large, unread); set ``state``."""
        raise NotImplementedError

    def feed(self, data: bytes) -> None:
        """Parse ``data``: ``_finish`` for each complete answer; raises ProtocolError."""
        if not data or self.state == DEAD:
            return
        if self.state == IDLE:  # nothing asked: a confused server
            raise ProtocolError("an answer nobody asked for")
        if len(data) <= _SLICE:
            self._feed(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), _SLICE):
            if self.state == DEAD or not self._feed(view[start : start + _SLICE]):
                return

    def _feed(self, data: bytes | memoryview) -> bool:
        """Feed one slice; ``False`` when the rest is not to be read."""
        self._slice = n = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            if isinstance(cause, _Stop):
                return False
            raise  # a bug of ours: let it show
        except httptools.HttpParserUpgrade:
            raise ProtocolError("unexpected 101") from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(_why(str(exc))) from None
        self._fed += n
        if self._fed - self.size > MAX_HEAD + 8 * self.size:
            raise ProtocolError("header block too large")
        return True

    # httptools callbacks (within feed_data)

    def on_message_begin(self) -> None:
        if self.state == IDLE:
            raise ProtocolError("an answer nobody asked for")
        if self.state == DEAD:
            raise _Stop
        self._fed = -self._slice
        self._framed = self._too_big = False
        self.size = 0
        self.chunks = []

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)  # only two names matter: compare lengths before case-folding
        if n == 14 and name.lower() == b"content-length":
            self._framed = True
            length = value.strip()
            if length.isdigit() and int(length) > self.max_body:
                self._too_big = True
        elif n == 17 and name.lower() == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if codings != [b"chunked"]:
                raise ProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}")
            self._framed = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser.get_http_version() not in ("1.1", "1.0"):
            raise ProtocolError(f"bad status line: version {parser.get_http_version()!r}")
        status = parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("unexpected 101")
            self._interim = True
            return
        self.status = status
        self.close_after = not parser.should_keep_alive()
        if self._too_big:
            self._too_large()
        if not self._framed and status != 204 and status != 304:
            self.close_after = True
            if status != 200:  # only a 200's body is wanted: the status is the answer
                self._finish(b"")
                raise _Stop
            self.state = EOF

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            self._too_large()
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self._interim:  # an interim answer: the real one follows
            self._interim = False
            return
        chunks = self.chunks
        self._finish(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self.state == DEAD:
            raise _Stop

    def _too_large(self) -> None:
        self.chunks = []
        self._finish(None)
        raise _Stop


def _why(error: str) -> str:
    """Our words for llhttp's error (the tests and the log know them)."""
    lower = error.lower()
    if "content-length" in lower:
        return f"bad Content-Length ({error})"
    if "transfer-encoding" in lower:
        return f"unsupported Transfer-Encoding ({error})"
    if "chunk" in lower:
        return f"bad chunk size ({error})"
    if "version" in lower or "status" in lower or "http/" in lower or "start line" in lower:
        return f"bad status line ({error})"
    return f"bad answer ({error})"
