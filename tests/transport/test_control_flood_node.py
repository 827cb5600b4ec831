"""A signed-in client flooding a real node with pings, never reading (docs/hardening.md).

The node wires ``[limits]`` into the transport's control-frame budget: with
the default limits (500/1s, burst 1000, 100 refusals) the flood is closed
after about 1,100 pings, and the process's memory (``VmRSS``) stays where it
was — before, 200,000 pings were all answered into an unbounded buffer.
"""

from __future__ import annotations

import asyncio

from tests.e2e.gateway import ORIGIN, make_config, running
from tests.helpers import eventually
from tests.transport.helpers import OP_PING, RawClient, frame

MAX_PINGS = 200_000
BATCH = 100


def rss_bytes() -> int:
    """This process's resident set (the node runs in it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_ping_flood_on_a_node_is_closed_and_memory_stays_put() -> None:
    async with running(make_config()) as gw:
        listener = gw.node.listener
        assert listener is not None
        client = await RawClient.connect(
            gw.node.port, headers={"Cookie": gw.cookie("u1"), "Origin": ORIGIN}, rcvbuf=4096
        )
        try:
            assert client.status == 101
            await eventually(lambda: listener.connection_count >= 1, every=0.001, what="the connection")
            before = rss_bytes()
            one = frame(OP_PING, b"p" * 125)
            sent = 0
            try:
                while sent < MAX_PINGS and listener.connection_count:
                    client.send(one * BATCH)
                    sent += BATCH
                    async with asyncio.timeout(5):
                        await client.writer.drain()
                    await asyncio.sleep(0)  # pacing: the node (same loop) reads this batch
            except ConnectionError:
                pass  # closed under us: what we want
            await eventually(lambda: not listener.connection_count, 10.0, what=f"closed after {sent} pings")
            assert sent < 10_000, sent
            after = rss_bytes()
            assert after <= before * 1.1, (before, after)
        finally:
            await client.aclose()
