"""Measure: how much of a 31 MiB gRPC stream the gateway pulls while its client reads nothing.

    PYTHONPATH=src python -m tests.grpc_services.slow_reader

One process: a reflecting target, a node, and a WebSocket client with a
one-message queue that stops reading. After a 3 s window (a measuring
window, not a synchronization) it prints what the server got out and how
much the Python heap grew, then reads the whole stream to its END.
"""

from __future__ import annotations

import asyncio
import tracemalloc

import websockets

from tests.e2e.gateway import ORIGIN, Peer, make_config, running
from tests.grpc_services.server import SERVICE, ModuleServer

COUNT, SIZE = 2000, 16 * 1024
WINDOW_S = 3.0


async def main() -> None:
    async with (
        ModuleServer() as server,
        running(make_config(grpc=[{"target": server.target}])) as gw,
        websockets.connect(
            gw.url,
            additional_headers={"Cookie": gw.cookie("ada")},
            origin=ORIGIN,
            max_queue=1,
            max_size=1 << 20,
        ) as ws,
    ):
        peer = Peer(ws)
        await peer.recv()  # WELCOME
        tracemalloc.start()
        await peer.send(f"{SERVICE}/Watch", {"count": COUNT, "size": SIZE}, id="big")
        await asyncio.sleep(WINDOW_S)
        current, peak = tracemalloc.get_traced_memory()
        print(
            f"client stalled {WINDOW_S:g} s: server sent {server.sent}/{COUNT} messages "
            f"({server.sent * SIZE / 2**20:.1f} of {COUNT * SIZE / 2**20:.0f} MiB); "
            f"Python heap +{current / 2**20:.1f} MiB (peak +{peak / 2**20:.1f} MiB)"
        )
        for items in range(COUNT + 1):
            action = await peer.recv(10)
            if action["type"] == "@@wsgate/END":
                print(f"then read {items} items and END {action['payload']}")
                return
        raise AssertionError("no END")


if __name__ == "__main__":
    asyncio.run(main())
