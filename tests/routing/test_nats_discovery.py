"""NATS service discovery against a real nats-server and real ``nats.micro`` services:
appearing within the interval, dropping out after two missed rounds, metadata parsing, bounds."""

from __future__ import annotations

import json

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service as MicroService

from tests.helpers import eventually
from tests.servers import ServerProcess
from wsgate.protocol.envelope import Action
from wsgate.routing.context import InvocationContext
from wsgate.routing.nats_discovery import NatsDiscovery
from wsgate.routing.nats_invoker import NatsInvoker
from wsgate.routing.results import InvocationResult
from wsgate.routing.table import RouteTable
from wsgate.sdk.nats_service import on_server

pytestmark = pytest.mark.timeout(30)

WINDOW_S = 0.2


@pytest.fixture
def table() -> RouteTable:
    return RouteTable()


async def echo(req: Request) -> None:
    await req.respond(json.dumps({"reply": [{"type": "orders/GOT"}]}).encode())


async def micro(
    nc: Client,
    name: str,
    endpoints: dict[str, dict[str, str] | None],
    *,
    queue_group: str | None = None,
) -> MicroService:
    """A nats.micro service with one endpoint per ``subject: metadata``."""
    svc = await add_service(nc, name=name, version="1.0.0", queue_group=queue_group)
    for i, (subject, metadata) in enumerate(endpoints.items()):
        await svc.add_endpoint(name=f"e{i}", subject=subject, handler=echo, metadata=metadata)
    await on_server(nc)
    return svc


def actions(value: str) -> dict[str, str]:
    return {"wsgate.actions": value}


async def test_a_new_service_is_routable_within_the_interval(
    gw_nc: Client, svc_nc: Client, table: RouteTable
) -> None:
    interval_s, window_s = 0.3, 0.1
    disco = NatsDiscovery(gw_nc, table, interval_s=interval_s, window_s=window_s)
    disco.start()
    try:
        await eventually(lambda: disco.rounds >= 1, what="a first round")
        assert table.lookup("orders/GET") is None
        svc = await micro(svc_nc, "orders", {"orders.get": actions("orders/*,orders/GET")})
        # Within one interval and a round's window (plus slack for a loaded machine).
        within = interval_s + window_s + 0.5
        await eventually(lambda: table.lookup("orders/GET") is not None, within, what="routable")
        found = table.lookup("orders/GET")
        assert found is not None
        assert found.pool.transport == "nats"
        assert [i.url for i in found.pool.instances] == ["orders.get"]
        assert table.lookup("orders/LIST") is found  # the prefix routes too
        entry = next(e for e in table.snapshot() if e["pattern"] == "orders/GET")
        assert (entry["source"], entry["transport"]) == ("nats", "nats")
        # ... and the route carries a real call through the NATS invoker.
        invoker = NatsInvoker(gw_nc)
        result = await invoker.invoke(
            found, Action(type="orders/GET"), InvocationContext(connectionId="n.x")
        )
        assert isinstance(result, InvocationResult)
        assert [r.type for r in result.replies] == ["orders/GOT"]
        await invoker.aclose()
        await svc.stop()
    finally:
        await disco.aclose()
    assert disco.task is None


async def test_a_service_that_stops_answering_drops_out_after_two_missed_rounds(
    gw_nc: Client, svc_nc: Client, table: RouteTable
) -> None:
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S)
    svc = await micro(svc_nc, "billing", {"billing.pay": actions("billing/PAY")})
    await disco.round()
    assert table.lookup("billing/PAY") is not None
    await svc.stop()
    await on_server(svc_nc)
    await disco.round()  # one missed round: still routed
    assert table.lookup("billing/PAY") is not None
    await disco.round()  # the second: gone
    assert table.lookup("billing/PAY") is None
    assert disco.known == 0  # freed


async def test_a_service_seen_again_after_one_miss_stays(
    gw_nc: Client, svc_nc: Client, table: RouteTable
) -> None:
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S)
    svc = await micro(svc_nc, "flaky", {"flaky.x": actions("flaky/X")})
    await disco.round()
    await svc.stop()
    await on_server(svc_nc)
    await disco.round()
    svc = await micro(svc_nc, "flaky", {"flaky.x": actions("flaky/X")})
    await disco.round()
    await svc.stop()
    await on_server(svc_nc)
    await disco.round()  # one miss since it was last seen
    assert table.lookup("flaky/X") is not None


async def test_metadata_parsing(gw_nc: Client, svc_nc: Client, table: RouteTable) -> None:
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S)
    svc = await micro(
        svc_nc,
        "shop",
        {
            "shop.a": actions(" cart/ADD , cart/ADD,, cart/*  ,bad pattern,@@wsgate/CONNECT,*"),
            "shop.b": None,  # no metadata: not routed
            "shop.c": {"other": "x"},  # no wsgate.actions: not routed
            "shop.d": actions(""),
        },
    )
    try:
        await disco.round()
    finally:
        await svc.stop()
    routed = {e["pattern"]: e["instances"][0]["url"] for e in table.snapshot()}
    # The gateway's own types are the config's to route, never a discoverer's.
    assert routed == {"cart/ADD": "shop.a", "cart/*": "shop.a", "*": "shop.a"}
    assert table.lookup("@@wsgate/CONNECT") is None


