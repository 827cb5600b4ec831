"""Procedure discovery on several nodes: each discovers by itself, and all route alike.

Two real nodes over a real ``nats-server`` (the broker, whose URL NATS
discovery uses when ``[discovery.nats] url`` is unset), one reflecting gRPC
target (``examples/modules``) and one NATS service (``examples/nats_orders``),
no route written by hand. Each node's live table lists the same discovered
routes, and a client on either node gets the same answers.
"""

from __future__ import annotations

from typing import Any

import nats
import pytest

from wsgate.backends.nats import close_client
from wsgate.demo import MODULES_ALIASES, load_example

from ..e2e.gateway import Running
from ..helpers import eventually, free_port
from .cluster import cluster

pytestmark = pytest.mark.timeout(60)


def discovered(node: Running) -> set[tuple[str, str, str]]:
    """``(pattern, source, service)`` of the node's gRPC and NATS routes."""
    return {
        (r["pattern"], r["source"], r["service"])
        for r in node.node.routes.snapshot()
        if r["source"] in ("grpc", "nats")
    }


async def test_every_node_discovers_independently_and_routes_alike(nats_url: str) -> None:
    grpc_port = free_port()
    server = await load_example("modules").serve(grpc_port)
    nc = await nats.connect(nats_url)
    inventory = load_example("nats_orders").build()
    await inventory.start(nc)
    target = {"target": f"127.0.0.1:{grpc_port}", "discover_every_s": 0.1,
              "aliases": MODULES_ALIASES}  # fmt: skip
    sections: dict[str, Any] = {
        "grpc": [target],
        "discovery": {"nats": {"interval_s": 0.2, "window_ms": 100}},  # url: the broker's
    }
    try:
        async with cluster(nats_url, size=2, **sections) as (a, b):
            wanted = {("modules/LIST", "grpc"), ("inventory/CHECK", "nats")}

            def both_found() -> bool:
                return all(wanted <= {(p, s) for p, s, _ in discovered(n)} for n in (a, b))

            await eventually(both_found, what="gRPC and NATS routes on both nodes")
            await eventually(
                lambda: discovered(a) == discovered(b), what="the same discovered table"
            )
            for node, user in ((a, "ada"), (b, "bea")):
                async with node.peer(user) as peer:
                    await peer.send("modules/LIST", {"tag": "finance"}, id="l")
                    listed = await peer.expect("modules/LISTED")
                    assert [m["moduleId"] for m in listed["payload"]["modules"]] == [
                        "billing", "reports",
                    ]  # fmt: skip
                    await peer.send("inventory/CHECK", {"sku": f"sku-{user}"}, id="c")
                    stock = await peer.expect("inventory/STOCK")
                    assert stock["meta"]["inReplyTo"] == "c"
                    assert stock["payload"] == {"sku": f"sku-{user}", "count": 12, "hub": "acme"}
    finally:
        await inventory.stop()
        await close_client(nc)
        await server.stop(0)
