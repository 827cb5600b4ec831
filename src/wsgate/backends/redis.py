"""The cluster backend over one Redis server (``redis://``, ``rediss://``).

Layout (every key and pub/sub channel under ``prefix``):

- ``{prefix}:sub:{subject}`` — the pub/sub channel of a broker subject;
- ``{prefix}:stream:{stream}`` — a Redis stream of ``(offset, data)``, entry id
  ``<offset>-0``, exactly ``history_size`` long at most, expiring
  ``history_ttl_s`` after its last append (Redis key expiry: no sweeper);
- ``{prefix}:top:{stream}`` — the stream's last offset and its ``created``
  base, expiring with the stream;
- ``{prefix}:streams`` — a sorted set ``stream → last append`` (server time,
  µs): past ``history_max_channels`` members the oldest streams are deleted
  by the append that overflowed it; it expires ``history_ttl_s`` after the
  last append too;
- ``{prefix}:inboxes`` — the same index for users' inbox streams (named
  ``@inbox:<user>``, :func:`~wsgate.backends.base.is_inbox`), which are
  bounded apart by ``[inbox]``: ``inbox_size`` long, expiring
  ``inbox_ttl_s`` after their last append, at most ``inbox_max_users`` of
  them cluster-wide. Inboxes never count against ``history_max_channels``;
- ``{prefix}:floor`` — the highest offset ever issued under the prefix (one
  key, never expiring): a re-created stream starts above it;
- ``{prefix}:pres:{channel}`` — a hash ``conn_id → node + member``;
- ``{prefix}:node:{node}`` — a node's heartbeat, a key with a TTL;
- ``{prefix}:gcra:{key}`` — a GCRA theoretical arrival time in microseconds;
- ``{prefix}:count:{key}`` — a hash ``member → node``; and
  ``{prefix}:nodecount:{node}`` — a hash ``key → members of node in key``, so
  :meth:`RedisLimits.forget_node` needs no ``SCAN``;
- ``{prefix}:registry`` — a hash of service registrations.

Scripts touch keys they build from their arguments, so a sharded Redis
Cluster is not supported: one server (or a primary with replicas) is.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from wsgate.backends.redis_broker import RedisBroker
from wsgate.backends.redis_pool import close_client, open_client
from wsgate.backends.redis_stores import (
    RedisHistory,
    RedisLimits,
    RedisPresence,
    RedisRegistry,
    guard,
)

__all__ = [
    "RedisBackend",
    "RedisBroker",
    "RedisHistory",
    "RedisLimits",
    "RedisPresence",
    "RedisRegistry",
    "open_redis",
]


class RedisBackend:
    """:class:`~wsgate.backends.base.Backend` over one Redis server.

    ``broker`` owns a pub/sub connection; the stores and the broker's
    publishes share one command pool. Store calls made while Redis is
    unreachable raise :class:`~wsgate.exceptions.BackendUnavailable` (after one
    immediate retry, which absorbs a pooled connection a restart broke), from
    redis-py's ``ConnectionError``.
    """

    def __init__(
        self,
        cmd: aioredis.Redis,
        sub: aioredis.Redis,
        prefix: str,
        size: int,
        ttl_s: float,
        max_channels: int = 10_000,
        *,
        inbox_size: int = 100,
        inbox_ttl_s: float = 300.0,
        inbox_max_users: int = 10_000,
    ) -> None:
        self._cmd = cmd
        self._sub = sub
        self.broker = RedisBroker(
            cmd, sub, prefix, size, ttl_s, max_channels=max_channels,
            inbox=(inbox_size, inbox_ttl_s, inbox_max_users),
        )
        self.history = RedisHistory(cmd, prefix)
        self.presence = RedisPresence(cmd, prefix)
        self.limits = RedisLimits(cmd, prefix)
        self.registry = RedisRegistry(cmd, prefix)

    async def close(self) -> None:
        await self.broker.close()
        for client in (self._sub, self._cmd):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close_client(client), 5.0)


@guard
async def open_redis(
    url: str,
    *,
    prefix: str,
    node: str,
    history_size: int,
    history_ttl_s: float,
    history_max_channels: int = 10_000,
    inbox_size: int = 100,
    inbox_ttl_s: float = 300.0,
    inbox_max_users: int = 10_000,
) -> RedisBackend:
    """Connect to the Redis server at ``url``.

    Raises :class:`~wsgate.exceptions.BackendUnavailable` if it does not answer
    ``PING`` (within 2 s to connect, 5 s to answer).

    ``node`` is unused (every key is shared by the cluster under ``prefix``).
    """
    common: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "health_check_interval": 0,
    }
    # Commands: one retry absorbs a pooled connection that a restart broke.
    cmd = open_client(url, retry=Retry(NoBackoff(), 1), socket_timeout=5.0, **common)
    # Pub/sub: no retry inside redis-py; the broker's reader owns reconnection.
    sub = open_client(url, retry=Retry(NoBackoff(), 0), **common)
    backend = RedisBackend(
        cmd, sub, prefix, history_size, history_ttl_s, history_max_channels,
        inbox_size=inbox_size, inbox_ttl_s=inbox_ttl_s, inbox_max_users=inbox_max_users,
    )
    try:
        await cmd.ping()
        await backend.broker.load()
    except BaseException:
        await backend.close()
        raise
    return backend
