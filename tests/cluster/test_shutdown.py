"""A node that stops closes every socket it opened, whatever its broker is doing.

Each test starts its own broker server (it stops and restarts it), records the
process's open sockets from ``/proc/self/fd``, runs one node with a client on
it, and stops the node in one broker state: connected, down (the node is
reconnecting) or restarting (listening again while the node waits to retry).
or hung (a listener on the broker's port that accepts and never answers, as a
half-dead host does, with the node mid-reconnect to it). Afterwards the open
sockets are the ones from before. A socket nobody closed
would also fail the test as a ``ResourceWarning`` (``filterwarnings = error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import uuid
from collections.abc import Iterator

import pytest

from wsgate.auth.keyring import new_key
from wsgate.node import Node

from ..e2e.gateway import Running
from ..helpers import eventually
from ..servers import NATS_SERVER, REDIS_SERVER, ServerProcess, nats_server, redis_server
from .cluster import node_config

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")

DEADLINE_S = 10.0


def open_sockets() -> set[str]:
    """This process's open sockets, as ``fd:socket:[inode]``."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:"):
                found.add(f"{fd}:{link}")
    return found


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A broker server of this test's own (the test stops and restarts it)."""
    if request.param == "redis" and REDIS_SERVER is None:
        pytest.skip("no redis-server")
    if request.param == "nats" and NATS_SERVER is None:
        pytest.skip("no nats-server")
    with (redis_server() if request.param == "redis" else nats_server()) as server:
        yield server


def _broker_connected(node: Node) -> bool:
    assert node.bus is not None
    return node.bus.broker_connected


class SilentListener:
    """Accepts on ``port`` and never answers; counts and holds what it accepted."""

    def __init__(self) -> None:
        self.accepted: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", port)

    async def close(self) -> None:
        for writer in self.accepted:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize("state", ["connected", "down", "restarting", "hung"])
async def test_a_stopped_node_closes_every_socket_it_opened(
    broker: ServerProcess, state: str
) -> None:
    gc.collect()
    before = open_sockets()
    silent = SilentListener()
    node = Node(node_config(broker.url, "s" + uuid.uuid4().hex[:8], "a", new_key()))
    await node.start()
    try:
        node_ = Running(node)
        async with node_.peer("alice") as alice, node_.peer("carol") as carol:
            await alice.join("acme:v")
            await carol.join("acme:v")
            await alice.send("chat/MESSAGE", {"n": 1}, channel="acme:v")
            await carol.expect("chat/MESSAGE")
            await eventually(lambda: _broker_connected(node), DEADLINE_S, what="connected")
            if state != "connected":
                broker.stop()
                await eventually(lambda: not _broker_connected(node), DEADLINE_S, what="seen as down")
                # Work queued while the broker is away must not keep a socket open either.
                await alice.send("chat/MESSAGE", {"n": 2}, channel="acme:v")
                await alice.send("@@wsgate/PING", id="after")  # handled after the relay
                await alice.expect("@@wsgate/PONG")
                if state == "restarting":
                    broker.start()
                if state == "hung":
                    await silent.start(broker.port)
                    await eventually(lambda: len(silent.accepted) > 0, DEADLINE_S, what="reconnecting to the hung broker")
    finally:
        await node.stop(deadline_s=1)
    await silent.close()
    gc.collect()
    left = open_sockets() - before
    if left:
        import subprocess
        print(left, subprocess.run(["ss", "-anpe"], capture_output=True, text=True).stdout)
    assert left == set()
