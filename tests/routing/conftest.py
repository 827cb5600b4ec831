"""Fixtures: a manual clock, a refused URL and an upstream app (``serve`` is in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web

from tests.conftest import Serve


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/actions"


REPLY_BODY: dict[str, Any] = {
    "reply": [{"type": "orders/GOT", "payload": {"id": 1}, "meta": {"channel": "acme:orders/1"}}],
    "publish": [
        {"to": {"channel": "acme:orders/1"}, "action": {"type": "orders/CHANGED", "payload": [1]}},
        {
            "to": {"user": "u9"},
            "action": {"type": "orders/NOTE"},
            "exclude": {"connection": "n1.abc"},
        },
    ],
}


class Upstream:
    """A service with one path per behaviour; records what it receives."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.failing = False
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{kind}", self.handle)
        return app

    def hits(self, kind: str) -> int:
        return sum(1 for path, _, _ in self.requests if path == f"/{kind}")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, dict(request.headers), body))
        kind = request.match_info["kind"]
        if kind == "reply":
            return web.Response(body=msgspec.json.encode(REPLY_BODY))
        if kind == "accepted":
            return web.Response(status=202)
        if kind == "nocontent":
            return web.Response(status=204)
        if kind == "slow":
            await asyncio.sleep(1.0)  # the behaviour: a service slower than its caller's timeout
            return web.Response(status=204)
        if kind == "hold":  # until the test releases it
            self.entered.set()
            await asyncio.wait_for(self.release.wait(), 5)
            return web.Response(status=204)
        if kind == "error":
            return web.Response(status=500, text="Traceback: secret internals")
        if kind == "unavailable":
            return web.Response(status=503)
        if kind == "notfound":
            return web.Response(status=404)
        if kind == "badjson":
            return web.Response(body=b'{"reply": [', content_type="application/json")
        if kind == "wrongshape":
            return web.json_response({"reply": {"type": "orders/GOT"}})
        if kind == "badtype":
            return web.json_response({"reply": [{"type": "@@wsgate/WELCOME"}]})
        if kind == "badtarget":
            target = {"channel": "acme:x", "user": "u1"}
            return web.json_response({"publish": [{"to": target, "action": {"type": "a"}}]})
        if kind == "huge":
            return web.json_response({"reply": [{"type": "big", "payload": "x" * 5000}]})
        if kind == "toggle":
            return web.Response(status=503 if self.failing else 204)
        return web.Response(status=418)


@pytest.fixture
async def upstream(serve: Serve) -> AsyncIterator[tuple[Upstream, str]]:
    """An :class:`Upstream` and its base URL."""
    up = Upstream()
    base = await serve(up.app())
    yield up, base
    up.release.set()
