"""A real node with a [[grpc]] target and real WebSocket clients: gRPC procedures end to end."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.cluster.test_shutdown import open_sockets
from tests.e2e.gateway import API_KEY, Running, make_config, running
from tests.grpc_services.server import SERVICE, ModuleServer
from tests.helpers import eventually
from wsgate.routing.grpc_invoker import STATUS

ECHO = f"{SERVICE}/Echo"
FAIL = f"{SERVICE}/Fail"


def grpc_config(target: str, **extra: Any) -> Any:
    return make_config(grpc=[{"target": target, "discover_every_s": 0.05, **extra}])


@contextlib.asynccontextmanager
async def gateway(**extra: Any) -> AsyncIterator[tuple[Running, ModuleServer]]:
    async with ModuleServer() as server, running(grpc_config(server.target, **extra)) as gw:
        yield gw, server


async def test_a_unary_call_answers_with_the_response_type_in_reply(
) -> None:
    async with gateway() as (gw, server), gw.peer("ada") as peer:
        await peer.send(ECHO, {"module": {"moduleId": "m1", "kind": "KIND_CORE"}}, id="q1")
        answer = await peer.expect("wsgate.test.v1.EchoResponse")
        assert answer["meta"]["inReplyTo"] == "q1"
        assert answer["payload"]["module"]["moduleId"] == "m1"
        assert answer["payload"]["module"]["kind"] == "KIND_CORE"
        seen = server.metadata[-1]
        assert seen["wsgate-connection-id"] == peer.id
        assert seen["wsgate-user"] == "ada" and seen["wsgate-organization"] == "acme"
        assert seen["wsgate-request-id"] and len(seen["traceparent"]) == 55


async def test_a_bad_field_is_bad_request_naming_it() -> None:
    async with gateway() as (gw, server), gw.peer("ada") as peer:
        await peer.send(ECHO, {"module": {"kind": "KIND_NOPE"}}, id="q2")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["meta"]["inReplyTo"] == "q2" and error["error"] is True
        assert error["payload"]["code"] == "BAD_REQUEST"
        assert "kind" in error["payload"]["message"]
        assert server.calls == 0


async def test_every_status_is_its_error_code_with_a_message_of_its_own_and_no_server_detail(
) -> None:
    async with gateway() as (gw, _), gw.peer("ada") as peer:
        for status, code in sorted(STATUS.items()):
            await peer.send(FAIL, {"status": status, "detail": "secret-xyz"}, id=status)
            error = await peer.expect("@@wsgate/ERROR")
            assert error["meta"]["inReplyTo"] == status
            assert error["payload"]["code"] == code.value
            assert error["payload"]["message"] != "upstream failure", status  # a message per code
            assert "secret-xyz" not in str(error)


async def test_an_alias_routes_and_names_its_reply() -> None:
    aliases = {"modules/ECHO": {"method": ECHO, "reply": "modules/ECHOED"}}
    async with gateway(aliases=aliases) as (gw, _), gw.peer("ada") as peer:
        await peer.send("modules/ECHO", {"module": {"moduleId": "m9"}}, id="q4")
        answer = await peer.expect("modules/ECHOED")
        assert answer["meta"]["inReplyTo"] == "q4"
        assert answer["payload"]["module"]["moduleId"] == "m9"


async def test_routes_list_the_grpc_source() -> None:
    async with gateway() as (gw, server), aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with http.get(f"{gw.node.api_url}/v1/routes", headers=headers) as resp:
            body = await resp.json()
        routes = body["routes"] if isinstance(body, dict) else body
        echo = next(r for r in routes if r["pattern"] == ECHO)
        assert echo["source"] == "grpc" and echo["transport"] == "grpc"
        assert echo["service"] == f"grpc:{server.target}"


async def test_a_restarted_target_with_a_new_method_is_routable_without_a_gateway_restart() -> None:
    server = ModuleServer()
    await server.start()
    newer = ModuleServer(server.port, added=True)
    try:
        async with running(grpc_config(server.target)) as gw, gw.peer("ada") as peer:
            await peer.send(f"{SERVICE}/Added", {"tag": "a"}, id="q5")
            assert (await peer.expect("@@wsgate/ERROR"))["payload"]["code"] == "NO_ROUTE"
            await server.stop()
            await newer.start()
            await eventually(
                lambda: gw.node.routes.lookup(f"{SERVICE}/Added") is not None, what="new route"
            )
            await peer.send(f"{SERVICE}/Added", {"tag": "a"}, id="q6")
            answer = await peer.expect("wsgate.test.v1.HoldResponse")
            assert answer["payload"] == {"tag": "added:a"} and answer["meta"]["inReplyTo"] == "q6"
    finally:
        await server.stop()
        await newer.stop()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_no_socket_left_open_after_the_node_stops() -> None:
    async with ModuleServer() as server:
        before = open_sockets()
        async with running(grpc_config(server.target)) as gw, gw.peer("ada") as peer:
            await peer.send(ECHO, {}, id="q7")
            await peer.expect("wsgate.test.v1.EchoResponse")
            server.gate.clear()
            await peer.send(f"{SERVICE}/Hold", {"tag": "h"}, id="q8")  # in flight at stop
            await eventually(lambda: server.holding == 1, what="a call in flight")
        gc.collect()
        await eventually(lambda: open_sockets() <= before, what="every socket closed")
