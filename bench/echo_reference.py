"""The round-trip reference: a bare picows echo server (design §8).

Every complete text message is sent straight back to its sender with one
``WSTransport.send`` (one frame, one write): no authentication, no JSON, no
routing, no service behind it — the floor that ``bench/roundtrip.py``
measures the gateway against. uvloop and uvloop's own TCP transport (as the
gateway), a small read buffer (2 KiB, the gateway's default). Run as a
subprocess::

    python bench/echo_reference.py --port 9001 [--read-buffer 2048]

It prints ``echo-reference: listening on ws://127.0.0.1:<port>/`` when ready
and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Final

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

__all__ = ["Echo", "main"]

_TEXT: Final = WSMsgType.TEXT
_CLOSE: Final = WSMsgType.CLOSE


class Echo(WSListener):
    """One client connection: every text message goes straight back."""

    __slots__ = ("conns", "wst")

    def __init__(self, conns: set[Echo]) -> None:
        self.conns = conns

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.wst = transport
        self.conns.add(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        op = frame.msg_type
        if op is _TEXT:
            if frame.fin:  # the bench clients never fragment
                transport.send(_TEXT, frame.get_payload_as_bytes())
        elif op is _CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.conns.discard(self)


async def serve(port: int, read_buffer: int) -> None:
    loop = asyncio.get_running_loop()
    conns: set[Echo] = set()
    server = await ws_create_server(
        lambda request: Echo(conns),
        "127.0.0.1",
        port,
        enable_auto_pong=True,
        read_buffer_init_size=read_buffer,
        backlog=1024,
        use_aiofastnet=False,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo-reference: listening on ws://127.0.0.1:{port}/", flush=True)
    await stop.wait()
    server.close()
    for conn in list(conns):
        conn.wst.disconnect(graceful=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--read-buffer", type=int, default=2048)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.read_buffer))


if __name__ == "__main__":
    main()
