"""A real JWKS endpoint (aiohttp on a free port on 127.0.0.1) whose keys a test rotates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..helpers import free_port
from .tokens import KeyPair


class JwksServer:
    """Serves ``{"keys": [...]}`` of :attr:`pairs` at ``/jwks``; counts the requests."""

    def __init__(self, pairs: list[KeyPair]) -> None:
        self.pairs = list(pairs)
        self.hits = 0
        self.status = 200
        """Answer this status instead (500: the issuer is down)."""
        self.gate: asyncio.Event | None = None
        """When set, requests wait for it (a slow issuer)."""
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 5)
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        body: dict[str, Any] = {"keys": [p.jwk() for p in self.pairs]}
        return web.json_response(body)


@contextlib.asynccontextmanager
async def jwks_server(pairs: list[KeyPair]) -> AsyncIterator[JwksServer]:
    server = JwksServer(pairs)
    app = web.Application()
    app.router.add_get("/jwks", server._jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    try:
        yield server
    finally:
        await runner.cleanup()
