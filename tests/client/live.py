"""Python clients against a live node: the settings every test here shares."""

from __future__ import annotations

from typing import Any

from wsgate.client import Backoff, Client

from ..e2e.gateway import ORIGIN, Running

FAST = Backoff(min_ms=20, max_ms=200, later_ms=200)
"""Short steps so a reconnect takes milliseconds, not seconds."""


def client_of(gw: Running, user: str, org: str = "acme", **options: Any) -> Client:
    """A client of ``gw`` signed in as ``user`` with the node's own session cookie."""
    return Client(gw.url, cookie=gw.cookie(user, org), origin=ORIGIN, backoff=FAST,
                  timeout_s=3.0, **options)


class Seen:
    """Actions a handler received, in order (a test reads at most ``cap`` of them)."""

    def __init__(self, cap: int = 1000) -> None:
        self.cap = cap
        self.actions: list[dict[str, Any]] = []

    def __call__(self, action: dict[str, Any]) -> None:
        assert len(self.actions) < self.cap, "more actions than the test expects"
        self.actions.append(action)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["type"] == type_]

    def payloads(self, type_: str) -> list[Any]:
        return [a.get("payload") for a in self.of(type_)]
