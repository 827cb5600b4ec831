"""A real node with a [[grpc]] target and real WebSocket clients: gRPC procedures end to end."""

from __future__ import annotations

import contextlib
import gc
import os
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets

from tests.cluster.test_shutdown import open_sockets
from tests.e2e.gateway import API_KEY, ORIGIN, Peer, Running, make_config, running
from tests.grpc_services.server import SERVICE, ModuleServer
from tests.helpers import eventually, settled
from wsgate.routing.grpc_invoker import STATUS

ECHO = f"{SERVICE}/Echo"
FAIL = f"{SERVICE}/Fail"


def grpc_config(target: str, **extra: Any) -> Any:
    return make_config(grpc=[{"target": target, "discover_every_s": 0.05, **extra}])


@contextlib.asynccontextmanager
async def gateway(**extra: Any) -> AsyncIterator[tuple[Running, ModuleServer]]:
    async with ModuleServer() as server, running(grpc_config(server.target, **extra)) as gw:
        yield gw, server


async def test_a_unary_call_answers_with_the_response_type_in_reply() -> None:
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


async def test_every_status_is_its_error_code_with_a_message_of_its_own_and_no_server_detail() -> (
    None
):
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
            await peer.send(f"{SERVICE}/Watch", {"count": 1, "hold": True}, id="q9")  # a stream open
            await eventually(lambda: server.watching == 1, what="a stream open")
        gc.collect()
        await eventually(lambda: open_sockets() <= before, what="every socket closed")


# Server streaming ---------------------------------------------------------------

WATCH = f"{SERVICE}/Watch"
MAX_STALLED_HEAP = 4 << 20
"""Python heap growth allowed while a 32 MB stream stalls (the server gets ~7 MB out first)."""
ITEM = "wsgate.test.v1.WatchItem"


