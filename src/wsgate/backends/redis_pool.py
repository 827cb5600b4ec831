"""The Redis clients of a node: a pool that stays closed once it was closed.

redis-py lets a client be used after :meth:`aclose`: the next command takes a
pooled connection and connects it again. A store call that arrives while the
node stops (a member's leave finishing after the backend closed) would then
open a socket that nothing closes. :func:`open_client` builds the client on a
:class:`ClosingPool`, and :func:`close_client` closes it for good: any later
command raises redis-py's ``ConnectionError``, which the stores' boundary
(:data:`~wsgate.backends.redis_stores.guard`) reports as
:class:`~wsgate.exceptions.BackendUnavailable`.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["ClosingPool", "close_client", "open_client"]


class ClosingPool(aioredis.ConnectionPool):
    """A connection pool that gives out no connection after :meth:`close`."""

    closed = False
    """Set by :meth:`close`; never cleared."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self.closed:
            raise RedisConnectionError("the Redis client is closed")
        # redis-py's own method is untyped.
        connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
            *args, **kwargs
        )
        return connection

    async def close(self) -> None:
        """Refuse every later command, then disconnect every connection, in use or not."""
        self.closed = True
        await self.disconnect(inuse_connections=True)


def open_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """A client on a :class:`ClosingPool` of its own (``kwargs`` as for
    ``redis.asyncio.Redis.from_url``); close it with :func:`close_client`."""
    return aioredis.Redis(connection_pool=ClosingPool.from_url(url, **kwargs))


async def close_client(client: aioredis.Redis) -> None:
    """Close ``client`` and its pool for good (see the module's docstring)."""
    await client.aclose(close_connection_pool=False)
    pool = client.connection_pool
    if isinstance(pool, ClosingPool):
        await pool.close()
    else:
        await pool.disconnect()
