"""Property: no action reaches a connection outside its target, organization, team or role.

Hypothesis drives random sequences of connect, join, leave, navigate, relay
and disconnect by users of several organizations through the real core and
the real channel policy. After every relay the set of connections that
received it must be exactly the channel's members as each client was told
(JOINED minus LEFT), minus the sender, and each recipient must belong to the
channel's organization. The ``board`` views are conflated (a ``[[namespaces]]``
rule): their relays go out when the window ends, which the test lets pass, so
no conflated action reaches anyone outside its channel either.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wsgate.config import ChannelRule, NamespaceRule

from .harness import Client, Harness

USERS = {"ann": "acme", "ben": "acme", "cat": "globex", "dan": "globex", "eve": "initech"}
TEAMS = {"ann": ("red",), "ben": ("blue",), "cat": ("red",), "dan": (), "eve": ("red", "blue")}
ROLES = {"ann": ("admin",), "ben": (), "cat": (), "dan": ("admin",), "eve": ()}
HUBS = ["acme", "globex", "initech", "public"]
VIEWS = ["orders/1", "orders/2", "board", "team/red", "team/blue/board", "admin/panel"]
RULES = [ChannelRule(match="*:admin/*", roles=["admin"])]
CONFLATED = [NamespaceRule(match="*:board", conflate_ms=50, conflate_key="payload.k")]


def may_see(user: str, channel: str) -> bool:
    """The policy, restated independently of the gateway's code."""
    hub, _, view = channel.partition(":")
    if hub != "public" and hub != USERS[user]:
        return False
    if view.startswith("team/") and view.split("/")[1] not in TEAMS[user]:
        return False
    return not (view.startswith("admin/") and "admin" not in ROLES[user])


class Isolation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(batch_ms=0, rules=RULES, namespaces=CONFLATED)
        self.clients: list[Client] = []
        self.believed: dict[str, set[str]] = {}
        self.serial = 0

    def _absorb(self, client: Client, actions: list[dict[str, Any]]) -> None:
        mine = self.believed.setdefault(client.id, set())
        for a in actions:
            if a["type"] == "@@wsgate/JOINED":
                mine.add(a["payload"]["channel"])
            elif a["type"] == "@@wsgate/LEFT":
                mine.discard(a["payload"]["channel"])

    def _live(self) -> list[Client]:
        return [c for c in self.clients if not c.conn.closed]

    @rule(user=st.sampled_from(sorted(USERS)))
    def connect(self, user: str) -> None:
        client = self.h.connect(user, USERS[user], teams=TEAMS[user], roles=ROLES[user])
        self.clients.append(client)
        self._absorb(client, client.take())

    @precondition(lambda self: self._live())
    @rule(data=st.data(), hub=st.sampled_from(HUBS), view=st.sampled_from(VIEWS))
    def join(self, data: st.DataObject, hub: str, view: str) -> None:
        client = data.draw(st.sampled_from(self._live()))
        got = client.join(f"{hub}:{view}")
        self._absorb(client, got)
        allowed = may_see(client.conn.principal.sub, f"{hub}:{view}")
        assert (got[-1]["type"] == "@@wsgate/JOINED") == allowed, got

    @precondition(lambda self: self._live())
    @rule(data=st.data(), hub=st.sampled_from(HUBS), view=st.sampled_from(VIEWS))
    def leave(self, data: st.DataObject, hub: str, view: str) -> None:
        client = data.draw(st.sampled_from(self._live()))
        self._absorb(client, client.send("@@wsgate/LEAVE", {"channel": f"{hub}:{view}"}))

    @precondition(lambda self: self._live())
    @rule(data=st.data(), view=st.sampled_from(VIEWS), hub=st.sampled_from([None, *HUBS]))
    def navigate(self, data: st.DataObject, view: str, hub: str | None) -> None:
        client = data.draw(st.sampled_from(self._live()))
        payload = {"view": view} if hub is None else {"view": view, "hub": hub}
        self._absorb(client, client.send("@@wsgate/NAVIGATE", payload))

    @precondition(lambda self: self._live())
    @rule(data=st.data(), hub=st.sampled_from(HUBS), view=st.sampled_from(VIEWS))
    def relay(self, data: st.DataObject, hub: str, view: str) -> None:
        sender = data.draw(st.sampled_from(self._live()))
        channel = f"{hub}:{view}"
        self.serial += 1
        marker = self.serial
        for c in self._live():
            self._absorb(c, c.take())
        sender.send("chat/MESSAGE", {"serial": marker, "k": marker % 3}, channel=channel)
        conflated = self.h.gw.pool.channel(channel)  # type: ignore[arg-type]
        if conflated is not None and conflated.options.conflate_ms:
            self.h.clock.advance(0.06)  # the window ends: its latest goes out
        expected = {
            c.id for c in self._live() if channel in self.believed.get(c.id, ()) and c is not sender
        }
        if channel not in self.believed.get(sender.id, ()):
            expected = set()
        received = set()
        for c in self._live():
            got = c.take()
            relayed = [a for a in got if a["type"] == "chat/MESSAGE"]
            if relayed:
                assert [a["payload"]["serial"] for a in relayed] == [marker]
                assert relayed[0]["meta"]["channel"] == channel
                received.add(c.id)
                assert may_see(c.conn.principal.sub, channel)
            self._absorb(c, got)
        assert received == expected

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self._live()))
        client.close()
        self.believed.pop(client.id, None)

    @invariant()
    def pool_matches_beliefs(self) -> None:
        for c in self._live():
            assert (c.conn.channels or set()) == self.believed.get(c.id, set())


Isolation.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestIsolation = Isolation.TestCase