async def read_stream(
    peer: Peer, rid: str, limit: int = 10_000
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The stream's items (in order), and its END."""
    items = []
    for _ in range(limit):
        action = await peer.recv(5.0)
        if action["type"] == "@@wsgate/PRESENCE":
            continue
        assert action["meta"]["inReplyTo"] == rid, action
        if action["type"] == "@@wsgate/END":
            return items, action
        items.append(action)
    raise AssertionError("no END")


async def test_each_message_is_an_action_then_end_ok() -> None:
    async with gateway() as (gw, _), gw.peer("ada") as peer:
        await peer.send(WATCH, {"tag": "w", "count": 3}, id="s1")
        items, end = await read_stream(peer, "s1")
        assert [(i["type"], i["payload"]["seq"]) for i in items] == [
            (ITEM, 0),
            (ITEM, 1),
            (ITEM, 2),
        ]
        assert end["payload"] == {"id": "s1", "status": "OK"} and not end.get("error")
        assert gw.node.upstream is not None and gw.node.upstream.open_streams == 0


async def test_a_stream_that_fails_ends_with_its_code_and_no_server_detail() -> None:
    async with gateway() as (gw, _), gw.peer("ada") as peer:
        await peer.send(WATCH, {"count": 2, "fail": "PERMISSION_DENIED"}, id="s2")
        items, end = await read_stream(peer, "s2")
        assert len(items) == 2
        assert end["payload"] == {"id": "s2", "status": "FORBIDDEN"} and end["error"] is True
        assert "secret" not in str(end)


async def test_a_stream_payload_that_does_not_fit_ends_bad_request_naming_the_field() -> None:
    async with gateway() as (gw, server), gw.peer("ada") as peer:
        await peer.send(WATCH, {"count": "many"}, id="s3")
        items, end = await read_stream(peer, "s3")
        assert items == [] and end["payload"]["status"] == "BAD_REQUEST"
        assert "count" in end["payload"]["message"] and server.calls == 0


async def test_a_stream_needs_a_unique_meta_id() -> None:
    async with gateway() as (gw, _), gw.peer("ada") as peer:
        await peer.send(WATCH, {"count": 1})
        error = await peer.expect("@@wsgate/ERROR")
        assert (
            error["payload"]["code"] == "BAD_REQUEST" and "meta.id" in error["payload"]["message"]
        )
        await peer.send(WATCH, {"count": 1, "hold": True}, id="dup")
        await peer.expect(ITEM)
        await peer.send(WATCH, {"count": 1}, id="dup")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["payload"]["code"] == "BAD_REQUEST" and error["meta"]["inReplyTo"] == "dup"


async def test_cancel_by_the_client_ends_cancelled_and_the_server_sees_it() -> None:
    async with gateway() as (gw, server), gw.peer("ada") as peer:
        await peer.send(WATCH, {"count": 1, "hold": True}, id="s4")
        await peer.expect(ITEM)
        await eventually(lambda: server.watching == 1, what="the stream held")
        await peer.send("@@wsgate/CANCEL", {"id": "s4"})
        end = await peer.expect("@@wsgate/END")
        assert (
            end["payload"] == {"id": "s4", "status": "CANCELLED"}
            and end["meta"]["inReplyTo"] == "s4"
        )
        await eventually(lambda: server.cancelled == 1, what="the server saw the cancellation")
        assert gw.node.upstream is not None and gw.node.upstream.open_streams == 0


async def test_cancel_of_an_unknown_id_is_ignored_and_a_bad_cancel_is_bad_request() -> None:
    async with gateway() as (gw, _), gw.peer("ada") as peer:
        await peer.send("@@wsgate/CANCEL", {"id": "nope"}, id="c1")
        await peer.send("@@wsgate/CANCEL", {"nope": 1}, id="c2")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["meta"]["inReplyTo"] == "c2" and error["payload"]["code"] == "BAD_REQUEST"


async def test_leave_of_the_streams_channel_cancels_it_and_other_streams_go_on() -> None:
    async with gateway() as (gw, server), gw.peer("ada") as peer:
        await peer.join("acme:orders/1")
        await peer.join("acme:orders/2")
        await peer.send(WATCH, {"count": 1, "hold": True}, id="s5", channel="acme:orders/1")
        await peer.send(WATCH, {"count": 1, "hold": True}, id="s6", channel="acme:orders/2")
        await eventually(lambda: server.watching == 2, what="two streams held")
        await peer.send("@@wsgate/LEAVE", {"channel": "acme:orders/1"})
        end = await peer.expect("@@wsgate/END")
        assert end["payload"] == {"id": "s5", "status": "CANCELLED"}
        await eventually(
            lambda: server.cancelled == 1 and server.watching == 1, what="s5 cancelled"
        )
        assert gw.node.upstream is not None and gw.node.upstream.open_streams == 1


async def test_disconnect_cancels_the_streams_and_frees_them() -> None:
    async with gateway() as (gw, server):
        async with gw.peer("ada") as peer:
            await peer.send(WATCH, {"count": 1, "hold": True}, id="s7")
            await peer.send(WATCH, {"count": 1, "hold": True}, id="s8")
            await eventually(lambda: server.watching == 2, what="two streams held")
        await eventually(lambda: server.cancelled == 2, what="the server saw both cancelled")
        upstream = gw.node.upstream
        assert upstream is not None
        await eventually(lambda: upstream.open_streams == 0, what="streams freed")
        await eventually(
            lambda: gw.node.routes.lookup(WATCH).pool.slots.free == 256, what="slots back"
        )


async def test_open_streams_are_capped_per_connection_and_per_user() -> None:
    async with ModuleServer() as server:
        config = make_config(
            grpc=[{"target": server.target, "discover_every_s": 0.05}],
            routing={"max_streams": 2, "max_streams_per_user": 3},
        )
        async with running(config) as gw, gw.peer("ada") as one, gw.peer("ada") as two:
            for rid in ("a", "b"):
                await one.send(WATCH, {"count": 1, "hold": True}, id=rid)
                await one.expect(ITEM)
            await one.send(WATCH, {"count": 1}, id="c")
            error = await one.expect("@@wsgate/ERROR")
            assert (
                error["payload"]["code"] == "RATE_LIMITED"
                and "connection" in error["payload"]["message"]
            )
            await two.send(WATCH, {"count": 1, "hold": True}, id="d")
            await two.expect(ITEM)
            await two.send(WATCH, {"count": 1}, id="e")
            error = await two.expect("@@wsgate/ERROR")
            assert (
                error["payload"]["code"] == "RATE_LIMITED" and "user" in error["payload"]["message"]
            )
            await one.send("@@wsgate/CANCEL", {"id": "a"})
            await one.expect("@@wsgate/END")
            await two.send(WATCH, {"count": 1}, id="f")  # a slot of the user's is free again
            items, end = await read_stream(two, "f")
            assert len(items) == 1 and end["payload"]["status"] == "OK"


async def test_a_slow_reader_pauses_the_stream_instead_of_buffering_it() -> None:
    """32 MB streamed to a client that reads nothing: the gateway reads no faster than the client.

    Without back-pressure the gateway would take it all from the server at
    once and its outbound buffer would pass the 1 MB high-water mark (close
    4000, slow consumer).
    """
    count, size = 2000, 16 * 1024
    async with gateway() as (gw, server):
        headers = {"Cookie": gw.cookie("ada")}
        async with websockets.connect(
            gw.url, additional_headers=headers, origin=ORIGIN, max_queue=1, max_size=1 << 20
        ) as ws:
            peer = Peer(ws)
            assert (await peer.recv())["type"] == "@@wsgate/WELCOME"
            tracemalloc.start()
            try:
                await peer.send(WATCH, {"count": count, "size": size}, id="big")
                await eventually(lambda: server.sent > 0, what="the stream started")
                # Kernel buffers take a few MB; the stream must stall well short of 32 MB.
                assert not await settled(lambda: server.sent >= count, timeout=2.0)
                stalled = server.sent
                grown, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert stalled < count // 2, stalled
            # The gateway's (and this process's) Python heap held none of what stalled.
            assert grown < MAX_STALLED_HEAP, f"heap +{grown / 2**20:.1f} MiB"
            items, end = await read_stream(peer, "big", limit=count + 10)
            assert [i["payload"]["seq"] for i in items] == list(range(count))
            assert end["payload"]["status"] == "OK"
