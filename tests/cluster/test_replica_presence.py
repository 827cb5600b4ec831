"""A node's replica of other nodes' members feeds the presence batcher only real changes.

The broker may hand a node a presence diff that changes nothing: a diff that
overtook the store read filling the replica (see ``wsgate.cluster.presence``),
or one delivered again. The batcher cancels a pending join against a later
leave (and a leave against a rejoin), so a no-op diff reported as a change
would make it drop a real one. These tests feed the real
:class:`ClusterPresence` the envelopes the bus would hand it, over the real
core gateway with a manual clock (no sockets: the diffs' order must be exact,
which a live broker cannot be made to produce on demand).
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from wsgate.backends.memory_cluster import MemoryPresence, _Hub
from wsgate.cluster import envelope as env
from wsgate.cluster.ports import BusPort
from wsgate.cluster.presence import ClusterPresence, tick_s
from wsgate.cluster.ticker import Ticker
from wsgate.protocol.builtins import Member
from wsgate.typing import ChannelAddress

from ..core.harness import Client, Harness

ROOM = "acme:room"


class _QuietBus:
    """``on_diff`` never reaches the bus; anything that does fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the bus was used: {name}")


async def _no_sweep(nodes: set[str]) -> None:
    raise AssertionError("a sweep ran")


def _diff(joined: list[Member] = [], left: list[Member] = []) -> env.Envelope:  # noqa: B006
    extra = msgspec.json.encode({"joined": joined, "left": left})
    return env.Envelope(env.PRESENCE, ROOM, "n2", extra=extra)


def _setup() -> tuple[Harness, ClusterPresence, Client]:
    h = Harness(batch_ms=50)
    presence = ClusterPresence(
        cast(BusPort, _QuietBus()),
        h.gw,
        MemoryPresence(_Hub()),
        Ticker(tick_s(10.0)),  # never started: registration only
        ttl_s=10.0,
        forget_nodes=_no_sweep,
    )
    carol = h.connect("carol")
    carol.join(ROOM)
    channel = h.gw.pool.channel(ChannelAddress(ROOM))
    assert channel is not None
    channel.remote = presence.replica(ChannelAddress(ROOM))  # as the bus does on a first join
    h.clock.advance(1.0)
    carol.take()
    return h, presence, carol


def _seen(client: Client, start: set[str]) -> set[str]:
    view = set(start)
    for a in client.take():
        if a["type"] == "@@wsgate/PRESENCE":
            view -= {m["connectionId"] for m in a["payload"]["left"]}
            view |= {m["connectionId"] for m in a["payload"]["joined"]}
    return view


def test_a_repeated_join_does_not_swallow_the_leave_after_it() -> None:
    h, presence, carol = _setup()
    x = Member(userId="x", connectionId="n2.x")
    presence.on_diff(_diff(joined=[x]), 0, 0)
    h.clock.advance(1.0)
    view = _seen(carol, {carol.id})
    assert view == {carol.id, "n2.x"}
    presence.on_diff(_diff(joined=[x]), 0, 0)  # again: x was already there
    presence.on_diff(_diff(left=[x]), 0, 0)
    h.clock.advance(1.0)
    assert _seen(carol, view) == {carol.id}


def test_a_leave_of_someone_absent_does_not_swallow_the_join_after_it() -> None:
    h, presence, carol = _setup()
    x = Member(userId="x", connectionId="n2.x")
    presence.on_diff(_diff(left=[x]), 0, 0)  # x was not there
    presence.on_diff(_diff(joined=[x]), 0, 0)
    h.clock.advance(1.0)
    assert _seen(carol, {carol.id}) == {carol.id, "n2.x"}
