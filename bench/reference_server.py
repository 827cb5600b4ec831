"""The reference: a bare picows broadcast server with coalesced writes (design §8).

Every client is in one channel, but one upgraded on a path starting with
``/idle`` (``bench/storm.py``'s storm connections, which only measure
handshakes). A text message from any client is framed once and appended to
every *other* client's outbound ``bytearray``; one ``loop.call_soon`` flush
per loop iteration then writes each dirty connection's buffer with one
``underlying_transport.write()`` (many frames, one syscall). uvloop and
uvloop's own TCP transport (like the gateway; picows would pick aiofastnet's
when installed, which costs ~5 KB more per idle connection); a small read
buffer (2 KiB, as the gateway's default).

A text message ``!pub <M> <message>`` is a server-publish command (as the
anchors in ``bench/anchors/`` take it): ``<message>`` is framed once and
appended M times to *every* member's buffer, the sender's included (the
gateway's counterpart is ``POST /v1/publish``).

No authentication, no JSON, no presence: the floor that the gateway is
measured against. Run as a subprocess::

    python bench/reference_server.py --port 9001 [--read-buffer 2048] [--aiofastnet off]

It prints ``reference: listening on ws://127.0.0.1:<port>/`` when ready and
runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from struct import Struct
from typing import Final

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

__all__ = ["Conn", "Hub", "main"]

_TEXT: Final = WSMsgType.TEXT
_CLOSE: Final = WSMsgType.CLOSE
_LEN16: Final = Struct("!BBH")
_LEN64: Final = Struct("!BBQ")
_PUB: Final = b"!pub "
_MAX_PUB: Final = 100_000


def encode_text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2): header + payload."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 0x10000:
        header = _LEN16.pack(0x81, 126, n)
    else:
        header = _LEN64.pack(0x81, 127, n)
    return header + payload


class Hub:
    """The one channel: its members, the dirty list, the once-per-iteration flush."""

    __slots__ = ("dirty", "loop", "members", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.members: dict[Conn, None] = {}
        """Insertion-ordered set of open connections."""
        self.dirty: list[Conn] = []
        self.scheduled = False

    def broadcast(self, sender: Conn | None, frame: bytes) -> None:
        """Append ``frame`` to every member's buffer but the sender's (all when ``None``)."""
        dirty = self.dirty
        for conn in self.members:
            if conn is sender:
                continue
            out = conn.out
            if out is None:
                conn.out = bytearray(frame)
                dirty.append(conn)
            else:
                out += frame
        if not self.scheduled and dirty:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """One write per dirty connection, then forget the buffers."""
        self.scheduled = False
        dirty = self.dirty
        self.dirty = []
        for conn in dirty:
            out = conn.out
            conn.out = None
            if out is not None and not conn.tr.is_closing():
                conn.tr.write(out)


class Conn(WSListener):
    """One client connection."""

    __slots__ = ("hub", "member", "out", "tr", "wst")

    def __init__(self, hub: Hub, member: bool = True) -> None:
        self.hub = hub
        self.member = member
        """In the channel (every connection but those on ``/idle``)."""
        self.out: bytearray | None = None
        """Frames not yet written this iteration (``None`` when idle)."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.wst = transport
        self.tr = transport.underlying_transport
        if self.member:
            self.hub.members[self] = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        op = frame.msg_type
        if op is _TEXT:
            if frame.fin:
                payload = frame.get_payload_as_bytes()
                if payload.startswith(_PUB):
                    self.publish(payload)
                else:
                    self.hub.broadcast(self, encode_text_frame(payload))
        elif op is _CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def publish(self, command: bytes) -> None:
        """``!pub <M> <message>``: ``<message>`` to every member M times (bad ones ignored)."""
        count, _, body = command[len(_PUB) :].partition(b" ")
        if count.isdigit() and 0 < int(count) <= _MAX_PUB:
            frame = encode_text_frame(body)
            for _ in range(int(count)):
                self.hub.broadcast(None, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.hub.members.pop(self, None)
        self.out = None


async def serve(port: int, read_buffer: int, aiofastnet: bool | None) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub(loop)
    server = await ws_create_server(
        lambda request: Conn(hub, not request.path.startswith(b"/idle")),
        "127.0.0.1",
        port,
        enable_auto_pong=True,
        read_buffer_init_size=read_buffer,
        backlog=1024,
        use_aiofastnet=aiofastnet,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"reference: listening on ws://127.0.0.1:{port}/", flush=True)
    await stop.wait()
    server.close()
    for conn in list(hub.members):
        conn.wst.disconnect(graceful=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--read-buffer", type=int, default=2048)
    parser.add_argument(
        "--aiofastnet",
        choices=("auto", "on", "off"),
        default="off",
        help="picows' transport: uvloop's (off, the default: as the gateway, which uses "
        "loop.create_server), aiofastnet's (on), or picows' default (auto)",
    )
    args = parser.parse_args()
    fast = {"auto": None, "on": True, "off": False}[args.aiofastnet]
    uvloop.run(serve(args.port, args.read_buffer, fast))


if __name__ == "__main__":
    main()
