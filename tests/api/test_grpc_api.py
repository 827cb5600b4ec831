"""The internal API over gRPC (``wsgate.v1.Gateway``): a real grpcio client against a real node.

The client is the stub grpcio-tools generated from the shipped ``gateway.proto``,
with the bearer key as plain metadata, as a Go service would send it. Every
RPC is checked end to end: real WebSocket clients receive what it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2
from websockets.exceptions import ConnectionClosed

from wsgate.api.proto.wsgate.v1 import gateway_pb2 as pb
from wsgate.api.proto.wsgate.v1 import gateway_pb2_grpc as pb_grpc
from wsgate.config import from_mapping
from wsgate.exceptions import ConfigError
from wsgate.node import Node
from wsgate.routing.grpc_reflect import reflect

from ..cluster.test_shutdown import open_sockets
from ..e2e.gateway import ADMIN_KEY, API_KEY, Peer, make_config, running
from ..helpers import eventually, free_port

AUTH = (("authorization", f"Bearer {API_KEY}"),)
ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
SERVICE = "wsgate.v1.Gateway"


def grpc_config(**sections: Any) -> Any:
    return make_config(api={"grpc_listen": "127.0.0.1:0"}, **sections)


@contextlib.asynccontextmanager
async def gateway_stub(node: Node) -> AsyncIterator[pb_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_api_port}") as channel:
        yield pb_grpc.GatewayStub(channel)


async def _code(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The status code, details and trailing metadata of a call expected to fail."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    trailing = {k: str(v) for k, v in (info.value.trailing_metadata() or ())}
    return info.value.code(), info.value.details() or "", trailing


def _publish(to: pb.Target, type_: str = "note/NEW", payload: str = "", **kw: Any) -> Any:
    return pb.PublishRequest(to=to, action=pb.Action(type=type_, payload=payload, **kw))


async def test_publish_reaches_each_target_kind_with_exclude() -> None:
    async with running(grpc_config()) as gw, gw.peer("alice") as a1, gw.peer("alice") as a2, \
            gw.peer("bob") as bob, gw.peer("carol", "globex") as carol, \
            gateway_stub(gw.node) as api:
        await a1.join("acme:orders/1")
        await bob.join("acme:orders/1")
        reply = await api.Publish(
            _publish(pb.Target(connection=a2.id), payload='{"n": 1}'), metadata=AUTH
        )
        assert reply.delivered == 1
        got = await a2.expect("note/NEW")
        assert got["payload"] == {"n": 1} and "error" not in got
        request = _publish(pb.Target(user="alice"), payload="[1, 2]")
        request.exclude.connection = a1.id
        assert (await api.Publish(request, metadata=AUTH)).delivered == 1
        assert (await a2.expect("note/NEW"))["payload"] == [1, 2]
        reply = await api.Publish(
            _publish(pb.Target(channel="acme:orders/1"), "note/BAD", '"x"', error=True),
            metadata=AUTH,
        )
        assert reply.delivered == 2
        for peer in (a1, bob):
            got = await peer.expect("note/BAD")
            assert got["payload"] == "x" and got["error"] is True
            assert got["meta"]["channel"] == "acme:orders/1"
        # no payload: the action arrives without one
        reply = await api.Publish(_publish(pb.Target(hub="acme"), "note/HUB"), metadata=AUTH)
        assert reply.delivered == 3
        for peer in (a1, a2, bob):
            assert "payload" not in await peer.expect("note/HUB")
        await a1.silent(0.1)  # the exclude held: a1 got nothing for the user publish
        await carol.silent(0.1)  # another hub's connection got nothing at all


async def test_publish_takes_a_batch_of_actions_as_the_http_api() -> None:
    async with running(grpc_config()) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob, \
            gateway_stub(gw.node) as api:
        await alice.join("acme:orders/1")
        await bob.join("acme:orders/1")
        request = pb.PublishRequest(
            to=pb.Target(channel="acme:orders/1"),
            actions=[pb.Action(type="note/NEW", payload=f'{{"i": {i}}}') for i in range(5)],
        )
        request.exclude.connection = alice.id
        assert (await api.Publish(request, metadata=AUTH)).delivered == 5
        assert [(await bob.expect("note/NEW"))["payload"]["i"] for _ in range(5)] == [0, 1, 2, 3, 4]
        await alice.silent(0.1)
        both = pb.PublishRequest(
            to=pb.Target(hub="acme"), action=pb.Action(type="x/A"), actions=[pb.Action(type="x/B")]
        )
        code, details, _ = await _code(api.Publish(both, metadata=AUTH))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "exactly one" in details
        many = pb.PublishRequest(to=pb.Target(hub="acme"), actions=[pb.Action(type="x/A")] * 1001)
        code, _, _ = await _code(api.Publish(many, metadata=AUTH))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        await bob.silent(0.1)


async def test_a_bad_key_is_unauthenticated_for_every_rpc() -> None:
    async with running(grpc_config()) as gw, gw.peer("alice") as alice, \
            gateway_stub(gw.node) as api:
        calls = [
            (api.Publish, _publish(pb.Target(connection=alice.id))),
            (api.Disconnect, pb.DisconnectRequest(connection=alice.id)),
            (api.Join, pb.JoinRequest(connection=alice.id, channel="acme:x")),
            (api.Leave, pb.LeaveRequest(connection=alice.id, channel="acme:x")),
            (api.Presence, pb.PresenceRequest(channel="acme:x")),
        ]
        for method, request in calls:
            for metadata in ((), (("authorization", "Bearer wrong"),),
                             (("authorization", API_KEY),), (("authorization", "Basic x"),)):
                code, _, _ = await _code(method(request, metadata=metadata))
                assert code is grpc.StatusCode.UNAUTHENTICATED, (method, metadata)
        await alice.silent(0.1)  # nothing reached her, and she is still connected
        await alice.send("@@wsgate/PING", id="p")
        await alice.expect("@@wsgate/PONG")


async def test_a_bad_target_or_action_is_invalid_argument() -> None:
    async with running(grpc_config()) as gw, gw.peer("alice") as alice, \
            gateway_stub(gw.node) as api:
        bad = [
            pb.PublishRequest(action=pb.Action(type="note/NEW")),  # no target
            _publish(pb.Target(channel="not an address")),
            _publish(pb.Target(hub="acme:x")),
            _publish(pb.Target(connection="")),
            _publish(pb.Target(user=alice.id), type_="@@wsgate/WELCOME"),
            _publish(pb.Target(user="alice"), type_=""),
            _publish(pb.Target(user="alice"), payload="{not json"),
            _publish(pb.Target(user="alice"), payload='{"a": 1} trailing'),
        ]
        for request in bad:
            code, details, _ = await _code(api.Publish(request, metadata=AUTH))
            assert code is grpc.StatusCode.INVALID_ARGUMENT, request
            assert details.startswith("bad publish"), details
        code, _, _ = await _code(
            api.Disconnect(pb.DisconnectRequest(), metadata=AUTH)  # names no one
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        await alice.silent(0.1)


async def test_join_presence_leave_disconnect_end_to_end() -> None:
    async with running(grpc_config()) as gw, gw.peer("alice") as alice, \
            gw.peer("alice") as tab2, gw.peer("carol", "globex") as carol, \
            gateway_stub(gw.node) as api:
        channel = "acme:orders/5"
        joined = await api.Join(pb.JoinRequest(connection=alice.id, channel=channel), metadata=AUTH)
        assert (joined.channel, joined.count, joined.forwarded) == (channel, 1, False)
        assert (await alice.expect("@@wsgate/JOINED"))["payload"]["channel"] == channel
        # the join pipeline's refusals, with the code a client's JOIN would get
        code, _, trailing = await _code(
            api.Join(pb.JoinRequest(connection=carol.id, channel=channel), metadata=AUTH)
        )
        assert code is grpc.StatusCode.PERMISSION_DENIED and trailing["wsgate-code"] == "FORBIDDEN"
        code, _, trailing = await _code(
            api.Join(pb.JoinRequest(connection=alice.id, channel="acme"), metadata=AUTH)
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and trailing["wsgate-code"] == "BAD_REQUEST"
        code, _, _ = await _code(
            api.Join(pb.JoinRequest(connection=alice.id, channel="no address"), metadata=AUTH)
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        code, _, _ = await _code(
            api.Join(pb.JoinRequest(connection="zz.nobody", channel=channel), metadata=AUTH)
        )
        assert code is grpc.StatusCode.NOT_FOUND

        presence = await api.Presence(pb.PresenceRequest(channel=channel), metadata=AUTH)
        assert presence.channel == channel and presence.count == 1
        assert [(m.user_id, m.connection_id, m.name) for m in presence.members] == [
            ("alice", alice.id, "Alice")
        ]
        empty = await api.Presence(pb.PresenceRequest(channel="acme:none"), metadata=AUTH)
        assert empty.count == 0 and not empty.members

        left = await api.Leave(pb.LeaveRequest(connection=alice.id, channel=channel), metadata=AUTH)
        assert left.forwarded is False
        assert (await alice.expect("@@wsgate/LEFT"))["payload"] == {"channel": channel}
        code, _, _ = await _code(
            api.Leave(pb.LeaveRequest(connection=alice.id, channel=channel), metadata=AUTH)
        )
        assert code is grpc.StatusCode.NOT_FOUND

        gone = await api.Disconnect(pb.DisconnectRequest(connection=carol.id), metadata=AUTH)
        assert (gone.disconnected, gone.forwarded) == (1, False)
        assert await _closed(carol) == 1000
        code, _, _ = await _code(
            api.Disconnect(pb.DisconnectRequest(connection=carol.id), metadata=AUTH)
        )
        assert code is grpc.StatusCode.NOT_FOUND
        code, _, _ = await _code(api.Disconnect(pb.DisconnectRequest(user="alice"), metadata=AUTH))
        assert code is grpc.StatusCode.PERMISSION_DENIED  # a user's disconnect: admin keys only
        revoked = await api.Disconnect(pb.DisconnectRequest(user="alice"), metadata=ADMIN)
        assert revoked.disconnected == 2
        assert await _closed(alice) == 4403 and await _closed(tab2) == 4403


@contextlib.asynccontextmanager
async def silent_listener() -> AsyncIterator[int]:
    """A port that accepts and never answers (a hung service); its port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("hook", "status", "code"),
    [
        ("down", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        ("hung", grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
    ],
)
async def test_a_failing_authorize_hook_maps_to_its_status(
    hook: str, status: grpc.StatusCode, code: str
) -> None:
    async with silent_listener() as hung:
        port = free_port() if hook == "down" else hung  # down: nothing listens there
        services = {"authz": {"url": f"http://127.0.0.1:{port}/actions", "timeout_ms": 200}}
        routes = [{"match": "@@wsgate/JOIN", "service": "authz"}]
        config = grpc_config(services=services, routes=routes)
        async with running(config) as gw, gw.peer("alice") as alice, \
                gateway_stub(gw.node) as api:
            request = pb.JoinRequest(connection=alice.id, channel="acme:orders/1")
            got, _, trailing = await _code(api.Join(request, metadata=AUTH))
            assert got is status and trailing["wsgate-code"] == code
            await alice.silent(0.1)  # no JOINED


async def test_calls_over_the_concurrency_bound_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wsgate.api import grpc_server

    monkeypatch.setattr(grpc_server, "MAX_CONCURRENT_RPCS", 2)  # 256 in production
    async with silent_listener() as hung:
        services = {"authz": {"url": f"http://127.0.0.1:{hung}/actions", "timeout_ms": 5000}}
        routes = [{"match": "@@wsgate/JOIN", "service": "authz"}]
        # the hook calls still held at the end are cut by a short drain
        config = grpc_config(services=services, routes=routes, server={"drain_timeout_ms": 100})
        async with running(config) as gw, gw.peer("alice") as alice, \
                gateway_stub(gw.node) as api:
            held = [
                asyncio.ensure_future(api.Join(pb.JoinRequest(
                    connection=alice.id, channel=f"acme:held/{i}"), metadata=AUTH))
                for i in range(3)
            ]
            try:
                await eventually(lambda: any(c.done() for c in held), what="a call refused")
                done = [c for c in held if c.done()]
                assert len(done) == 1, done  # two held by the hook, the third refused at once
                error = done[0].exception()
                assert isinstance(error, grpc.aio.AioRpcError)
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                for call in held:
                    call.cancel()

            async def served() -> bool:  # the cancelled calls free their places
                try:
                    await api.Presence(pb.PresenceRequest(channel="acme:x"), metadata=AUTH)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    return False
                return True

            await eventually(served, what="a call served again")


async def _closed(peer: Peer) -> int | None:
    """Read until the server closes ``peer``; its close code."""
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            await peer.recv()
    return info.value.rcvd.code if info.value.rcvd else None


async def test_reflection_lists_the_gateway_service_without_a_key() -> None:
    async with running(grpc_config()) as gw, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.node.grpc_api_port}") as channel:
        reflected = await reflect(channel, timeout_s=5)
        assert set(reflected.methods) == {
            f"{SERVICE}/{m}" for m in ("Publish", "Disconnect", "Join", "Leave", "Presence")
        }
        publish = reflected.methods[f"{SERVICE}/Publish"]
        assert publish.input_type.full_name == "wsgate.v1.PublishRequest"


