"""The NATS service helper of the SDK, against a real nats-server: it announces its
patterns in wsgate.actions, is found by discovery, and answers the invoker's calls."""

from __future__ import annotations

from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client

from tests.servers import ServerProcess
from wsgate.backends.nats import close_client
from wsgate.exceptions import Refused
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action
from wsgate.routing.context import InvocationContext
from wsgate.routing.instances import Service
from wsgate.routing.nats_discovery import NatsDiscovery
from wsgate.routing.nats_invoker import NatsInvoker
from wsgate.routing.results import InvocationResult
from wsgate.routing.table import RouteTable
from wsgate.sdk.nats_service import NatsService
from wsgate.sdk.service import Context, Reply

pytestmark = pytest.mark.timeout(30)

CTX = InvocationContext(connectionId="n1.abc", userId="u1", hub="acme")


def orders() -> NatsService:
    service = NatsService("orders", queue_group="orders")

    @service.action("orders/GET")
    async def get(action: dict[str, Any], ctx: Context) -> Any:
        return {"type": "orders/GOT", "payload": {"id": action["payload"]["id"], "by": ctx.userId}}

    @service.action("orders/*")
    async def other(action: dict[str, Any], ctx: Context) -> Any:
        if action["type"] == "orders/DELETE":
            raise Refused("only admins delete orders")
        if action["type"] == "orders/BOOM":
            raise RuntimeError("db password is hunter2")
        if action["type"] == "orders/QUIET":
            return None
        return Reply(
            actions=[{"type": "orders/OK"}],
            publish=[{"to": {"channel": "acme:orders"}, "action": {"type": "orders/CHANGED"}}],
        )

    return service


async def discovered(gw_nc: Client, table: RouteTable, action_type: str) -> Service:
    disco = NatsDiscovery(gw_nc, table, window_s=0.2)
    await disco.round()
    found = table.lookup(action_type)
    assert found is not None, f"{action_type} not routed"
    return found


async def test_a_service_in_a_few_lines_is_found_and_answers(gw_nc: Client, svc_nc: Client) -> None:
    service = orders()
    await service.start(svc_nc)
    invoker = NatsInvoker(gw_nc)
    try:
        table = RouteTable()
        get = await discovered(gw_nc, table, "orders/GET")
        assert {e["pattern"] for e in table.snapshot()} == {"orders/GET", "orders/*"}
        assert [i.url for i in get.pool.instances] == [service.subject]

        async def call(type_: str, payload: bytes = b"null") -> InvocationResult | ErrorCode:
            action = Action(type=type_, payload=msgspec.Raw(payload))
            return await invoker.invoke(get, action, CTX)

        got = await call("orders/GET", b'{"id": 7}')
        assert isinstance(got, InvocationResult)
        assert [(r.type, msgspec.json.decode(r.payload or b"null")) for r in got.replies] == [
            ("orders/GOT", {"id": 7, "by": "u1"})
        ]
        other = await call("orders/UPDATE")
        assert isinstance(other, InvocationResult)
        assert [r.type for r in other.replies] == ["orders/OK"]
        assert [(p.to.channel, p.action.type) for p in other.publishes] == [
            ("acme:orders", "orders/CHANGED")
        ]
        assert await call("orders/QUIET") == InvocationResult()
        assert await call("orders/DELETE") is ErrorCode.FORBIDDEN
        assert await call("orders/BOOM") is ErrorCode.UPSTREAM_ERROR
        assert await call("billing/PAY") is ErrorCode.UPSTREAM_ERROR  # no handler: 404
    finally:
        await invoker.aclose()
        await service.stop()


async def test_a_body_that_is_no_invocation_is_400(svc_nc: Client, gw_nc: Client) -> None:
    service = orders()
    await service.start(svc_nc)
    try:
        answer = await gw_nc.request(service.subject, b"not json", timeout=2)
        assert answer.headers is not None
        assert answer.headers["Nats-Service-Error-Code"] == "400"
    finally:
        await service.stop()


def test_a_handler_pattern_must_be_a_route_pattern() -> None:
    service = NatsService("bad")
    with pytest.raises(ValueError, match="pattern"):
        service.action("not a pattern")
    with pytest.raises(ValueError, match="name"):
        NatsService("bad name")


async def test_start_returns_once_the_endpoint_is_on_the_server(
    nats_proc: ServerProcess, gw_nc: Client
) -> None:
    """nats-py's flush() writes its PING straight to the socket, ahead of a SUB still in
    its pending buffer, so start() must not return on flush alone: a request right after
    start() always finds a responder."""
    missed = 0
    for n in range(100):  # fresh connections lost the race a few percent of the time
        nc = await nats.connect(nats_proc.url)
        service = NatsService("race", subject=f"race.s{n}")

        @service.action("race/*")
        async def ok(action: dict[str, Any], ctx: Context) -> Any:
            return None

        try:
            await service.start(nc)
            await gw_nc.request(service.subject, b"{}", timeout=2)
        except nats.errors.NoRespondersError:
            missed += 1
        finally:
            await service.stop()
            await close_client(nc)
    assert missed == 0
