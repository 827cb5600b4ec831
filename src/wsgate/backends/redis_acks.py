"""Delivery records in Redis: one hash ``<prefix>:ack:<id>`` per delivery, with a TTL.

Fields ``target``, ``user`` (``1``/``0``), ``offset``, ``state``, ``expires_at``.
:meth:`RedisAcks.record` and :meth:`RedisAcks.finish` are one Lua script each
(the read and the write atomic); the key's ``PEXPIRE`` frees it.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis.asyncio as aioredis

from wsgate.backends.ack_store import AckRecord
from wsgate.backends.redis_pool import close_client, open_client
from wsgate.backends.redis_stores import guard

__all__ = ["RedisAcks"]

_RECORD = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'target', ARGV[1], 'user', ARGV[2], 'offset', ARGV[3],
             'state', ARGV[4], 'expires_at', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return 1
end
if state == 'acked' or state == 'expired' then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[1], 'offset', ARGV[3]) end
if ARGV[4] == 'delivered' then redis.call('HSET', KEYS[1], 'state', 'delivered') end
return 1
"""
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'acked' or state == 'expired' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_FIELDS = ("target", "user", "offset", "state", "expires_at")


class RedisAcks:
    """:class:`~wsgate.backends.ack_store.AckStore` on a client of its own."""

    def __init__(self, cmd: aioredis.Redis, prefix: str) -> None:
        self._cmd = cmd
        self._prefix = prefix
        self._record = cmd.register_script(_RECORD)
        self._finish = cmd.register_script(_FINISH)

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisAcks:
        """A store with a client of its own (closed by :meth:`close`)."""
        return cls(open_client(url, socket_connect_timeout=2.0, socket_timeout=5.0),
                   prefix)

    def _key(self, id_: str) -> str:
        return f"{self._prefix}:ack:{id_}"

    @guard
    async def record(self, id_: str, record: AckRecord, ttl_s: float) -> None:
        life_ms = max(1, int((record.expires_at - time.time() + ttl_s) * 1000))
        await self._record(
            keys=[self._key(id_)],
            args=[record.target, int(record.user), record.offset, record.state,
                  repr(record.expires_at), life_ms],
        )

    @guard
    async def finish(self, id_: str, state: str, ttl_s: float) -> bool:
        done = await self._finish(keys=[self._key(id_)], args=[state, max(1, int(ttl_s * 1000))])
        return bool(done)

    @guard
    async def get(self, ids: list[str]) -> dict[str, AckRecord]:
        if not ids:
            await self._cmd.ping()
            return {}
        pipe = self._cmd.pipeline(transaction=False)
        for id_ in ids:
            pipe.hmget(self._key(id_), _FIELDS)
        rows = cast("list[list[Any]]", await pipe.execute())
        found: dict[str, AckRecord] = {}
        for id_, row in zip(ids, rows, strict=True):
            if row[3] is None:
                continue
            target, user, offset, state, expires_at = row
            found[id_] = AckRecord(
                target.decode(), user == b"1", int(offset), state.decode(), float(expires_at)
            )
        return found

    async def close(self) -> None:
        await close_client(self._cmd)
