"""Server-to-client frame encoding (RFC 6455 §5.2), with a fan-out cache.

A fan-out encodes one action once and hands the same ``bytes`` object to N
sinks in a row. :func:`encode_text_frame` keeps the last payload it framed and
the frame it made; when it is called again with the *same object* (compared
with ``is``, never by value, so the check costs one pointer comparison) it
returns the cached frame: N sinks, one framing.

Frames from the server are never masked (RFC 6455 §5.1: "A server MUST NOT
mask any frames that it sends to the client"), so a frame is the 2, 4 or 10
byte header followed by the payload as is, and one frame can be shared by
every connection.

The cache is a single entry per process. The gateway runs one event loop per
thread at most and frames on the loop thread, so there is no lock: a frame
made by one thread for payload ``p`` is still the right frame for ``p`` on any
other thread.
"""

from __future__ import annotations

from struct import Struct
from typing import Final

__all__ = ["OP_BINARY", "OP_TEXT", "encode_binary_frame", "encode_frame", "encode_text_frame"]

OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
_FIN: Final = 0x80

# RFC 6455 §5.2: payload length is 7 bits, or 126 + 16-bit, or 127 + 64-bit
# (network byte order). The MASK bit (0x80 of the second byte) stays 0.
_LEN16: Final = Struct("!BBH")
_LEN64: Final = Struct("!BBQ")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """Frame ``payload`` as one final (FIN=1), unmasked frame of ``opcode``.

    No cache; :func:`encode_text_frame` is the one to use for messages.
    """
    n = len(payload)
    first = _FIN | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 0x10000:
        header = _LEN16.pack(first, 126, n)
    else:
        header = _LEN64.pack(first, 127, n)
    return header + payload


class _Cache:
    """The single-entry identity cache (one payload, its frame)."""

    __slots__ = ("frame", "payload")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        """The last payload framed; kept alive so ``is`` can never see a reused id."""
        self.frame: bytes = b""


_cache: Final = _Cache()


def encode_text_frame(payload: bytes) -> bytes:
    """Return the text frame of ``payload`` (UTF-8 JSON, one message).

    Calling it again with the very same ``bytes`` object returns the same
    frame object without encoding again; a different object (even an equal
    one) replaces the cache entry.
    """
    cache = _cache
    if payload is cache.payload:
        return cache.frame
    frame = encode_frame(OP_TEXT, payload)
    cache.payload = payload
    cache.frame = frame
    return frame


def encode_binary_frame(payload: bytes) -> bytes:
    """Frame a binary message (only the Autobahn echo sends binary)."""
    return encode_frame(OP_BINARY, payload)
