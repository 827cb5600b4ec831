"""One Delivery value and the fan-out's dispatch table on its kind.

Every kind reaches exactly its target's members (never a wider set filtered
down), with and without a cluster bus; an unknown kind cannot be built.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from wsgate.core.delivery import Delivery, TargetKind
from wsgate.delivery import to_delivery
from wsgate.protocol.envelope import From
from wsgate.routing.results import Publish
from wsgate.typing import ConnectionId

from .harness import Client, Harness


class RecordingBus:
    """The core's Bus edge (the cluster is tested with real brokers in tests/cluster)."""

    def __init__(self) -> None:
        self.sent: list[Delivery] = []

    def send(self, delivery: Delivery) -> None:
        self.sent.append(delivery)


class World:
    """alice (two tabs) and bob in acme, carol in globex; some of them in views."""

    def __init__(self, bus: RecordingBus | None = None) -> None:
        self.h = Harness(bus=bus)
        self.a1, self.a2 = self.h.connect("alice"), self.h.connect("alice")
        self.bob = self.h.connect("bob")
        self.carol = self.h.connect("carol", org="globex")
        self.a1.join("acme:room")
        self.bob.join("acme:room")
        self.a2.join("acme:other")
        self.carol.join("globex:room")
        for c in self.everyone:
            c.take()

    @property
    def everyone(self) -> list[Client]:
        return [self.a1, self.a2, self.bob, self.carol]

    def target(self, kind: TargetKind) -> tuple[str, list[Client]]:
        """A target of ``kind`` and the clients that are its members."""
        return {
            TargetKind.CONNECTION: (self.bob.id, [self.bob]),
            TargetKind.USER: ("alice", [self.a1, self.a2]),
            TargetKind.CHANNEL: ("acme:room", [self.a1, self.bob]),
            TargetKind.HUB: ("acme", [self.a1, self.a2, self.bob]),
        }[kind]

    def received(self) -> dict[str, list[dict[str, Any]]]:
        return {c.id: c.take() for c in self.everyone}


KINDS = list(TargetKind)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_every_kind_delivers_only_to_its_targets_members(kind: TargetKind) -> None:
    w = World()
    target, members = w.target(kind)
    sent = w.h.gw.fanout.send(Delivery(kind, target, "note/NEW", {"k": kind.value}))
    got = w.received()
    assert sent == len(members)
    for c in w.everyone:
        if c in members:
            assert [(a["type"], a["payload"]) for a in got[c.id]] == [
                ("note/NEW", {"k": kind.value})
            ]
        else:
            assert got[c.id] == [], f"{c.id} is not in {kind.value} {target}"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_exclude_skips_one_member_of_every_kind(kind: TargetKind) -> None:
    w = World()
    target, members = w.target(kind)
    skipped = members[0]
    d = Delivery(kind, target, "note/NEW", None, exclude=ConnectionId(skipped.id))
    assert w.h.gw.fanout.send(d) == len(members) - 1
    got = w.received()
    assert got[skipped.id] == []
    assert all(len(got[c.id]) == 1 for c in members[1:])


def test_a_channel_delivery_is_stored_with_its_offset_a_hub_one_is_not() -> None:
    w = World()
    origin = From("alice", w.a1.id)
    w.h.gw.fanout.send(Delivery(TargetKind.CHANNEL, "acme:room", "chat/X", 1, origin=origin))
    w.h.gw.fanout.send(Delivery(TargetKind.HUB, "acme", "chat/Y", 2, origin=origin))
    (x, y) = w.received()[w.bob.id]
    assert x["meta"] == {
        "channel": "acme:room", "offset": x["meta"]["offset"],
        "from": {"userId": "alice", "connectionId": w.a1.id},
    }
    assert w.h.history.top("acme:room") == x["meta"]["offset"]
    assert y["meta"] == {"channel": "acme", "from": {"userId": "alice", "connectionId": w.a1.id}}


