"""A channel's deliveries of one loop iteration are batched (wsgate.transport.batch):
what each member receives, and in which order, is what it was without the batch.

Each test runs its sends synchronously, inside one loop iteration, against a real
node, and reads what real WebSocket clients receive.
"""

from __future__ import annotations

from typing import Any

from wsgate.core.delivery import Delivery, TargetKind
from wsgate.protocol.address import parse_address
from wsgate.typing import ChannelAddress, ConnectionId

from .gateway import Peer, Running, make_config, running

ROOM = "acme:room/1"


async def _chat(peer: Peer, n: int) -> list[str]:
    """The types of the next ``n`` ``chat/*`` actions ``peer`` receives (presence skipped)."""
    got: list[str] = []
    for _ in range(200):
        if len(got) == n:
            return got
        action = await peer.recv()
        if action["type"].startswith("chat/"):
            got.append(action["type"])
    raise AssertionError(got)


def _to_room(gw: Running, type_: str, exclude: str | None = None) -> None:
    gw.node.gateway.fanout.send(
        Delivery(TargetKind.CHANNEL, ROOM, type_, {"n": type_},
                 exclude=None if exclude is None else ConnectionId(exclude))
    )


def _to_one(gw: Running, peer: Peer, type_: str) -> None:
    gw.node.gateway.fanout.send(Delivery(TargetKind.CONNECTION, peer.id, type_))


def _conn(gw: Running, peer: Peer) -> Any:
    return gw.node.gateway.pool.connections[ConnectionId(peer.id)]


async def test_a_burst_into_a_channel_is_batched_and_arrives_in_order() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        for p in (alice, bob):
            await p.join(ROOM)
        flusher = gw.node.listener.flusher  # type: ignore[union-attr]
        written, settled = flusher.batches_written, flusher.batches_settled
        for i in range(100):  # past BATCH_FRAMES: written early, within the iteration
            _to_room(gw, f"chat/M{i}", exclude=alice.id if i % 2 else None)
        assert flusher.batch is not None  # the batch is what this test exercises
        assert flusher.batches_written == written + 1  # the first 64, at once
        assert await _chat(bob, 100) == [f"chat/M{i}" for i in range(100)]
        assert (flusher.batches_written, flusher.batches_settled) == (written + 2, settled)
        # The sender a relay skips gets the others, in order, and not its own.
        assert await _chat(alice, 50) == [f"chat/M{i}" for i in range(0, 100, 2)]
        _to_one(gw, alice, "chat/END")
        assert await _chat(alice, 1) == ["chat/END"]


async def test_what_is_sent_between_a_channels_actions_keeps_its_place() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("bob") as bob, \
            gw.peer("carol") as carol:
        await alice.join(ROOM)
        await bob.join(ROOM)
        await bob.join("acme:other/1")
        await carol.join("acme:other/1")
        flusher = gw.node.listener.flusher  # type: ignore[union-attr]
        written, settled = flusher.batches_written, flusher.batches_settled
        _to_room(gw, "chat/A1")
        _to_one(gw, bob, "chat/REPLY")  # a connection's delivery between two of the room's
        _to_room(gw, "chat/A2")
        gw.node.gateway.fanout.send(Delivery(TargetKind.CHANNEL, "acme:other/1", "chat/B1"))
        _to_room(gw, "chat/A3")
        # A1's batch and A2's were settled (by the reply, by the other channel); B1's by A3.
        assert flusher.batches_settled == settled + 3
        assert await _chat(bob, 5) == ["chat/A1", "chat/REPLY", "chat/A2", "chat/B1", "chat/A3"]
        assert await _chat(alice, 3) == ["chat/A1", "chat/A2", "chat/A3"]
        assert await _chat(carol, 1) == ["chat/B1"]
        assert flusher.batches_written == written + 1  # A3's, at the end of the iteration


async def test_a_join_or_leave_between_a_channels_actions_cuts_them_there() -> None:
    # No presence in the room, and joins answered here: nothing but the membership
    # change itself happens between the two actions.
    config = make_config(namespaces=[{"match": "acme:room/*", "presence": False}])
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob, \
            gw.peer("carol") as carol, gw.peer("dave") as dave:
        for p in (alice, bob, carol):
            await p.join(ROOM)
        gateway = gw.node.gateway
        address = parse_address(ROOM)
        assert address is not None
        answers: list[Any] = []
        _to_room(gw, "chat/BEFORE")
        assert gw.node.listener.flusher.batch is not None  # type: ignore[union-attr]
        assert gateway.leave(_conn(gw, carol), ChannelAddress(ROOM))
        gateway.request_join(_conn(gw, dave), address, answers.append)
        _to_room(gw, "chat/AFTER")
        assert len(answers) == 1 and not hasattr(answers[0], "code")  # joined now
        assert await _chat(alice, 2) == ["chat/BEFORE", "chat/AFTER"]
        assert await _chat(bob, 2) == ["chat/BEFORE", "chat/AFTER"]
        # Carol left after BEFORE, Dave joined before AFTER: each gets only its side.
        assert await _chat(carol, 1) == ["chat/BEFORE"]
        assert await _chat(dave, 1) == ["chat/AFTER"]
        _to_one(gw, carol, "chat/END")
        assert await _chat(carol, 1) == ["chat/END"]  # nothing of AFTER came before it


async def test_a_member_closed_in_the_iteration_gets_what_was_sent_before_its_close() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        for p in (alice, bob):
            await p.join(ROOM)
        _to_room(gw, "chat/LAST")
        _conn(gw, bob).sink.close(4001, "bye")
        _to_room(gw, "chat/LATER")
        assert await _chat(bob, 1) == ["chat/LAST"]
        await bob.ws.wait_closed()
        assert bob.ws.close_code == 4001
        assert await _chat(alice, 2) == ["chat/LAST", "chat/LATER"]


async def test_a_hubs_burst_is_batched_and_keeps_each_connections_order() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        flusher = gw.node.listener.flusher  # type: ignore[union-attr]
        written, settled = flusher.batches_written, flusher.batches_settled

        def to_hub(type_: str) -> None:
            gw.node.gateway.fanout.send(Delivery(TargetKind.HUB, "acme", type_))

        for i in range(10):
            to_hub(f"chat/H{i}")
        _to_one(gw, bob, "chat/REPLY")  # settles the hub's batch: after H9, before H10
        to_hub("chat/H10")
        assert flusher.batches_settled == settled + 1
        assert await _chat(alice, 11) == [f"chat/H{i}" for i in range(11)]
        assert await _chat(bob, 12) == [f"chat/H{i}" for i in range(10)] + [
            "chat/REPLY", "chat/H10"
        ]
        assert flusher.batches_written == written + 1
