"""Recovery after the node restarts: reconnect, rejoin with since, nothing lost or twice.

A node is stopped (clients get 1012) and a new one started on the same port.
On the bare memory backend the channel history dies with the node: the
rejoin's JOINED says ``recovered: false`` (docs/client.md) and the client
carries on from JOINED's offset. Over a cluster backend that outlives the node
(``memory://<name>``, shared in process), the rejoin replays exactly what was
missed.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from wsgate.auth.keyring import new_key
from wsgate.node import Node

from ..cluster.cluster import node_config
from ..e2e.gateway import Running, make_config
from ..helpers import eventually, free_port
from .live import Seen, client_of


@contextlib.asynccontextmanager
async def node_on(config: Any) -> AsyncIterator[Running]:
    node = Node(config)
    await node.start()
    try:
        yield Running(node)
    finally:
        await node.stop(deadline_s=1)


async def test_after_a_restart_on_memory_the_client_sees_history_gone_and_goes_on() -> None:
    port, key = free_port(), new_key()

    def config() -> Any:
        return make_config(server={"listen": f"127.0.0.1:{port}"}, auth={"keys": [key]})

    seen, states = Seen(), Seen()
    async with node_on(config()) as first:
        alice = client_of(first, "alice")
        alice.on("*", seen)
        alice.on("state", states)
        async with alice, client_of(first, "bob") as bob:
            await alice.join("acme:room")
            await bob.join("acme:room")
            await bob.dispatch({"type": "chat/MESSAGE", "payload": 1, "meta": {"channel": "acme:room"}})
            await eventually(lambda: seen.payloads("chat/MESSAGE") == [1], what="the first message")
            before = alice.offset("acme:room")
            assert before is not None
            await first.node.stop(deadline_s=1)
            await eventually(lambda: alice.state != "open", what="alice sees the node go")
            async with node_on(config()) as second:
                await eventually(lambda: len(seen.of("@@wsgate/JOINED")) == 2, what="the rejoin")
                rejoined = seen.of("@@wsgate/JOINED")[1]["payload"]
                assert rejoined["channel"] == "acme:room"
                assert rejoined["recovered"] is False  # the memory history died with the node
                assert alice.state == "open" and alice.channels == ["acme:room"]
                assert alice.offset("acme:room") == rejoined["offset"]
                async with client_of(second, "carol") as carol:
                    await carol.join("acme:room")
                    await carol.dispatch({"type": "chat/MESSAGE", "payload": 2,
                                          "meta": {"channel": "acme:room"}})
                    await eventually(lambda: seen.payloads("chat/MESSAGE") == [1, 2],
                                     what="the message after the restart")
    assert "reconnecting" in states.actions


async def test_over_a_backend_that_outlives_the_node_the_rejoin_replays_what_was_missed() -> None:
    broker, prefix, key = f"memory://{uuid.uuid4().hex[:8]}", "t" + uuid.uuid4().hex[:8], new_key()
    port_a, port_b = free_port(), free_port()

    def config(node_id: str, port: int) -> Any:
        return node_config(broker, prefix, node_id, key, server={"listen": f"127.0.0.1:{port}"})

    seen = Seen()
    async with node_on(config("b", port_b)) as b, client_of(b, "bob") as bob:
        await bob.join("acme:room")
        async with node_on(config("a", port_a)) as a:
            alice = client_of(a, "alice")
            alice.on("chat/*", seen)
            joins = Seen()
            alice.on("@@wsgate/JOINED", joins)
            async with alice:
                await alice.join("acme:room")
                await bob.dispatch({"type": "chat/MESSAGE", "payload": 1, "meta": {"channel": "acme:room"}})
                await eventually(lambda: seen.payloads("chat/MESSAGE") == [1], what="message 1")
                await a.node.stop(deadline_s=1)
                await eventually(lambda: alice.state != "open", what="alice sees node a go")
                for n in (2, 3):  # sent while alice has no node
                    await bob.dispatch({"type": "chat/MESSAGE", "payload": n,
                                        "meta": {"channel": "acme:room"}})
                async with node_on(config("a", port_a)):
                    await eventually(lambda: seen.payloads("chat/MESSAGE") == [1, 2, 3],
                                     what="the missed messages, once each")
                    assert joins.actions[-1]["payload"]["recovered"] is True
                    await bob.dispatch({"type": "chat/MESSAGE", "payload": 4,
                                        "meta": {"channel": "acme:room"}})
                    await eventually(lambda: seen.payloads("chat/MESSAGE") == [1, 2, 3, 4],
                                     what="message 4")
                    offsets = [m["meta"]["offset"] for m in seen.of("chat/MESSAGE")]
                    assert offsets == sorted(set(offsets))  # in order, none twice
