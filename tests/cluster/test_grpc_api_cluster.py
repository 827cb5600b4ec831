"""A Go-style publisher through the gRPC API reaches connections on another node.

"Go-style": the publisher knows only the ``gateway.proto`` the package ships.
It compiles it with ``protoc`` (grpcio-tools) into a private descriptor pool,
as a Go service runs ``protoc --go_out`` on it, and calls the methods by
their paths with the bearer key as plain metadata; it imports none of
wsgate's generated code. Two real nodes over each backend (memory, Redis,
NATS); every call goes to node ``a`` and every connection is on node ``b``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from websockets.exceptions import ConnectionClosed

from ..e2e.gateway import Peer, Running
from ..helpers import eventually
from .cluster import ADMIN_KEY, API_KEY, cluster

METADATA = (("authorization", f"Bearer {API_KEY}"),)
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_KEY}"),)
GRPC_API = {"grpc_listen": "127.0.0.1:0"}


def _compile_shipped_proto() -> Any:
    """The shipped ``gateway.proto`` compiled by protoc into a fresh pool."""
    shipped = importlib.resources.files("wsgate.api.proto.wsgate.v1") / "gateway.proto"
    include = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "wsgate" / "v1").mkdir(parents=True)
        src = Path(tmp) / "wsgate" / "v1" / "gateway.proto"  # where a Go module would keep it
        src.write_text(shipped.read_text())
        out = Path(tmp) / "gateway.desc"
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"-I{include}",
             "--include_imports", f"--descriptor_set_out={out}", str(src)],
            check=True, timeout=60,
        )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    for proto in files:
        pool.Add(proto)
    return pool


class GoStylePublisher:
    """Calls ``/wsgate.v1.Gateway/<Method>`` with messages built from the shipped .proto only."""

    def __init__(self, channel: grpc.aio.Channel, pool: Any) -> None:
        self._channel = channel
        self._pool = pool

    def message(self, name: str, **fields: Any) -> Any:
        cls = message_factory.GetMessageClass(self._pool.FindMessageTypeByName(f"wsgate.v1.{name}"))
        return cls(**fields)

    async def call(self, method: str, metadata: Any = METADATA, **fields: Any) -> Any:
        service = self._pool.FindServiceByName("wsgate.v1.Gateway")
        descriptor = service.FindMethodByName(method)
        request = self.message(descriptor.input_type.name, **fields)
        reply = message_factory.GetMessageClass(descriptor.output_type)
        rpc = self._channel.unary_unary(
            f"/wsgate.v1.Gateway/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        return await rpc(request, metadata=metadata, timeout=5)


@pytest.fixture(scope="module")
def shipped_pool() -> Any:
    return _compile_shipped_proto()


@contextlib.asynccontextmanager
async def publisher(node: Running, pool: Any) -> AsyncIterator[GoStylePublisher]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.node.grpc_api_port}") as channel:
        yield GoStylePublisher(channel, pool)


async def _closed(peer: Peer) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            await peer.recv()
    return info.value.rcvd.code if info.value.rcvd else None


async def test_a_go_style_publisher_on_a_reaches_connections_on_b(
    broker_url: str, shipped_pool: Any
) -> None:
    async with cluster(broker_url, size=2, api=GRPC_API) as (a, b), b.peer("bob") as bob, \
            b.peer("bob") as tab2, publisher(a, shipped_pool) as go:
        await b.node.bus.flush()  # type: ignore[union-attr]  # bob's subjects are live
        gw = go.message
        # to a connection id, a user and a hub: all on b, none counted on a
        reply = await go.call("Publish", to=gw("Target", connection=bob.id),
                              action=gw("Action", type="note/ONE", payload='{"n": 1}'))
        assert reply.delivered == 0
        assert (await bob.expect("note/ONE"))["payload"] == {"n": 1}
        await go.call("Publish", to=gw("Target", user="bob"), action=gw("Action", type="note/ALL"),
                      exclude=gw("Exclude", connection=tab2.id))
        await bob.expect("note/ALL")
        await go.call("Publish", to=gw("Target", hub="acme"), action=gw("Action", type="note/HUB"))
        await bob.expect("note/HUB")
        await tab2.expect("note/HUB")  # its first note: the user publish excluded it
        # a join through a: forwarded to b, which runs its join pipeline
        joined = await go.call("Join", connection=bob.id, channel="acme:orders/7")
        assert joined.forwarded is True and joined.channel == "acme:orders/7"
        assert (await bob.expect("@@wsgate/JOINED"))["payload"]["channel"] == "acme:orders/7"
        await go.call("Publish", to=gw("Target", channel="acme:orders/7"),
                      action=gw("Action", type="note/CHANNEL", payload="7"))
        assert (await bob.expect("note/CHANNEL"))["payload"] == 7

        async def bob_is_present() -> bool:
            answer = await go.call("Presence", channel="acme:orders/7")
            return [(m.user_id, m.connection_id) for m in answer.members] == [("bob", bob.id)]

        await eventually(bob_is_present, what="b's member in a's presence answer")
        left = await go.call("Leave", connection=bob.id, channel="acme:orders/7")
        assert left.forwarded is True
        assert (await bob.expect("@@wsgate/LEFT"))["payload"] == {"channel": "acme:orders/7"}
        gone = await go.call("Disconnect", connection=bob.id)
        assert (gone.disconnected, gone.forwarded) == (0, True)
        assert await _closed(bob) == 1000
        # A user's disconnect takes an admin key; its revocation reaches every node.
        await go.call("Disconnect", metadata=ADMIN_METADATA, user="bob")
        assert await _closed(tab2) == 4403


async def test_a_bad_key_or_target_is_refused_by_the_node_asked(
    broker_url: str, shipped_pool: Any
) -> None:
    async with cluster(broker_url, size=2, api=GRPC_API) as (a, b), b.peer("bob") as bob, \
            publisher(a, shipped_pool) as go:
        gw = go.message
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await go.call("Publish", to=gw("Target", hub="not a hub"),
                          action=gw("Action", type="note/X"))
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.node.grpc_api_port}") as channel:
            rpc = channel.unary_unary("/wsgate.v1.Gateway/Publish")
            request = gw("PublishRequest", to=gw("Target", connection=bob.id),
                         action=gw("Action", type="note/X"))
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await rpc(request.SerializeToString(), metadata=(("authorization", "Bearer no"),))
            assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
        await bob.silent(0.2)
