"""A tiny real WebSocket server that plays the gateway's part a test scripts.

For what the node does not do yet (``SESSION_EXPIRING`` / ``REFRESH``, issue 12
item 3) and for closes and silences a live node will not produce on demand.
Every connection is recorded (request headers, frames received) and handed to
the test's ``script`` coroutine; the server stops when the test leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

WELCOME = {"type": "@@wsgate/WELCOME",
           "payload": {"connectionId": "n1.1", "userId": "u", "node": "n1", "hubs": [],
                       "heartbeatMs": 0}}


@dataclass
class Conn:
    """One connection the server accepted."""

    ws: ServerConnection
    headers: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        action: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.received.append(action)
        return action

    async def send(self, action: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(action))


Script = Callable[[Conn], Awaitable[None]]


@dataclass
class Scripted:
    url: str
    conns: list[Conn] = field(default_factory=list)


@contextlib.asynccontextmanager
async def scripted(script: Script, max_conns: int = 20) -> AsyncIterator[Scripted]:
    """Serve on a free port of 127.0.0.1; each connection runs ``script`` (at most ``max_conns``)."""
    state = Scripted("")

    async def handler(ws: ServerConnection) -> None:
        assert len(state.conns) < max_conns, "more connections than the test expects"
        conn = Conn(ws, dict(ws.request.headers) if ws.request else {})
        state.conns.append(conn)
        await script(conn)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        state.url = f"ws://127.0.0.1:{port}/ws"
        yield state
