"""Start a real node in-process on a free port and talk to it with real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KeyRing, new_key
from wsgate.auth.principal import Principal
from wsgate.config import Config, from_mapping
from wsgate.node import Node

ORIGIN = "http://app.test"
API_KEY = "test-api-key"
ADMIN_KEY = "test-admin-key"


def make_config(**sections: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "allowed_origins": [ORIGIN]},
        "api": {"listen": "127.0.0.1:0", "keys": [API_KEY]},
        "admin": {"keys": [ADMIN_KEY]},
        "auth": {"keys": [new_key()]},
        "presence": {"batch_ms": 0},
        "relays": [{"match": "chat/*"}],
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return from_mapping(data, env={})


class Peer:
    """A real WebSocket client speaking wire protocol v1."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return str(self.welcome["connectionId"])

    async def send(self, type_: str, payload: Any = None, **meta: Any) -> None:
        action: dict[str, Any] = {"type": type_}
        if payload is not None:
            action["payload"] = payload
        if meta:
            action["meta"] = meta
        await self.ws.send(json.dumps(action))

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        return json.loads(data)  # type: ignore[no-any-return]

    async def expect(self, type_: str, timeout: float = 3.0) -> dict[str, Any]:
        """Read until an action of ``type_`` arrives (skipping presence noise)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(1000):
            action = await self.recv(max(0.01, deadline - loop.time()))
            if action["type"] == type_:
                return action
        raise AssertionError(f"no {type_}")

    async def silent(self, seconds: float = 0.2) -> None:
        """Assert that nothing but presence arrives for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            for _ in range(1000):
                action = await self.recv(seconds)
                assert action["type"] == "@@wsgate/PRESENCE", action

    async def join(self, channel: str) -> dict[str, Any]:
        await self.send("@@wsgate/JOIN", {"channel": channel}, id=f"join-{channel}")
        for _ in range(100):
            action = await self.recv()
            if action.get("meta", {}).get("inReplyTo") == f"join-{channel}":
                return action
        raise AssertionError("no answer to JOIN")


class Running:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.codec = CookieCodec.from_config(
            node.config.auth, KeyRing.from_config(node.config.auth)
        )

    @property
    def url(self) -> str:
        return self.node.url

    def cookie(self, user: str, org: str = "acme", **claims: Any) -> str:
        principal = Principal(sub=user, name=user.title(), org=org, orgs=(org,), **claims)
        return f"{self.node.config.auth.cookie_name}={self.codec.seal(principal)}"

    @contextlib.asynccontextmanager
    async def peer(
        self, user: str | None, org: str = "acme", *, cookie: str | None = None, **claims: Any
    ) -> AsyncIterator[Peer]:
        headers = {}
        if cookie is not None:
            headers["Cookie"] = cookie
        elif user is not None:
            headers["Cookie"] = self.cookie(user, org, **claims)
        async with websockets.connect(
            self.url,
            additional_headers=headers,
            origin=ORIGIN,
            open_timeout=5,  # type: ignore[arg-type]
        ) as ws:
            p = Peer(ws)
            welcome = await p.recv()
            assert welcome["type"] == "@@wsgate/WELCOME", welcome
            p.welcome = welcome["payload"]
            yield p


@contextlib.asynccontextmanager
async def running(config: Config | None = None) -> AsyncIterator[Running]:
    node = Node(config or make_config())
    await node.start()
    try:
        yield Running(node)
    finally:
        await node.stop()
