"""The demo's procedure examples through a real node and real WebSocket clients.

``examples/modules`` (a reflecting gRPC ModuleService) is reached by its
alias and by its method name; ``examples/nats_orders`` (a ``NatsService``)
is found by NATS discovery on a real ``nats-server``. The examples are loaded
as ``wsgate demo`` loads them (:func:`wsgate.demo.load_example`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from tests.e2e.gateway import Running, make_config, running
from tests.e2e.test_grpc_e2e import read_stream
from tests.helpers import eventually, free_port
from tests.servers import ServerProcess
from wsgate.backends.nats import close_client
from wsgate.demo import MODULES_ALIASES, load_example

pytestmark = pytest.mark.timeout(60)

SERVICE = "oswee.module.v1.ModuleService"


@contextlib.asynccontextmanager
async def modules_gateway() -> AsyncIterator[Running]:
    port = free_port()
    server = await load_example("modules").serve(port)
    try:
        target = {
            "target": f"127.0.0.1:{port}",
            "discover_every_s": 0.05,
            "aliases": MODULES_ALIASES,
        }
        async with running(make_config(grpc=[target])) as gw:
            yield gw
    finally:
        await server.stop(0)


async def test_list_modules_answers_through_its_alias() -> None:
    async with modules_gateway() as gw, gw.peer("ada") as peer:
        await peer.send("modules/LIST", {}, id="l1")
        answer = await peer.expect("modules/LISTED")
        assert answer["meta"]["inReplyTo"] == "l1"
        ids = [m["moduleId"] for m in answer["payload"]["modules"]]
        assert ids and len(ids) == len(set(ids))
        await peer.send("modules/LIST", {"tag": "core"}, id="l2")
        tagged = (await peer.expect("modules/LISTED"))["payload"]["modules"]
        assert tagged and len(tagged) < len(ids)
        assert all("core" in m["tags"] for m in tagged)


async def test_get_module_by_method_name_and_an_unknown_one_is_not_found() -> None:
    async with modules_gateway() as gw, gw.peer("ada") as peer:
        await peer.send(f"{SERVICE}/GetModule", {"moduleId": "auth"}, id="g1")
        answer = await peer.expect("oswee.module.v1.GetModuleResponse")
        assert answer["payload"]["module"]["name"] == "Authentication"
        await peer.send(f"{SERVICE}/GetModule", {"moduleId": "nope"}, id="g2")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["meta"]["inReplyTo"] == "g2" and error["payload"]["code"] == "UPSTREAM_ERROR"  # NOT_FOUND (docs/routing.md)


async def test_watch_modules_streams_each_event_then_end_ok() -> None:
    async with modules_gateway() as gw, gw.peer("ada") as peer:
        await peer.send("modules/WATCH", {"count": 4, "intervalMs": 1}, id="w1")
        items, end = await read_stream(peer, "w1")
        assert [i["payload"]["seq"] for i in items] == [1, 2, 3, 4]
        assert {i["type"] for i in items} == {"modules/EVENT"}
        assert end["payload"] == {"id": "w1", "status": "OK"}


async def test_an_endless_watch_is_cancelled_by_the_client() -> None:
    async with modules_gateway() as gw, gw.peer("ada") as peer:
        await peer.send("modules/WATCH", {"intervalMs": 1}, id="w2")
        first = await peer.expect("modules/EVENT")
        assert first["meta"]["inReplyTo"] == "w2"
        await peer.send("@@wsgate/CANCEL", {"id": "w2"})
        end = await peer.expect("@@wsgate/END")
        assert end["payload"] == {"id": "w2", "status": "CANCELLED"}


async def test_the_nats_example_is_found_by_discovery_and_answers(
    nats_proc: ServerProcess,
) -> None:
    nc = await nats.connect(nats_proc.url)
    service = load_example("nats_orders").build()
    await service.start(nc)
    try:
        config = make_config(discovery={"nats": {"url": nats_proc.url, "interval_s": 0.2}})
        async with running(config) as gw:
            await eventually(lambda: gw.node.routes.lookup("inventory/CHECK") is not None)
            async with gw.peer("ada") as peer:
                await peer.send("inventory/CHECK", {"sku": "bolt-m6"}, id="n1")
                answer: dict[str, Any] = await peer.expect("inventory/STOCK")
                assert answer["meta"]["inReplyTo"] == "n1"
                assert answer["payload"]["sku"] == "bolt-m6"
                assert answer["payload"]["hub"] == "acme"  # the caller's organization
                assert isinstance(answer["payload"]["count"], int)
    finally:
        await service.stop()
        await close_client(nc)
