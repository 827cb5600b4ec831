"""Property: no action reaches a connection outside its target, organization, team or role.

Hypothesis drives random sequences of connect, join, leave, navigate, relay
and disconnect by users of several organizations through the real core and
the real channel policy. After every relay the set of connections that
received it must be exactly the channel's members as each client was told
(JOINED minus LEFT), minus the sender, and each recipient must belong to the
channel's organization. The ``board`` views are conflated (a ``[[namespaces]]``
rule): their relays go out when the window ends, which the test lets pass, so
no conflated action reaches anyone outside its channel either.

Pushes to a user go through the inbox and, with ``ack``, acknowledged
delivery: interleaved with reconnects that RESUME from offset 0, ACKs of some
of them and the clock passing the redelivery timeout, every pushed action
(live, replayed or sent again) reaches only tabs of the user it was pushed
to, and a live push reaches each of that user's tabs exactly once.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wsgate.config import ChannelRule, NamespaceRule
from wsgate.core.acks import AckSettings
from wsgate.delivery import deliver
from wsgate.routing.results import Publish, ResultAction, Target

from .harness import Client, Harness

USERS = {"ann": "acme", "ben": "acme", "cat": "globex", "dan": "globex", "eve": "initech"}
TEAMS = {"ann": ("red",), "ben": ("blue",), "cat": ("red",), "dan": (), "eve": ("red", "blue")}
ROLES = {"ann": ("admin",), "ben": (), "cat": (), "dan": ("admin",), "eve": ()}
HUBS = ["acme", "globex", "initech", "public"]
VIEWS = ["orders/1", "orders/2", "board", "team/red", "team/blue/board", "admin/panel"]
RULES = [ChannelRule(match="*:admin/*", roles=["admin"])]
CONFLATED = [NamespaceRule(match="*:board", conflate_ms=50, conflate_key="payload.k")]
PUSH = "note/PUSH"
ACK_TIMEOUT_S = 0.5


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
        self.h = Harness(
            batch_ms=0, rules=RULES, namespaces=CONFLATED, inbox=8,
            acks=AckSettings(timeout_s=ACK_TIMEOUT_S, ttl_s=30.0, max_entries=64),
        )
        self.clients: list[Client] = []
        self.believed: dict[str, set[str]] = {}
        self.serial = 0
        self.owner: dict[int, str] = {}
        """The user each pushed serial was pushed to."""
        self.unacked: dict[str, set[int]] = {}
        """Per connection, the ``meta.offset`` of acknowledged pushes it got, not yet ACKed."""

    def _absorb(self, client: Client, actions: list[dict[str, Any]]) -> None:
        mine = self.believed.setdefault(client.id, set())
        for a in actions:
            if a["type"] == PUSH:
                assert self.owner[a["payload"]["serial"]] == client.conn.principal.sub, a
                assert "offset" in a["meta"], a  # it went through the inbox
                if a.get("meta", {}).get("ack"):
                    self.unacked.setdefault(client.id, set()).add(a["meta"]["offset"])
            elif a["type"] == "@@wsgate/JOINED":
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

    @rule(user=st.sampled_from(sorted(USERS)), ack=st.booleans())
    def push(self, user: str, ack: bool) -> None:
        """A service's publish to ``user`` (through the inbox; ``ack``: with a receipt)."""
        for c in self._live():
            self._absorb(c, c.take())
        self.serial += 1
        self.owner[self.serial] = user
        action = ResultAction(type=PUSH, payload=msgspec.Raw(b'{"serial":%d}' % self.serial))
        publish = Publish(to=Target(user=user), action=action, ack=ack)
        acks = self.h.gw.acks
        assert acks is not None
        deliver(self.h.gw, publish, acks.reserve() if ack else None)
        for c in self._live():
            got = c.take()
            serials = [a["payload"]["serial"] for a in got if a["type"] == PUSH]
            mine = c.conn.principal.sub == user
            assert serials == ([self.serial] if mine else []), (c.conn.principal.sub, got)
            self._absorb(c, got)

    @precondition(lambda self: any(self.unacked.get(c.id) for c in self._live()))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from([c for c in self._live() if self.unacked.get(c.id)]))
        offset = data.draw(st.sampled_from(sorted(self.unacked[client.id])))
        self.unacked[client.id].discard(offset)
        self._absorb(client, client.send("@@wsgate/ACK", {"offset": offset}))

    @rule()
    def time_passes(self) -> None:
        """Past the redelivery timeout: unacknowledged pushes go out again, to their user."""
        self.h.clock.advance(ACK_TIMEOUT_S * 1.5)
        for c in self._live():
            self._absorb(c, c.take())

    @rule(user=st.sampled_from(sorted(USERS)))
    def reconnect_and_resume(self, user: str) -> None:
        """A new tab RESUMEs from offset 0: the replay holds only this user's pushes."""
        client = self.h.connect(user, USERS[user], teams=TEAMS[user], roles=ROLES[user])
        self.clients.append(client)
        self._absorb(client, client.take())
        got = client.send("@@wsgate/RESUME", {"inbox": 0})
        assert got and got[0]["type"] == "@@wsgate/RESUMED", got
        replayed = [a["payload"]["serial"] for a in got if a["type"] == PUSH]
        assert replayed == sorted(replayed)
        self._absorb(client, got)

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self._live()))
        client.close()
        self.believed.pop(client.id, None)
        self.unacked.pop(client.id, None)

    @invariant()
    def pool_matches_beliefs(self) -> None:
        for c in self._live():
            assert (c.conn.channels or set()) == self.believed.get(c.id, set())


Isolation.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestIsolation = Isolation.TestCase
