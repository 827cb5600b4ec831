"""permessage-deflate's codec (RFC 7692) without sockets: the offer, the shared compressor, the inflater."""

from __future__ import annotations

import os
import zlib

import pytest

from wsgate.transport.deflate import Inflater, SharedDeflater, negotiate, shared_deflater

BASE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize(
    ("offers", "expected"),
    [
        (["permessage-deflate"], (15, BASE)),
        (["permessage-deflate; client_max_window_bits"], (15, BASE)),
        (["permessage-deflate; client_max_window_bits=9"], (15, BASE)),
        (["permessage-deflate; server_no_context_takeover"], (15, BASE)),
        (["permessage-deflate; client_no_context_takeover"], (15, BASE)),
        (["Permessage-Deflate ; Server_Max_Window_Bits = 10"], (10, BASE + "; server_max_window_bits=10")),
        (['permessage-deflate; server_max_window_bits="9"'], (9, BASE + "; server_max_window_bits=9")),
        (["x-webkit-deflate-frame, permessage-deflate"], (15, BASE)),
        (["x-webkit-deflate-frame", "permessage-deflate"], (15, BASE)),
        # §5.1: a declined offer is skipped, the next one may be accepted.
        (["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12"],
         (12, BASE + "; server_max_window_bits=12")),
    ],
)  # fmt: skip
def test_accepted_offers(offers: list[str], expected: tuple[int, str]) -> None:
    assert negotiate(offers) == expected


@pytest.mark.parametrize(
    "offer",
    [
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot keep to 256 bytes
        "permessage-deflate; server_max_window_bits",  # a value is required
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=ten",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; unknown_param",
        "permessage-deflate; =15",
    ],
)
def test_declined_offers(offer: str) -> None:
    assert negotiate([offer]) is None


def _inflate(frame: bytes, bits: int = 15) -> tuple[int, bytes]:
    """(first byte, inflated payload) of an unmasked short server frame."""
    n = frame[1]
    header = 2 if n < 126 else 4 if n == 126 else 10
    payload = frame[header:]
    return frame[0], zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff")


def test_shared_deflater_compresses_once_per_payload_object() -> None:
    deflater = SharedDeflater(15)
    payload = b'{"type":"chat/SAY","payload":{"text":"' + b"hello " * 50 + b'"}}'
    frame = deflater.text_frame(payload)
    first, data = _inflate(frame)
    assert first == 0xC1  # FIN, RSV1, text
    assert data == payload
    assert len(frame) < len(payload)
    assert deflater.text_frame(payload) is frame  # the fan-out's N members: one compression
    equal = bytes(bytearray(payload))
    again = deflater.text_frame(equal)
    assert again is not frame and again == frame  # an equal object is compressed again


def test_no_context_is_kept_between_messages() -> None:
    """server_no_context_takeover: each message inflates alone, with a fresh inflater."""
    deflater = SharedDeflater(15)
    text = b"the same words again and again " * 20
    deflater.text_frame(text)
    second = deflater.text_frame(bytes(bytearray(text)))
    assert _inflate(second) == (0xC1, text)


def test_window_bits_are_kept() -> None:
    """A 2 KiB block repeated 4 times: a 1 KiB window cannot point back to the last copy.

    (zlib's inflate does not check distances against its window, so the
    window shows in the size: 15 bits find the repeats, 10 bits cannot.)
    """
    block = os.urandom(1024).hex().encode()
    payload = block * 4
    narrow = shared_deflater(10).text_frame(payload)
    wide = shared_deflater(15).text_frame(payload)
    assert _inflate(narrow, bits=10) == (0xC1, payload)
    assert _inflate(wide) == (0xC1, payload)
    assert len(narrow) > 3 * len(wide)


def test_every_message_is_compressed_even_empty_or_incompressible() -> None:
    deflater = SharedDeflater(15)
    deflater.text_frame(b"x" * 100)
    assert deflater.text_frame(b"") == b"\xc1\x01\x00"  # §7.2.3.6
    assert _inflate(deflater.text_frame(b"")) == (0xC1, b"")
    assert _inflate(deflater.text_frame(b"ab")) == (0xC1, b"ab")
    noise = os.urandom(200)
    frame = deflater.binary_frame(noise)
    assert _inflate(frame) == (0xC2, noise)
    assert len(frame) <= 2 + len(noise) + 8  # a stored block: a few bytes more at most


def test_shared_deflater_per_window_is_one_object() -> None:
    assert shared_deflater(12) is shared_deflater(12)
    with pytest.raises(ValueError):
        shared_deflater(8)


def _compress(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_inflater_in_fragments() -> None:
    message = b"fragmented " * 300
    wire = _compress(message)
    inflater = Inflater(len(message))
    parts = [inflater.feed(wire[i : i + 7], i + 7 >= len(wire)) for i in range(0, len(wire), 7)]
    assert b"".join(p for p in parts if isinstance(p, bytes)) == message
    assert all(isinstance(p, bytes) for p in parts)


def test_inflater_refuses_a_bomb_at_the_limit() -> None:
    bomb = _compress(bytes(10 << 20))  # 10 MiB of zeros, about 10 KiB on the wire
    assert len(bomb) < 20_000
    assert Inflater(65536).feed(bomb, True) == 1009
    assert Inflater(10 << 20).feed(bomb, True) == bytes(10 << 20)
    exact = _compress(bytes(1000))
    assert Inflater(1000).feed(exact, True) == bytes(1000)
    assert Inflater(999).feed(exact, True) == 1009


def test_inflater_limit_counts_every_fragment() -> None:
    """1,500 bytes in the first frame pass a 2,000-byte limit; 1,500 more do not."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    part = os.urandom(750).hex().encode()
    first = z.compress(part) + z.flush(zlib.Z_SYNC_FLUSH)  # a frame ends on a flush
    second = (z.compress(part) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    inflater = Inflater(2000)
    assert inflater.feed(first, False) == part
    assert inflater.feed(second, True) == 1009
    again = Inflater(3000)
    assert again.feed(first, False) == part
    assert again.feed(second, True) == part


def test_inflater_refuses_garbage() -> None:
    assert Inflater(1000).feed(b"\xff\xff\xff\xff", True) == 1007