async def test_instances_of_one_service_share_one_route(
    gw_nc: Client, svc_nc: Client, table: RouteTable
) -> None:
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S)
    one = await micro(svc_nc, "pair", {"pair.x": actions("pair/X")}, queue_group="pair")
    two = await micro(svc_nc, "pair", {"pair.x": actions("pair/X")}, queue_group="pair")
    try:
        await disco.round()
    finally:
        await one.stop()
        await two.stop()
    (entry,) = table.snapshot()
    assert entry["service"] == "nats:pair.e0"
    assert [i["url"] for i in entry["instances"]] == ["pair.x"]


async def test_bounds_services_endpoints_patterns(
    gw_nc: Client, svc_nc: Client, table: RouteTable
) -> None:
    disco = NatsDiscovery(
        gw_nc, table, window_s=WINDOW_S, max_services=2, max_endpoints=2, max_actions=3
    )
    services = [
        await micro(
            svc_nc,
            f"s{n}",
            {f"s{n}.e{k}": actions(",".join(f"s{n}e{k}/A{j}" for j in range(5))) for k in range(4)},
        )
        for n in range(4)
    ]
    try:
        await disco.round()
    finally:
        for svc in services:
            await svc.stop()
    snap = table.snapshot()
    assert len({e["service"].split(".")[0] for e in snap}) == 2  # at most 2 services a round
    assert len({e["service"] for e in snap}) == 4  # 2 endpoints each
    assert len(snap) == 12  # 3 patterns each


async def test_oversized_and_malformed_info_replies_are_skipped(
    gw_nc: Client, svc_nc: Client, table: RouteTable
) -> None:
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S, max_info_bytes=2048)

    def info(name: str, subject: str, padding: int = 0) -> bytes:
        return msgspec.json.encode(
            {
                "type": "io.nats.micro.v1.info_response",
                "name": name,
                "id": name,
                "version": "1",
                "description": "x" * padding,
                "metadata": {},
                "endpoints": [
                    {
                        "name": "e",
                        "subject": subject,
                        "queue_group": "q",
                        "metadata": actions(f"{name}/X"),
                    }
                ],
            }
        )

    async def liar(msg: Msg) -> None:
        await svc_nc.publish(msg.reply, b"not json")
        await svc_nc.publish(msg.reply, info("huge", "huge.x", padding=4096))
        await svc_nc.publish(msg.reply, info("wild", "wild.*"))  # not a requestable subject
        await svc_nc.publish(msg.reply, info("fine", "fine.x"))

    sub = await svc_nc.subscribe("$SRV.INFO", cb=liar)
    await on_server(svc_nc)
    try:
        await disco.round()
    finally:
        await sub.unsubscribe()
    assert [e["pattern"] for e in table.snapshot()] == ["fine/X"]


async def test_a_round_while_disconnected_counts_no_miss(
    gw_nc: Client, svc_nc: Client, table: RouteTable, nats_proc: ServerProcess
) -> None:
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S)
    svc = await micro(svc_nc, "steady", {"steady.x": actions("steady/X")})
    await disco.round()
    await svc.stop()
    await gw_nc.close()  # the gateway's connection is gone (closed, as after an outage)
    for _ in range(3):
        assert await disco.round() is False
    assert table.lookup("steady/X") is not None


async def test_two_subjects_of_one_endpoint_are_two_instances_of_one_service(
    gw_nc: Client, svc_nc: Client, table: RouteTable
) -> None:
    """Two versions of a service answering on different subjects both stay routed (round
    robin), rather than the last reply of a round winning and the route flapping."""
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S)
    v1 = await micro(svc_nc, "multi", {"multi.v1": actions("multi/X")})
    v2 = await micro(svc_nc, "multi", {"multi.v2": actions("multi/X")})
    try:
        for _ in range(3):
            await disco.round()
            (entry,) = table.snapshot()
            assert sorted(i["url"] for i in entry["instances"]) == ["multi.v1", "multi.v2"]
    finally:
        await v1.stop()
        await v2.stop()


async def test_a_round_with_no_service_at_all_warns_of_nothing(
    gw_nc: Client, table: RouteTable, caplog: pytest.LogCaptureFixture
) -> None:
    """With no responder the server answers the INFO request with a 503 status message
    (headers, empty body): that is "no service", not a malformed reply."""
    disco = NatsDiscovery(gw_nc, table, window_s=WINDOW_S)
    with caplog.at_level("WARNING", logger="wsgate.routing.nats_discovery"):
        await disco.round()
    assert [r.getMessage() for r in caplog.records] == []
    assert table.snapshot() == []
