"""``Pool.settle`` runs before every change of a channel's or a hub's members.

The transport's batch (wsgate.transport.batch) holds a channel's or hub's
deliveries of one loop iteration for the members it had when it opened; it is
correct only if it is settled before any member joins or leaves. Each change
below records the members as ``settle`` saw them: always those of before.
"""

from __future__ import annotations

from wsgate.typing import ChannelAddress, HubId

from .harness import Harness

ROOM = ChannelAddress("acme:room/1")


def _watch(h: Harness) -> list[tuple[set[str], set[str]]]:
    """Each settle call, with the room's and the hub's members at that moment."""
    pool = h.gw.pool
    seen: list[tuple[set[str], set[str]]] = []

    def settle() -> None:
        channel = pool.channel(ROOM)
        hub = pool.hubs.get(HubId("acme"))
        seen.append((
            set() if channel is None else set(channel.sends),
            set() if hub is None else set(hub.members),
        ))

    pool.settle = settle
    return seen


def test_settle_runs_before_each_join_and_leave_of_a_channel() -> None:
    h = Harness()
    alice, bob = h.connect("alice"), h.connect("bob")
    seen = _watch(h)
    alice.join(ROOM)
    assert seen[-1][0] == set()  # before alice was in
    bob.join(ROOM)
    assert seen[-1][0] == {alice.id}
    n = len(seen)
    bob.join(ROOM)  # already a member: no change, no settle
    assert len(seen) == n
    bob.send("@@wsgate/LEAVE", {"channel": ROOM}, id="l")
    assert seen[-1][0] == {alice.id, bob.id}  # before bob left


def test_settle_runs_before_a_connection_enters_or_leaves_its_hubs() -> None:
    h = Harness()
    alice = h.connect("alice")
    seen = _watch(h)
    bob = h.connect("bob")
    assert seen[-1][1] == {alice.id}  # before bob was added to acme
    bob.join(ROOM)
    bob.close()
    # Leaving the room, then the hub: each settle saw bob still in.
    assert seen[-2] == ({bob.id}, {alice.id, bob.id})
    assert seen[-1] == (set(), {alice.id, bob.id})
