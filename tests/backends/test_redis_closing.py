"""A Redis client of a node opens no socket that nothing will close: not when the
server refuses it at open, not when a store is called after it was closed.

Either leak shows as a ``ResourceWarning`` when the garbage collector finds the
connection, in whatever test runs then: the second (redis-py lets a closed
client connect again) once failed a NATS test in a full run. A Redis that wants a
password accepts the connection and answers ``PING`` with ``NOAUTH``.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.exceptions

from tests.servers import REDIS_SERVER, ServerProcess, redis_server
from wsgate.backends.acks import open_acks
from wsgate.backends.redis import open_redis
from wsgate.backends.revocations import open_revocations
from wsgate.exceptions import BackendUnavailable


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[ServerProcess]:
    if REDIS_SERVER is None:
        pytest.skip("no redis-server")
    with redis_server(extra=["--requirepass", "not-given"]) as server:
        yield server


def _opens(url: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "acks": lambda: open_acks(url, prefix="t", ttl_s=10.0),
        "revocations": lambda: open_revocations(url, prefix="t", ttl_s=10.0),
        "backend": lambda: open_redis(url, prefix="t", node="n", history_size=8,
                                      history_ttl_s=10.0),
    }


@pytest.mark.parametrize("store", ["acks", "revocations", "backend"])
async def test_a_refused_open_leaves_no_connection_open(
    locked_redis: ServerProcess, store: str
) -> None:
    failed = False
    try:
        await _opens(locked_redis.url)[store]()
    except Exception:  # the driver's authentication error, or ours wrapping it
        failed = True
    assert failed, "a Redis that wants a password must refuse the open"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def _resource_warnings() -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]


async def test_a_closed_backend_opens_no_connection_again(redis_proc: ServerProcess) -> None:
    """A call that reaches a store after the node closed its backend (a member's
    leave finishing during a stop) is refused as unavailable; it must not open a
    fresh pooled connection that nothing would close."""
    backend = await open_redis(redis_proc.url, prefix="late", node="n", history_size=8,
                               history_ttl_s=10.0)
    await backend.presence.add("acme:orders/1", "c1", "n", b"{}")
    await backend.close()
    with pytest.raises(BackendUnavailable):
        await backend.presence.remove("acme:orders/1", "c1")
    with pytest.raises(BackendUnavailable):
        await backend.history.since("acme:orders/1", 0)
    assert _resource_warnings() == []


async def test_a_closed_store_opens_no_connection_again(redis_proc: ServerProcess) -> None:
    acks = await open_acks(redis_proc.url, prefix="late", ttl_s=10.0)
    revocations = await open_revocations(redis_proc.url, prefix="late", ttl_s=10.0)
    await acks.close()
    await revocations.close()
    with pytest.raises(BackendUnavailable):
        await acks.get(["d1"])
    with pytest.raises(redis.exceptions.ConnectionError):  # this store raises the driver's errors
        await revocations.all()
    assert _resource_warnings() == []
