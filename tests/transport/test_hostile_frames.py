"""Hostile raw WebSocket frames against a live node (docs/hardening.md).

Hypothesis builds byte streams by hand — random opcodes (reserved ones
included), RSV bits, FIN off on control frames, unmasked frames, control
frames past 125 bytes, continuations without a message, data frames inside
a fragmented message, non-minimal and lying lengths, lengths past
``max_message_bytes`` or with the top bit set, truncated headers, invalid
UTF-8 in text frames and close reasons, close frames with bad codes or a
1-byte payload — and sends them over a raw socket on 127.0.0.1 to a real
node, after its WELCOME. Then a ``@@wsgate/PING`` text frame follows. For
each stream:

- the server answers with a close frame whose code is documented for the
  case (1002, 1007, 1009, or the echo of a valid close we sent), then drops
  TCP once we answer; or it keeps serving (the PING gets its PONG); or,
  only when the stream stopped inside a frame (the server rightly waits for
  the rest), it stays silent — every read is bounded;
- the server never drops TCP without a close frame;
- a second, well-behaved client still gets PONG for its PING;
- nothing is logged at ERROR (an unhandled exception in the log is a bug).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.gateway import ORIGIN, Running
from tests.e2e.test_hostile import LogTrap, NodeThread, Prober, hostile_config, trapped_logs

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 4096  # small, so "too big" frames are cheap to send
READ_TIMEOUT = 6.0  # generous: a loaded CI machine must not turn a slow answer into a failure
SILENT_WAIT = 0.3  # how long a server waiting for the rest of a frame is given
VALID_CLOSE = {*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)}  # transport.md
PROBE = b'{"type":"@@wsgate/PING","payload":"probe","meta":{"id":"probe"}}'

pytestmark = pytest.mark.timeout(120)


# --- frames -------------------------------------------------------------------------


@dataclass
class Frame:
    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    mask: bool = True
    length_form: str = "minimal"  # minimal | 16 | 64
    claim: int | None = None  # the length written in the header, when it lies
    cut: int | None = None  # send only this many bytes of the encoded frame

    def encode(self) -> bytes:
        n = len(self.payload) if self.claim is None else self.claim
        first = (0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode
        mbit = 0x80 if self.mask else 0
        form = self.length_form
        if form == "minimal":
            form = "7" if n < 126 else "16" if n < 65536 else "64"
        if form == "7" and n < 126:
            header = bytes((first, mbit | n))
        elif form in ("7", "16") and n < 65536:
            header = struct.pack("!BBH", first, mbit | 126, n)
        else:
            header = struct.pack("!BBQ", first, mbit | 127, n & (2**64 - 1))
        body = self.payload
        if self.mask:
            key = os.urandom(4)
            body = key + bytes(b ^ key[i % 4] for i, b in enumerate(body))
        data = header + body
        return data if self.cut is None else data[: self.cut]

    @property
    def complete(self) -> bool:
        """The encoded bytes end exactly at the end of this frame."""
        return self.cut is None and (self.claim is None or self.claim == len(self.payload))


def text(obj: object) -> bytes:
    return json.dumps(obj).encode()


INVALID_UTF8 = [
    b"\xff",
    b"\xc0\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # UTF-8-encoded lone surrogate (CESU-8)
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xe2\x82",  # truncated
    b"\x80",
    b'{"type":"x","payload":"\xfe"}',
]

payloads = st.one_of(
    st.binary(max_size=140),
    st.sampled_from(
        [
            b"",
            PROBE,
            text({"type": "@@wsgate/PING", "payload": 1}),
            b"{nope",
            b"\x00" * 8,
            *INVALID_UTF8,
            "héllo".encode(),
        ]
    ),
    st.text(max_size=60).map(str.encode),
    st.integers(MAX_MESSAGE - 2, MAX_MESSAGE + 2).map(lambda n: b"x" * n),
)

close_payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.builds(
        lambda code, reason: struct.pack("!H", code) + reason,
        st.one_of(
            st.sampled_from(
                [0, 999, 1000, 1001, 1004, 1005, 1006, 1012, 1015, 1016, 2999, 3000, 4999, 5000]
            ),
            st.integers(0, 65535),
        ),
        st.one_of(
            st.just(b""), st.sampled_from(INVALID_UTF8), st.text(max_size=40).map(str.encode)
        ),
    ),
    st.just(struct.pack("!H", 1000) + b"r" * 124),  # 126 bytes: too long for control
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    opcode = draw(
        st.one_of(
            st.sampled_from([OP_TEXT, OP_TEXT, OP_BINARY, OP_CONT, OP_CLOSE, OP_PING, OP_PONG]),
            st.integers(0, 15),
        )
    )
    payload = draw(close_payloads if opcode == OP_CLOSE else payloads)
    f = Frame(opcode, payload)
    # Mostly one thing wrong at a time, sometimes several.
    for _ in range(draw(st.integers(0, 2))):
        what = draw(
            st.sampled_from(["fin", "rsv", "mask", "form", "claim", "huge", "cut", "nothing"])
        )
        if what == "fin":
            f.fin = not f.fin
        elif what == "rsv":
            f.rsv = draw(st.integers(1, 7))
        elif what == "mask":
            f.mask = False
        elif what == "form":
            f.length_form = draw(st.sampled_from(["16", "64"]))
        elif what == "claim":
            f.claim = draw(st.integers(0, 300))
        elif what == "huge":
            f.claim = draw(
                st.sampled_from([MAX_MESSAGE + 1, 65536, 2**31, 2**40, 2**63 - 1, 2**63, 2**64 - 1])
            )
        elif what == "cut":
            f.cut = draw(st.integers(1, max(1, len(f.encode()) - 1)))
    return f


@st.composite
def streams(draw: st.DrawFn) -> list[Frame]:
    """One to four frames; sometimes a fragmented message around them."""
    body = draw(st.lists(frames(), min_size=1, max_size=4))
    if draw(st.booleans()):
        head = Frame(draw(st.sampled_from([OP_TEXT, OP_BINARY])), b'{"type":', fin=False)
        tail = Frame(OP_CONT, b'"@@wsgate/PING"}', fin=True)
        body = [head, *body, tail]
    # Nothing is sent after a frame that stops early: what follows would be its payload.
    for i, f in enumerate(body):
        if not f.complete:
            return body[: i + 1]
    return body


# --- a raw client ----------------------------------------------------------------------


class Closed(Exception):
    """The server dropped TCP."""


@dataclass
class RawConn:
    port: int
    cookie: str
    sock: socket.socket = field(init=False)
    buf: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=READ_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {ORIGIN}\r\nCookie: {self.cookie}\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        end = self.buf.index(b"\r\n\r\n") + 4
        status = bytes(self.buf[:end]).split(b" ", 2)[1]
        assert status == b"101", bytes(self.buf[:end])
        del self.buf[:end]
        op, _, data = self.recv_frame(time.monotonic() + READ_TIMEOUT)
        assert op == OP_TEXT and json.loads(data)["type"] == "@@wsgate/WELCOME", data

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise
        except OSError as exc:  # reset
            raise Closed(str(exc)) from exc
        if not chunk:
            raise Closed("EOF")
        self.buf += chunk

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def recv_frame(self, deadline: float) -> tuple[int, bool, bytes]:
        b0, b1 = self._take(2, deadline)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2, deadline))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8, deadline))
        assert n <= 1 << 20, n
        return b0 & 0x0F, bool(b0 & 0x80), self._take(n, deadline)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:  # the server may close while we write
            raise Closed(str(exc)) from exc

    def expect_eof(self, timeout: float = READ_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        try:
            for _ in range(100_000):
                self._fill(deadline)
                self.buf.clear()
        except Closed:
            return
        raise AssertionError("no EOF")

    def close(self) -> None:
        self.sock.close()


# --- the outcome -------------------------------------------------------------------------


def allowed_close_codes(stream: list[Frame]) -> set[int]:
    codes = {1002, 1007, 1009}
    for f in stream:
        if f.opcode == OP_CLOSE and len(f.payload) >= 2:
            codes.add(struct.unpack("!H", f.payload[:2])[0])  # the echo of our close
        elif f.opcode == OP_CLOSE and not f.payload:
            codes.add(1000)
    return codes


def outcome(conn: RawConn, stream: list[Frame]) -> str:
    """Send ``stream`` then a PING; return ``"alive"``, ``"closed <code>"`` or ``"silent"``."""
    complete = all(f.complete for f in stream)
    try:
        for f in stream:
            conn.send(f.encode())
        if complete:
            conn.send(Frame(OP_TEXT, PROBE).encode())
    except Closed:
        pass  # read what the server said before it went away
    deadline = time.monotonic() + (READ_TIMEOUT if complete else SILENT_WAIT)
    try:
        for _ in range(10_000):
            op, _fin, data = conn.recv_frame(deadline)
            if op == OP_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                assert code in allowed_close_codes(stream), f"close {code} for {stream}"
                if len(data) > 2:
                    data[2:].decode()  # the reason is UTF-8
                try:  # answer the close; the server then drops TCP (bounded)
                    conn.send(Frame(OP_CLOSE, struct.pack("!H", 1000)).encode())
                except Closed:
                    return f"closed {code}"
                conn.expect_eof()
                return f"closed {code}"
            if op == OP_TEXT and b'"inReplyTo":"probe"' in data:
                assert json.loads(data)["type"] == "@@wsgate/PONG", data
                return "alive"
            assert op in (OP_TEXT, OP_PONG), (op, data)
            if op == OP_TEXT:
                answer = json.loads(data)
                if answer["type"] == "@@wsgate/ERROR":
                    assert answer["payload"]["code"] in ("BAD_REQUEST", "TOO_LARGE", "NO_ROUTE")
    except Closed:
        raise AssertionError(f"TCP dropped without a close frame after {stream}") from None
    except TimeoutError:
        assert not complete, f"no PONG and no close after complete frames {stream}"
        return "silent"
    raise AssertionError("endless frames")


# --- the tests ----------------------------------------------------------------------------


@pytest.fixture
def node() -> Iterator[Running]:
    config = hostile_config(server={"max_message_bytes": MAX_MESSAGE})
    with NodeThread(config) as gw:
        yield gw


@pytest.fixture
def trap() -> Iterator[LogTrap]:
    with trapped_logs() as t:
        yield t


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def test_hostile_frames_are_closed_with_a_documented_code(node: Running, trap: LogTrap) -> None:
    port = node.node.listener.port  # type: ignore[union-attr]
    cookie = node.cookie("mallory")
    bystander = Prober(node, "bob")
    seen: dict[str, int] = {}

    @FUZZ
    @given(streams())
    def one(stream: list[Frame]) -> None:
        conn = RawConn(port, cookie)
        try:
            result = outcome(conn, stream)
        finally:
            conn.close()
        seen[result.split()[0]] = seen.get(result.split()[0], 0) + 1
        assert bystander.exchange('{"type":"@@wsgate/PING","payload":0}')[0]["type"] == (
            "@@wsgate/PONG"
        )
        trap.check()

    try:
        one()
    finally:
        bystander.close()
    trap.check()
    assert bystander.connections == 1
    assert seen.get("closed") and seen.get("alive"), seen


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        ([Frame(OP_TEXT, b"{}", rsv=4)], 1002),
        ([Frame(3)], 1002),
        ([Frame(0xB)], 1002),
        ([Frame(OP_CONT, b"x")], 1002),
        ([Frame(OP_TEXT, b"{", fin=False), Frame(OP_TEXT, b"}")], 1002),
        ([Frame(OP_PING, b"p", fin=False)], 1002),
        ([Frame(OP_PING, b"p" * 126)], 1002),
        ([Frame(OP_TEXT, PROBE, mask=False)], 1002),
        ([Frame(OP_TEXT, b"x", length_form="16")], 1002),
        ([Frame(OP_TEXT, b"x", claim=2**63)], 1002),
        ([Frame(OP_TEXT, b"\xed\xa0\x80")], 1007),
        ([Frame(OP_TEXT, b"\xc0\xaf")], 1007),
        ([Frame(OP_TEXT, b"ok \xff", fin=False)], 1007),  # fails fast
        ([Frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff")], 1007),
        ([Frame(OP_CLOSE, b"\x03")], 1002),
        ([Frame(OP_CLOSE, struct.pack("!H", 1005))], 1002),
        ([Frame(OP_CLOSE, struct.pack("!H", 999))], 1002),
        ([Frame(OP_CLOSE, struct.pack("!H", 5000))], 1002),
        ([Frame(OP_CLOSE, struct.pack("!H", 4000))], 4000),
        ([Frame(OP_TEXT, b"x" * (MAX_MESSAGE + 1))], 1009),
        ([Frame(OP_TEXT, b"", claim=2**40)], 1009),
        ([Frame(OP_TEXT, b"x" * 3000, fin=False), Frame(OP_CONT, b"x" * 3000)], 1009),
    ],
)
def test_each_bad_frame_gets_its_close_code(
    node: Running, trap: LogTrap, stream: list[Frame], code: int
) -> None:
    port = node.node.listener.port  # type: ignore[union-attr]
    conn = RawConn(port, node.cookie("mallory"))
    try:
        for f in stream:
            f.cut = None
        assert outcome(conn, stream) == f"closed {code}"
    finally:
        conn.close()
    trap.check()


def test_binary_and_garbage_text_keep_the_connection(node: Running, trap: LogTrap) -> None:
    port = node.node.listener.port  # type: ignore[union-attr]
    conn = RawConn(port, node.cookie("mallory"))
    try:
        for stream in (
            [Frame(OP_BINARY, b"\x00\x01")],
            [Frame(OP_TEXT, b"{nope")],
            [Frame(OP_PONG, b"unsolicited")],
            [Frame(OP_PING, b"p" * 125)],
            [Frame(OP_TEXT, b"", fin=False), Frame(OP_PING), Frame(OP_CONT, b"{}")],
            [Frame(OP_TEXT, b"x" * MAX_MESSAGE)],
        ):
            assert outcome(conn, stream) == "alive", stream
    finally:
        conn.close()
    trap.check()
