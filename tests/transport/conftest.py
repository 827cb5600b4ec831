"""Fixtures: a listener on 127.0.0.1:0 with a recording handler, drained after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.transport.helpers import RawClient, RecordingHandler, serve
from wsgate.transport import Listener

Start = Callable[..., Awaitable[tuple[Listener, RecordingHandler]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(**config_overrides)`` -> (listener, handler); drained at teardown."""
    listeners: list[Listener] = []

    async def _start(
        handler: RecordingHandler | None = None, **kwargs: Any
    ) -> tuple[Listener, RecordingHandler]:
        handler = handler or RecordingHandler()
        listener = await serve(handler, **kwargs)
        listeners.append(listener)
        return listener, handler

    yield _start
    clients, RawClient.made[:] = list(RawClient.made), []
    for client in clients:
        await client.aclose()
    for listener in listeners:
        await listener.drain(1001)