async def test_a_message_over_the_limit_is_refused() -> None:
    async with running(grpc_config()) as gw, gw.peer("alice") as alice, \
            gateway_stub(gw.node) as api:
        big = '"' + "x" * (1 << 20) + '"'
        code, _, _ = await _code(
            api.Publish(_publish(pb.Target(connection=alice.id), payload=big), metadata=AUTH)
        )
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        await alice.silent(0.1)


def test_the_committed_generated_code_is_the_shipped_proto(tmp_path: Path) -> None:
    """Regenerating from ``gateway.proto`` gives the descriptor ``gateway_pb2`` holds."""
    src = Path(pb.__file__).parents[5]  # src/, where the code was generated from
    out = tmp_path / "gateway.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--descriptor_set_out={out}",
         "wsgate/api/proto/wsgate/v1/gateway.proto"],
        check=True, timeout=60, cwd=src,
    )
    (regenerated,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    for message in regenerated.message_type:  # the generated code leaves out default names
        for field in message.field:
            if field.json_name == _camel(field.name):
                field.ClearField("json_name")
    assert committed == regenerated


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def test_the_grpc_api_is_off_unless_grpc_listen_is_set() -> None:
    async with running() as gw:
        assert gw.node.grpc_api_port == 0
    assert from_mapping({}, env={}).api.grpc_listen == ""


def test_a_bad_grpc_listen_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        make_config(api={"grpc_listen": "nowhere"})
    assert info.value.key == "api.grpc_listen" and "expected host:port" in str(info.value)


async def test_a_grpc_listen_in_use_stops_the_node_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = Node(make_config(api={"grpc_listen": f"127.0.0.1:{port}"}))
        try:
            with pytest.raises(ConfigError) as info:
                await node.start()
            assert info.value.key == "api.grpc_listen"
        finally:
            await node.stop(deadline_s=1)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_a_stopped_node_frees_the_grpc_api_sockets() -> None:
    # grpc.aio keeps one socketpair per process from its first server on: not the node's.
    warm = grpc.aio.server()
    warm.add_insecure_port("127.0.0.1:0")
    await warm.start()
    await warm.stop(None)
    gc.collect()
    before = open_sockets()
    async with running(grpc_config()) as gw, gw.peer("alice") as alice, \
            gateway_stub(gw.node) as api:
        reply = await api.Publish(_publish(pb.Target(connection=alice.id)), metadata=AUTH)
        assert reply.delivered == 1
        await alice.expect("note/NEW")
        port = gw.node.grpc_api_port
    # stop() returned: the listener is closed already, with no collection or wait
    assert not (open_sockets() - before)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


async def test_the_sdk_grpc_publisher_drives_every_rpc() -> None:
    from wsgate.sdk import GrpcPublisher

    async with running(grpc_config()) as gw, gw.peer("alice") as alice, \
            gw.peer("alice") as tab2:
        target = f"127.0.0.1:{gw.node.grpc_api_port}"
        async with GrpcPublisher(target, API_KEY) as sdk:
            action = {"type": "note/SDK", "payload": {"a": [1, "é"]}}
            assert await sdk.publish({"connection": alice.id}, action) == 1
            assert (await alice.expect("note/SDK"))["payload"] == {"a": [1, "é"]}
            assert await sdk.publish({"user": "alice"}, {"type": "note/X", "error": True},
                                     exclude_connection=alice.id) == 1
            assert (await tab2.expect("note/X"))["error"] is True
            await sdk.join(alice.id, "acme:sdk")
            assert (await alice.expect("@@wsgate/JOINED"))["payload"]["channel"] == "acme:sdk"
            assert await sdk.presence("acme:sdk") == [
                {"userId": "alice", "connectionId": alice.id, "name": "Alice"}
            ]
            await sdk.leave(alice.id, "acme:sdk")
            await alice.expect("@@wsgate/LEFT")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await sdk.leave(alice.id, "acme:sdk")
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
            assert await sdk.disconnect(alice.id) is True
            assert await _closed(alice) == 1000
            assert await sdk.disconnect(alice.id) is False  # gone: not an error, as Publisher
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await sdk.disconnect_user("alice")  # a service key cannot
            assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        async with GrpcPublisher(target, ADMIN_KEY) as admin:
            assert await admin.disconnect_user("alice") == 1
            assert await _closed(tab2) == 4403
        async with GrpcPublisher(target, "wrong") as sdk:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await sdk.publish({"user": "alice"}, {"type": "note/X"})
            assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
