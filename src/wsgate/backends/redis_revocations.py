"""Revocations in Redis: one hash ``<prefix>:revocations``, ``key -> [not_before, expires_at]``."""

from __future__ import annotations

import json
import time
from typing import cast

import redis.asyncio as aioredis

from wsgate.backends.redis_pool import close_client, open_client

__all__ = ["RedisRevocations"]

_PUT = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
local nb, upto = tonumber(ARGV[2]), tonumber(ARGV[3])
if held then
  local old = cjson.decode(held)
  if old[1] > nb then nb = old[1] end
  if old[2] > upto then upto = old[2] end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({nb, upto}))
"""
_DELETE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RedisRevocations:
    """:class:`~wsgate.backends.base.RevocationStore` on the backend's command client.

    The merge of :meth:`put` is one script (atomic). :meth:`all` filters by
    this node's clock and deletes an expired field only if nobody re-put it
    meanwhile, so the hash holds at most what was revoked within ``ttl_s``
    (plus what no node has read since it expired).
    """

    def __init__(self, cmd: aioredis.Redis, prefix: str) -> None:
        self._cmd = cmd
        self._key = f"{prefix}:revocations"
        self._put = cmd.register_script(_PUT)
        self._delete_if = cmd.register_script(_DELETE_IF)

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisRevocations:
        """A store with a client of its own (closed by :meth:`close`)."""
        return cls(open_client(url, socket_connect_timeout=2.0, socket_timeout=5.0),
                   prefix)

    async def put(self, key: str, not_before: float, ttl_s: float) -> None:
        await self._put(keys=[self._key], args=[key, not_before, time.time() + ttl_s])

    async def all(self) -> dict[str, float]:
        raw = cast("dict[bytes, bytes]", await self._cmd.hgetall(self._key))
        now = time.time()
        found: dict[str, float] = {}
        for field, value in raw.items():
            not_before, until = json.loads(value)
            if until > now:
                found[field.decode()] = float(not_before)
            else:
                await self._delete_if(keys=[self._key], args=[field, value])
        return found

    async def close(self) -> None:
        await close_client(self._cmd)