def test_a_bare_hub_as_channel_target_is_the_hub() -> None:
    w = World()
    assert w.h.gw.fanout.send(Delivery(TargetKind.CHANNEL, "acme", "note/NEW")) == 3
    assert w.received()[w.carol.id] == []


def test_an_unknown_kind_cannot_be_constructed() -> None:
    with pytest.raises(ValueError):
        TargetKind("chan")
    with pytest.raises(TypeError):
        Delivery("channel", "acme:room", "note/NEW")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Delivery("chan", "acme:room", "note/NEW")  # type: ignore[arg-type]


def test_a_delivery_is_frozen() -> None:
    d = Delivery(TargetKind.USER, "alice", "note/NEW")
    with pytest.raises(AttributeError):
        d.target = "bob"  # type: ignore[misc]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_with_a_bus_each_kind_goes_out_once_and_channels_only_through_it(
    kind: TargetKind,
) -> None:
    bus = RecordingBus()
    w = World(bus)
    target, members = w.target(kind)
    d = Delivery(kind, target, "note/NEW", None)
    local = w.h.gw.fanout.send(d)
    got = w.received()
    if kind is TargetKind.CHANNEL:  # the broker assigns the offset; delivered on receipt
        assert (local, bus.sent) == (0, [d])
        assert all(v == [] for v in got.values())
    elif kind is TargetKind.CONNECTION:  # here: no other node needs it
        assert (local, bus.sent) == (1, [])
    else:
        assert (local, bus.sent) == (len(members), [d])
    assert all(len(got[c.id]) == (kind is not TargetKind.CHANNEL) for c in members)


def test_with_a_bus_a_connection_elsewhere_goes_to_the_bus() -> None:
    bus = RecordingBus()
    w = World(bus)
    d = Delivery(TargetKind.CONNECTION, "n2.abc", "note/NEW")
    assert w.h.gw.fanout.send(d) == 0
    assert bus.sent == [d]
    assert all(v == [] for v in w.received().values())


@pytest.mark.parametrize(
    "kind", [TargetKind.CONNECTION, TargetKind.USER, TargetKind.HUB], ids=lambda k: k.value
)
def test_a_delivery_from_another_node_reaches_local_members_only(kind: TargetKind) -> None:
    bus = RecordingBus()
    w = World(bus)
    target, members = w.target(kind)
    assert w.h.gw.fanout.deliver_local(Delivery(kind, target, "note/NEW")) == len(members)
    assert bus.sent == []  # never sent on again
    got = w.received()
    assert all(len(got[c.id]) == (c in members) for c in w.everyone)


def test_a_channel_delivery_from_another_node_carries_the_brokers_offset() -> None:
    bus = RecordingBus()
    w = World(bus)
    d = Delivery(TargetKind.CHANNEL, "acme:room", "chat/X", msgspec.Raw(b'{"n":1}'))
    assert w.h.gw.fanout.deliver_channel(d, 7, 6) == 2
    got = w.received()
    assert got[w.a1.id][0]["meta"] == {"channel": "acme:room", "offset": 7}
    assert got[w.a2.id] == []
    assert bus.sent == []


@pytest.mark.parametrize(
    ("to", "kind"),
    [
        ({"connection": "n1.x"}, TargetKind.CONNECTION),
        ({"user": "alice"}, TargetKind.USER),
        ({"channel": "acme:room"}, TargetKind.CHANNEL),
        ({"hub": "acme"}, TargetKind.HUB),
    ],
)
def test_a_publish_becomes_one_delivery(to: dict[str, str], kind: TargetKind) -> None:
    body = {"to": to, "action": {"type": "note/NEW", "payload": {"a": 1}, "error": True},
            "exclude": {"connection": "n1.y"}}
    publish = msgspec.json.decode(msgspec.json.encode(body), type=Publish)
    assert to_delivery(publish.to, publish.action, publish.exclude) == Delivery(
        kind, next(iter(to.values())), "note/NEW", msgspec.Raw(b'{"a":1}'), True,
        exclude=ConnectionId("n1.y"),
    )
