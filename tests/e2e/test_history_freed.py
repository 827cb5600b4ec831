"""A running node frees the history of channels nobody holds (the memory backend, ``serve``'s
default). A client relays into ever-new views: the node never retains more streams than
``history.max_channels``, and once the node goes quiet they are all freed about
``ttl_s`` after their last member left (before: kept until something else happened on
the node, forever on a quiet one)."""

from __future__ import annotations

from ..helpers import eventually
from .gateway import make_config, running


async def test_relaying_into_new_views_keeps_history_bounded_and_frees_it() -> None:
    config = make_config(history={"size": 10, "ttl_s": 1, "max_channels": 20})
    async with running(config) as gw, gw.peer("alice") as alice:
        assert gw.node.gateway is not None
        history = gw.node.gateway.history
        most = 0
        for i in range(60):
            await alice.send("@@wsgate/NAVIGATE", {"view": f"fresh/{i}"}, id=f"n{i}")
            await alice.expect("@@wsgate/JOINED")
            await alice.send("chat/MESSAGE", {"i": i}, channel=f"acme:fresh/{i}", echo=True)
            await alice.expect("chat/MESSAGE")
            most = max(most, len(history))  # type: ignore[arg-type]
        assert 1 < most <= 20
        await alice.send("@@wsgate/LEAVE", {"channel": "acme:fresh/59"}, id="bye")
        await alice.expect("@@wsgate/LEFT")
        # Nothing more happens on the node: its periodic sweep frees the rest.
        await eventually(lambda: len(history) == 0, timeout=5.0)  # type: ignore[arg-type]
