"""Isolation property: no inbox action, replay or redelivery reaches another user or organization.

A seeded random walk over users of two organizations: pushes to users (some asking for a
receipt, some acknowledged), tabs that drop and come back with RESUME. Every action any
tab receives names its own user.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import aiohttp
import pytest

from .gateway import API_KEY, Peer, make_config, running

USERS = {"alice": "acme", "bob": "acme", "mallory": "globex", "trent": "globex"}
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def drain(peer: Peer, user: str, seen: list[int]) -> None:
    """Read what has arrived; assert each inbox action is this user's and ACK receipts."""
    with contextlib.suppress(TimeoutError):
        for _ in range(500):
            action: dict[str, Any] = await peer.recv(0.02)
            if action["type"] != "note/NEW":
                continue
            assert action["payload"]["for"] == user, (user, action)
            offset = action["meta"]["offset"]
            seen.append(offset)
            if action["meta"].get("ack") and action["payload"]["ackme"]:
                await peer.send("@@wsgate/ACK", {"offset": offset})


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_no_inbox_or_redelivered_action_reaches_another_user(seed: int) -> None:
    rng = random.Random(seed)
    config = make_config(inbox={"ack_timeout_ms": 50, "max_messages": 8})
    async with running(config) as gw, aiohttp.ClientSession(headers=HEADERS) as http:
        tabs: dict[str, tuple[contextlib.AsyncExitStack, Peer]] = {}
        last: dict[str, int] = {}
        seen: dict[str, list[int]] = {u: [] for u in USERS}
        try:
            for step in range(30):  # bounded walk
                user = rng.choice(list(USERS))
                move = rng.random()
                if move < 0.3 and user in tabs:
                    stack, peer = tabs.pop(user)
                    await drain(peer, user, seen[user])
                    await stack.aclose()
                elif move < 0.5 and user not in tabs:
                    stack = contextlib.AsyncExitStack()
                    peer = await stack.enter_async_context(gw.peer(user, USERS[user]))
                    tabs[user] = (stack, peer)
                    await peer.send("@@wsgate/RESUME", {"inbox": last.get(user, 0)}, id="r")
                else:
                    body = {
                        "to": {"user": user},
                        "action": {"type": "note/NEW",
                                   "payload": {"for": user, "step": step, "ackme": rng.random() < 0.5}},
                        "ack": rng.random() < 0.5,
                    }
                    async with http.post(f"{gw.node.api_url}/v1/publish", json=body) as resp:
                        assert resp.status == 202
                for name, (_, peer) in tabs.items():
                    await drain(peer, name, seen[name])
                    if seen[name]:
                        last[name] = max(seen[name])
        finally:
            for stack, _ in tabs.values():
                await stack.aclose()
        assert any(seen.values()), "the walk delivered nothing"
