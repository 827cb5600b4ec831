"""Backend failures raise under the one exception root (:class:`wsgate.exceptions.WsgateError`).

Real servers, stopped for the outage: every awaited store call then raises
:class:`BackendUnavailable` (a :class:`BackendError`), its driver's error as
``__cause__``; opening an unreachable server too; a bad URL scheme is a
:class:`ConfigError` naming ``broker.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.helpers import free_port
from tests.servers import ServerProcess, nats_server, redis_server
from wsgate.backends import open_backend
from wsgate.backends.base import Backend, Registration
from wsgate.exceptions import BackendError, BackendUnavailable, ConfigError, WsgateError

Call = Callable[[Backend], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "history.since": lambda b: b.history.since("s", 0),
    "history.window": lambda b: b.history.window("s"),
    "presence.add": lambda b: b.presence.add("room", "c1", "n", b""),
    "presence.remove": lambda b: b.presence.remove("room", "c1"),
    "presence.members": lambda b: b.presence.members("room"),
    "presence.beat": lambda b: b.presence.beat("n", 5.0),
    "presence.dead_nodes": lambda b: b.presence.dead_nodes({"n"}),
    "presence.purge": lambda b: b.presence.purge("room", {"n"}),
    "limits.acquire": lambda b: b.limits.acquire("k", 1.0, 0.0),
    "limits.count": lambda b: b.limits.count("k", "m", "n", 1),
    "limits.forget_node": lambda b: b.limits.forget_node("n"),
    "registry.put": lambda b: b.registry.put(Registration("a", "http://x", [], time.time() + 9)),
    "registry.delete": lambda b: b.registry.delete("a", "http://x"),
    "registry.all": lambda b: b.registry.all(),
}


def test_the_tree() -> None:
    assert issubclass(BackendUnavailable, BackendError)
    assert issubclass(BackendError, WsgateError)


async def test_a_bad_url_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        await open_backend("bogus://127.0.0.1", prefix="p", node="n", history_size=1,
                           history_ttl_s=1.0)
    assert caught.value.key == "broker.url"


@pytest.mark.parametrize("scheme", ["redis", "nats"])
async def test_opening_an_unreachable_server_raises_backend_unavailable(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}"
    with pytest.raises(BackendUnavailable) as caught:
        await asyncio.wait_for(
            open_backend(url, prefix="p", node="n", history_size=1, history_ttl_s=1.0), 10.0
        )
    assert caught.value.__cause__ is not None


@pytest.fixture(scope="module", params=["redis", "nats"])
def stopped_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with (redis_server() if request.param == "redis" else nats_server()) as server:
        yield server


@pytest.fixture
async def down(stopped_server: ServerProcess) -> AsyncIterator[Backend]:
    """A backend whose server has just been stopped (started again afterwards)."""
    backend = await asyncio.wait_for(
        open_backend(stopped_server.url, prefix=f"e{uuid.uuid4().hex[:8]}", node="n",
                     history_size=4, history_ttl_s=30.0),
        10.0,
    )
    stopped_server.stop()
    try:
        yield backend
    finally:
        stopped_server.start()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(backend.close(), 10.0)


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_a_call_during_an_outage_raises_backend_unavailable(
    down: Backend, name: str
) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        await asyncio.wait_for(CALLS[name](down), 15.0)
    assert name.split(".")[1] in str(caught.value)
    assert caught.value.__cause__ is not None
    assert not isinstance(caught.value.__cause__, WsgateError)  # the driver's own error


async def test_a_nats_flush_during_an_outage_raises_backend_unavailable(down: Backend) -> None:
    if type(down).__name__ != "NatsBackend":
        pytest.skip("the Redis broker's flush waits for the reconnection (documented in base.py)")
    await down.broker.start(lambda _: None)
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(down.broker.flush(), 15.0)
