"""Test helpers: a recording handler and a raw WebSocket client.

The raw client speaks RFC 6455 by hand so tests can send what real clients
never would (reserved bits, bad fragmentation, invalid UTF-8, close codes)
and see exactly which frames come back. Every read is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wsgate.auth.principal import Principal
from wsgate.config import ServerConfig
from wsgate.transport import ControlLimit, Listener, start_listener
from wsgate.transport.base import HttpResponse, Session, Sink

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
TIMEOUT = 5.0


@dataclass
class RecordingSession:
    sink: Sink
    principal: Principal
    peer: str
    messages: list[bytes] = field(default_factory=list)
    binaries: int = 0
    closes: list[int] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    got_message: asyncio.Event = field(default_factory=asyncio.Event)
    echo: bool = False

    def on_message(self, data: bytes) -> None:
        self.messages.append(data)
        self.got_message.set()
        if self.echo:
            self.sink.send(data)

    def on_binary(self) -> None:
        self.binaries += 1

    def on_close(self, code: int) -> None:
        self.closes.append(code)
        self.closed.set()


class RecordingHandler:
    """Opens :class:`RecordingSession`s and keeps them, in order."""

    def __init__(self, echo: bool = False) -> None:
        self.sessions: list[RecordingSession] = []
        self.opened = asyncio.Event()
        self.echo = echo

    def open(self, sink: Sink, principal: Principal, peer: str) -> Session:
        session = RecordingSession(sink, principal, peer, echo=self.echo)
        self.sessions.append(session)
        self.opened.set()
        return session

    async def wait_sessions(self, n: int) -> list[RecordingSession]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.sessions) < n:
                self.opened.clear()
                await self.opened.wait()
        return self.sessions


COOKIE = "session=good"
USER = Principal(sub="u1", sid="s1", org="acme")


def cookie_auth(headers: Mapping[str, str]) -> Principal | None:
    """The fake authenticate: a principal when the Cookie header carries ``session=good``."""
    cookie = headers.get("Cookie", "")
    return USER if "session=good" in cookie else None


def config(**overrides: Any) -> ServerConfig:
    base: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "path": "/ws",
        "allowed_origins": ["http://good.example"],
    }
    base.update(overrides)
    return ServerConfig(**base)


async def serve(
    handler: RecordingHandler,
    *,
    authenticate: Callable[[Mapping[str, str]], Principal | None] = cookie_auth,
    plain_get: Callable[[str, Mapping[str, str]], HttpResponse | None] | None = None,
    control: ControlLimit | None = None,
    **overrides: Any,
) -> Listener:
    return await start_listener(
        control=control,
        handler=handler,
        config=config(**overrides),
        authenticate=authenticate,
        sign_in_url="/sign-in",
        plain_get=plain_get,
    )


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One client frame (masked, RFC 6455 §5.3); ``rsv`` is the 3 RSV bits (0–7)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, mbit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mbit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def close_frame(code: int | None = None, reason: bytes = b"") -> bytes:
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(OP_CLOSE, payload)


class RawClient:
    """A hand-rolled WebSocket client over asyncio streams.

    Every client made is listed in ``RawClient.made``; the ``start`` fixture
    closes them all after the test.
    """

    made: ClassVar[list[RawClient]] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        RawClient.made.append(self)
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.rsv = 0
        """The RSV bits (0–7) of the last frame :meth:`recv_frame` read."""

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        path: str = "/ws",
        headers: Mapping[str, str] | None = None,
        upgrade: bool = True,
        rcvbuf: int | None = None,
    ) -> RawClient:
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            import socket

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        client = cls(reader, writer)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        if upgrade:
            key = base64.b64encode(os.urandom(16)).decode()
            lines += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
        hdrs = {"Cookie": COOKIE} if headers is None else dict(headers)
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        status_line, *rest = head.decode("latin-1").split("\r\n")
        client.status = int(status_line.split(" ")[1])
        for line in rest:
            if ":" in line:
                k, v = line.split(":", 1)
                client.headers[k.strip().lower()] = v.strip()
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bool, bytes]:
        """``(opcode, fin, payload)`` of the next server frame; EOF raises IncompleteReadError."""
        async with asyncio.timeout(timeout):
            b0, b1 = await self.reader.readexactly(2)
            self.rsv = b0 >> 4 & 7
            assert not b1 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
        return b0 & 0x0F, bool(b0 & 0x80), payload

    async def recv_until_close(self, timeout: float = TIMEOUT) -> tuple[list[bytes], int | None]:
        """Data payloads until a close frame; ``(payloads, close code)``."""
        data: list[bytes] = []
        async with asyncio.timeout(timeout):
            for _ in range(1_000_000):
                op, _fin, payload = await self.recv_frame(timeout)
                if op == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return data, code
                if op in (OP_TEXT, OP_BINARY, OP_CONT):
                    data.append(payload)
        raise AssertionError("no close frame")

    async def expect_eof(self, timeout: float = TIMEOUT) -> None:
        """The server closes the TCP connection (reads until EOF, bounded)."""
        async with asyncio.timeout(timeout):
            for _ in range(100_000):
                if not await self.reader.read(65536):
                    return
        raise AssertionError("no EOF")

    async def aclose(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            pass


def record_calls(conn: Any, calls: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    """Each ``write``/``writelines`` call on ``conn``'s transport (asyncio's), with its
    argument, appended to ``calls`` (a new list by default), which is returned."""
    tr = conn._wst.underlying_transport
    assert isinstance(tr, asyncio.Transport)
    calls = [] if calls is None else calls
    real_write, real_lines = tr.write, tr.writelines
    inside = [False]  # asyncio's writelines calls write: record the outer call only

    def write(data: Any) -> None:
        if not inside[0]:
            calls.append(("write", data))
        real_write(data)

    def writelines(data: Any) -> None:
        calls.append(("writelines", list(data)))
        inside[0] = True
        try:
            real_lines(data)
        finally:
            inside[0] = False

    tr.write = write  # type: ignore[method-assign]
    tr.writelines = writelines  # type: ignore[method-assign]
    return calls
