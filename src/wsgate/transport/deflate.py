"""permessage-deflate (RFC 7692): the offer, one shared compressor, a bounded inflater.

Three parts, each used by the listener at one point of a connection's life:

- :func:`negotiate` reads the client's ``Sec-WebSocket-Extensions`` offers at
  the handshake and returns the :class:`Agreement` the 101 answers with, or
  ``None`` (no compression on this connection). The answer always carries
  ``server_no_context_takeover`` (§7.1.1.1 lets a server add it to any
  offer) and ``client_no_context_takeover`` (§7.1.1.2: likewise), so
  neither side keeps a compression context between messages.
- :class:`SharedDeflater` compresses every outbound message. Because the server
  takes over no context, a message's compressed bytes do not depend on the
  connection: a fan-out compresses an action once and hands the same frame
  to every member that negotiated compression (uWebSockets.js calls this a
  shared compressor). There is one per window size, made on first use
  (:func:`shared_deflater`): at most 7 (``server_max_window_bits`` 9–15),
  never freed, about 2^(bits+2) + 8 KiB each (zlib's deflate state).
- :class:`Inflater` decompresses one inbound message, bounded: past
  ``limit`` decompressed bytes it answers 1009 without producing more
  (deflate bombs), invalid data 1007. Since the client keeps no context, an
  inflater lives only while its message is being received (one per
  connection at most, during a fragmented message) and is freed after it.

What we decline: ``server_max_window_bits=8`` (zlib cannot make a raw
deflate stream with a 256-byte window; it silently uses 512), any offer with
an unknown or repeated parameter or an invalid value (§7.1). A declined
offer is skipped; the next one may be accepted (§5.1).

Nothing here does I/O or raises into the caller: failures are close codes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Final, NamedTuple

from wsgate.transport.framing import OP_BINARY, OP_TEXT, encode_frame

__all__ = [
    "EXTENSION",
    "Agreement",
    "Inflater",
    "SharedDeflater",
    "negotiate",
    "parse_offers",
    "shared_deflater",
]

EXTENSION: Final = "permessage-deflate"

_RSV1: Final = 0x40
"""RFC 7692 §6: RSV1 on the first frame marks a compressed message."""
_TAIL: Final = b"\x00\x00\xff\xff"
"""§7.2.1: removed from the end of a compressed message; §7.2.2: appended back."""
_LEVEL: Final = 6
"""zlib's default: compressing once per fan-out makes its cost small against N sends."""
_MEM_LEVEL: Final = 4
"""zlib's hash table of 2^11 entries, not 2^15 (memLevel 8): ``Z_FULL_FLUSH`` clears
it after every message, which at memLevel 8 doubled the cost of a 235-byte action
(callgrind: 136k instructions against 75k) for the same output on our samples."""
_WINDOWS: Final = frozenset(range(9, 16))
"""``server_max_window_bits`` we accept (8 is declined, see the module docstring)."""
_PARAMS: Final = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


class Agreement(NamedTuple):
    """The accepted offer: the window our compressor uses and the 101's header value."""

    window_bits: int
    response: str


Params = dict[str, str | None]
"""One offer's parameters: name to value (``None``: given without a value)."""


def parse_offers(headers: Iterable[str]) -> list[Params | None]:
    """Every ``permessage-deflate`` offer in ``headers``, in order (RFC 6455 §9.1).

    ``None`` stands for an offer that is malformed (a repeated parameter, a
    parameter without a name); offers of other extensions are left out.
    Parameter values may be quoted (§7.1 "quoted-string"); the quotes are removed.
    """
    offers: list[Params | None] = []
    for header in headers:
        for item in header.split(","):
            name, *params = item.split(";")
            if name.strip().lower() != EXTENSION:
                continue
            parsed: Params = {}
            for param in params:
                key, eq, value = param.partition("=")
                key = key.strip().lower()
                if not key or key in parsed:
                    offers.append(None)
                    break
                parsed[key] = value.strip().strip('"') if eq else None
            else:
                offers.append(parsed)
    return offers


def _bits(value: str | None) -> int | None:
    """A window-bits value (§7.1.2: 8–15, decimal, no leading zero), else ``None``."""
    if value is None or not value.isdigit() or value.startswith("0") or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept(params: Params) -> Agreement | None:
    """The agreement for one offer, or ``None`` to decline it (§7.1)."""
    if not params.keys() <= _PARAMS:
        return None
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in params and params[flag] is not None:
            return None
    if "client_max_window_bits" in params:
        # Without a value: the client can take a limit; with one, it keeps to
        # it anyway. Our inflater's 32 KiB window decodes any, so we set none.
        value = params["client_max_window_bits"]
        if value is not None and _bits(value) is None:
            return None
    response = f"{EXTENSION}; server_no_context_takeover; client_no_context_takeover"
    if "server_max_window_bits" not in params:
        return Agreement(15, response)
    bits = _bits(params["server_max_window_bits"])
    if bits not in _WINDOWS:
        return None
    return Agreement(bits, f"{response}; server_max_window_bits={bits}")


