"""``wsgate.delivery.deliver``: a service's publish reaches exactly its target's local members."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.core.harness import Client, Harness
from wsgate.delivery import deliver
from wsgate.routing.results import Publish


def publish(to: dict[str, str], *, exclude: str | None = None, **action: Any) -> Publish:
    body: dict[str, Any] = {"to": to, "action": {"type": "svc/NEWS", **action}}
    if exclude is not None:
        body["exclude"] = {"connection": exclude}
    return msgspec.json.decode(msgspec.json.encode(body), type=Publish)  # as from the wire: raw payload


@pytest.fixture
def world() -> tuple[Harness, dict[str, Client]]:
    """alice (two tabs) and bob of acme in acme:orders/1, carol of globex in globex:orders/1."""
    h = Harness()
    clients = {
        "alice": h.connect("alice"), "alice2": h.connect("alice"), "bob": h.connect("bob"),
        "carol": h.connect("carol", org="globex"),
    }
    for name in ("alice", "alice2", "bob"):
        clients[name].join("acme:orders/1")
    clients["carol"].join("globex:orders/1")
    for client in clients.values():
        client.take()
    return h, clients


def news(clients: dict[str, Client]) -> dict[str, list[dict[str, Any]]]:
    """Who received what (presence aside), emptying every sink."""
    got = {name: [a for a in c.take() if a["type"] == "svc/NEWS"] for name, c in clients.items()}
    return {name: actions for name, actions in got.items() if actions}


@pytest.mark.parametrize(("to", "who"), [
    ({"channel": "acme:orders/1"}, {"alice", "alice2", "bob"}),
    ({"user": "alice"}, {"alice", "alice2"}),
    ({"hub": "acme"}, {"alice", "alice2", "bob"}),
    ({"hub": "globex"}, {"carol"}),
    ({"channel": "acme:orders/2"}, set()),  # nobody joined it
    ({"user": "mallory"}, set()),
])
def test_each_kind_of_target_reaches_its_members_only(
    world: tuple[Harness, dict[str, Client]], to: dict[str, str], who: set[str]
) -> None:
    h, clients = world
    assert deliver(h.gw, publish(to, payload={"v": 1})) == len(who)
    got = news(clients)
    assert set(got) == who
    assert all(actions == [actions[0]] and actions[0]["payload"] == {"v": 1} for actions in got.values())


def test_a_connection_target_and_the_sender_excluded(world: tuple[Harness, dict[str, Client]]) -> None:
    h, clients = world
    assert deliver(h.gw, publish({"connection": clients["bob"].id})) == 1
    assert set(news(clients)) == {"bob"}
    channel = {"channel": "acme:orders/1"}
    assert deliver(h.gw, publish(channel, exclude=clients["alice"].id)) == 2
    assert set(news(clients)) == {"alice2", "bob"}


def test_an_absent_payload_stays_absent_and_error_passes_through(
    world: tuple[Harness, dict[str, Client]],
) -> None:
    h, clients = world
    assert deliver(h.gw, publish({"connection": clients["bob"].id}, error=True)) == 1
    (action,) = news(clients)["bob"]
    assert "payload" not in action and action.get("error") is True
    assert deliver(h.gw, publish({"connection": clients["bob"].id}, payload=[1, "x"])) == 1
    (action,) = news(clients)["bob"]
    assert action["payload"] == [1, "x"] and not action.get("error")
