"""The cluster envelope carries a Delivery across the broker and back, of every kind."""

from __future__ import annotations

import msgspec
import pytest

from wsgate.cluster import envelope as env
from wsgate.core.delivery import Delivery, TargetKind
from wsgate.protocol.envelope import From
from wsgate.typing import ConnectionId

TARGETS = {
    TargetKind.CONNECTION: "n2.abc",
    TargetKind.USER: "alice",
    TargetKind.CHANNEL: "acme:orders/42",
    TargetKind.HUB: "acme",
}


@pytest.mark.parametrize("kind", list(TargetKind), ids=lambda k: k.value)
@pytest.mark.parametrize("relayed", [True, False], ids=["relayed", "published"])
def test_every_kind_round_trips_through_the_broker_bytes(kind: TargetKind, relayed: bool) -> None:
    sent = Delivery(
        kind,
        TARGETS[kind],
        "chat/MESSAGE",
        msgspec.Raw(b'{"text":"hi","n":[1,2]}'),
        error=relayed,
        origin=From("alice", "n1.tab") if relayed else None,
        exclude=ConnectionId("n1.tab") if relayed else None,
    )
    data = env.encode(env.Envelope.from_delivery(sent, "n1"))
    envelope = env.decode(data)
    assert envelope is not None and envelope.origin == "n1"
    assert envelope.to_delivery() == sent


def test_a_decoded_payload_is_json_text() -> None:
    sent = Delivery(TargetKind.USER, "alice", "note/NEW", {"a": [1, None]})
    envelope = env.decode(env.encode(env.Envelope.from_delivery(sent, "n1")))
    assert envelope is not None
    received = envelope.to_delivery()
    assert received is not None and received.payload == msgspec.Raw(b'{"a":[1,null]}')


def test_the_broker_names_of_the_kinds_are_one_table_and_unchanged() -> None:
    # Other nodes (and the NATS stream names) read these: they are wire format.
    assert env.KIND_NAMES == {
        TargetKind.CHANNEL: "chan",
        TargetKind.HUB: "hub",
        TargetKind.USER: "user",
        TargetKind.CONNECTION: "conn",
    }
    assert (env.CHANNEL, env.HUB, env.USER, env.CONNECTION) == ("chan", "hub", "user", "conn")
    sent = Delivery(TargetKind.CHANNEL, "acme:v", "x/Y")
    assert env.Envelope.from_delivery(sent, "n1").kind == "chan"


def test_an_envelope_that_is_no_delivery_gives_none() -> None:
    assert env.Envelope(env.PRESENCE, "acme:v", "n1").to_delivery() is None
    assert env.Envelope(env.CONTROL, "n1.x", "n1").to_delivery() is None
    assert env.Envelope("channel", "acme:v", "n1").to_delivery() is None


def test_an_acknowledged_delivery_keeps_its_id_and_an_older_envelope_has_none() -> None:
    sent = Delivery(TargetKind.USER, "alice", "task/DO", None, ack="d-1")
    back = env.decode(env.encode(env.Envelope.from_delivery(sent, "n1")))
    assert back is not None and back.ack == "d-1"
    delivery = back.to_delivery()
    assert delivery is not None and delivery.ack == "d-1"
    # An older node's envelope (no trailing ack): no receipt asked.
    old = msgspec.msgpack.encode(["user", "alice", "n0", "task/DO", b"null"])
    decoded = env.decode(old)
    assert decoded is not None and decoded.ack == ""
    delivery = decoded.to_delivery()
    assert delivery is not None and delivery.ack is None