def negotiate(headers: Iterable[str]) -> Agreement | None:
    """The first acceptable ``permessage-deflate`` offer of the client, answered.

    ``headers`` are the values of every ``Sec-WebSocket-Extensions`` header of
    the upgrade request. ``None``: no offer we can accept (compression off).
    """
    for params in parse_offers(headers):
        if params is not None:
            agreement = _accept(params)
            if agreement is not None:
                return agreement
    return None


class SharedDeflater:
    """Compresses whole messages for every connection with this window size.

    ``text_frame(payload)`` keeps the last payload it framed and its frame:
    called again with the *same object* (``is``, as
    :func:`wsgate.transport.framing.encode_text_frame` does), it returns the
    same frame without compressing again, so a fan-out compresses once. The
    compression state is reset after every message (``Z_FULL_FLUSH``), which
    is what ``server_no_context_takeover`` promises the client (§7.1.1.1).

    Every message is sent compressed, even one that does not shrink (a few
    bytes more at worst): §6 would allow a plain frame on a compressed
    connection, but clients get that case wrong (kosoku, Autobahn's cases for
    Python 3, fails 12.x and 13.x on it), and one rule is simpler.
    """

    __slots__ = ("_zlib", "frame", "payload", "window_bits")

    def __init__(self, window_bits: int) -> None:
        self.window_bits = window_bits
        self._zlib = zlib.compressobj(_LEVEL, zlib.DEFLATED, -window_bits, _MEM_LEVEL)
        self.payload: bytes | None = None
        """The last text payload framed; kept alive so ``is`` never sees a reused id."""
        self.frame = b""

    def text_frame(self, payload: bytes) -> bytes:
        """The frame of one text message (cached for the same ``payload`` object)."""
        if payload is self.payload:
            return self.frame
        frame = self._frame(OP_TEXT, payload)
        self.payload = payload
        self.frame = frame
        return frame

    def binary_frame(self, payload: bytes) -> bytes:
        """The frame of one binary message (the Autobahn echo only; not cached)."""
        return self._frame(OP_BINARY, payload)

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        z = self._zlib
        data = z.compress(payload) + z.flush(zlib.Z_FULL_FLUSH)
        # Z_FULL_FLUSH ends its output with an empty stored block, the tail that
        # §7.2.1 removes; an empty message leaves 0x00 (§7.2.3.6).
        return encode_frame(_RSV1 | opcode, data[:-4])


_deflaters: Final[dict[int, SharedDeflater]] = {}
"""One per window size (keys 9–15), made on first use, kept for the process."""


def shared_deflater(window_bits: int) -> SharedDeflater:
    """The process's compressor for ``window_bits`` (9–15, from an :class:`Agreement`)."""
    deflater = _deflaters.get(window_bits)
    if deflater is None:
        if window_bits not in _WINDOWS:
            raise ValueError(f"window bits {window_bits} not in 9..15")
        deflater = _deflaters[window_bits] = SharedDeflater(window_bits)
    return deflater


class Inflater:
    """Decompresses one inbound message, frame by frame, at most ``limit`` bytes.

    Call :meth:`feed` with each frame's payload, ``final`` on the last one;
    drop the inflater after the last frame or a failure. Each call produces
    at most the bytes still allowed plus one (zlib's ``max_length``), so a
    bomb costs at most ``limit + 1`` bytes of output before it is refused.
    """

    __slots__ = ("_left", "_zlib")

    def __init__(self, limit: int) -> None:
        self._zlib = zlib.decompressobj(-15)
        self._left = limit
        """Decompressed bytes the message may still grow by."""

    def feed(self, data: bytes | memoryview, final: bool) -> bytes | int:
        """The decompressed bytes of one frame, or a close code.

        1009: the message grew past ``limit``; 1007: the data is not deflate.
        """
        z = self._zlib
        try:
            out = z.decompress(data, self._left + 1)
            if len(out) > self._left:
                return 1009
            if final:
                # §7.2.2: append the tail that the sender removed, then flush.
                tail = z.decompress(_TAIL, self._left - len(out) + 1)
                out += tail
                if len(out) > self._left:
                    return 1009
        except zlib.error:
            return 1007
        self._left -= len(out)
        return out
