"""The Redis stores: history, presence, limits and registrations.

Key layout and guarantees: :mod:`wsgate.backends.redis`.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions

from wsgate.backends.base import Registration, StreamReplay, StreamWindow
from wsgate.backends.errors import boundary

__all__ = ["RedisHistory", "RedisLimits", "RedisPresence", "RedisRegistry", "guard"]

guard = boundary(
    (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, TimeoutError),
    (redis.exceptions.RedisError,),
)
"""The Redis backend's boundary: every public awaited call raises
:class:`~wsgate.exceptions.BackendUnavailable` (connection refused or lost, no
answer within the socket timeout, after redis-py's one retry) or
:class:`~wsgate.exceptions.BackendError` (any other Redis error)."""


class RedisHistory:
    """:class:`~wsgate.backends.base.HistoryStore` over the streams the broker writes.

    Trimming is exact (``MAXLEN n``, not ``~``): a stream holds its last
    ``history_size`` offsets, so ``since(o)`` recovers iff the stream has not
    expired, ``created <= o <= top`` (or ``o == 0`` and nothing was evicted)
    and ``top - o <= history_size``. Offsets are contiguous per stream, so
    the last evicted offset is the first remaining one minus one, and nothing
    was evicted iff the first remaining one is ``created + 1``. One ``MULTI``
    reads the stream and its top together.
    """

    def __init__(self, cmd: aioredis.Redis, prefix: str) -> None:
        self._cmd = cmd
        self._prefix = prefix

    async def _read(self, stream: str, after: int) -> tuple[int, int, int, list[Any]] | None:
        """``(evicted, created, top, entries after "after")``, or ``None`` when unknown."""
        skey, tkey = f"{self._prefix}:stream:{stream}", f"{self._prefix}:top:{stream}"
        pipe = self._cmd.pipeline(transaction=True)
        pipe.exists(skey)
        pipe.get(tkey)
        pipe.xrange(skey, "-", "+", count=1)
        pipe.xrange(skey, str(max(after, 0) + 1), "+")
        exists, raw_top, first, rows = await pipe.execute()
        if not exists or raw_top is None:
            return None
        top_s, _, created_s = raw_top.partition(b":")
        top, created = int(top_s), int(created_s or 0)
        if not first:
            evicted = top  # history_size 0: everything is evicted at once
        else:
            head = _entry_offset(first[0][0])
            evicted = 0 if head == created + 1 else head - 1
        return evicted, created, top, rows

    @guard
    async def since(self, stream: str, offset: int) -> StreamReplay:
        found = await self._read(stream, offset)
        if found is None:
            return StreamReplay(offset == 0, [], 0)
        evicted, created, top, rows = found
        if offset < evicted or offset > top or 0 < offset < created:
            return StreamReplay(False, [], top)
        return StreamReplay(True, [(_entry_offset(i), f[b"d"]) for i, f in rows], top)

    @guard
    async def window(self, stream: str) -> StreamWindow:
        found = await self._read(stream, 0)
        if found is None:
            return StreamWindow(0, [], 0)
        evicted, _, top, rows = found
        return StreamWindow(evicted, [(_entry_offset(i), f[b"d"]) for i, f in rows], top)


def _entry_offset(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])


# Presence --------------------------------------------------------------------

_PURGE = """
local nodes = {}
for i = 1, #ARGV do nodes[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local n = string.byte(v, 1) * 256 + string.byte(v, 2)
  if nodes[string.sub(v, 3, 2 + n)] then gone[#gone + 1] = all[i] end
end
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[1], unpack(gone, i, math.min(i + 999, #gone)))
end
return gone
"""


def _pack_member(node: str, member: bytes) -> bytes:
    raw = node.encode()
    return struct.pack(">H", len(raw)) + raw + member


def _unpack_member(value: bytes) -> tuple[str, bytes]:
    (n,) = struct.unpack_from(">H", value)
    return value[2 : 2 + n].decode(), value[2 + n :]


class RedisPresence:
    """:class:`~wsgate.backends.base.PresenceStore`: a hash per channel, heartbeat keys.

    ``add``/``remove`` are one ``HSET``/``HDEL`` (atomic per member); a
    heartbeat is ``SET node:<id> 1 PX ttl``, so Redis's clock decides when a
    node is dead; ``purge`` is one script, so two nodes purging at once
    report each connection once. Cannot: expire members by itself — a dead
    node's members stay until a live node calls :meth:`purge`.
    """

    def __init__(self, cmd: aioredis.Redis, prefix: str) -> None:
        self._cmd = cmd
        self._prefix = prefix
        self._purge = cmd.register_script(_PURGE)

    def _key(self, channel: str) -> str:
        return f"{self._prefix}:pres:{channel}"

    @guard
    async def add(self, channel: str, conn_id: str, node: str, member: bytes) -> None:
        await self._cmd.hset(self._key(channel), conn_id, _pack_member(node, member))

    @guard
    async def remove(self, channel: str, conn_id: str) -> None:
        await self._cmd.hdel(self._key(channel), conn_id)

    @guard
    async def members(self, channel: str) -> dict[str, tuple[str, bytes]]:
        raw = cast("dict[bytes, bytes]", await self._cmd.hgetall(self._key(channel)))
        return {k.decode(): _unpack_member(v) for k, v in raw.items()}

    @guard
    async def beat(self, node: str, ttl_s: float) -> None:
        await self._cmd.set(f"{self._prefix}:node:{node}", b"1", px=max(1, round(ttl_s * 1000)))

    @guard
    async def dead_nodes(self, nodes: set[str]) -> set[str]:
        if not nodes:
            return set()
        order = sorted(nodes)
        alive = await self._cmd.mget([f"{self._prefix}:node:{n}" for n in order])
        return {n for n, v in zip(order, alive, strict=True) if v is None}

    @guard
    async def purge(self, channel: str, nodes: set[str]) -> list[str]:
        if not nodes:
            return []
        gone = await self._purge(keys=[self._key(channel)], args=sorted(nodes))
        return [g.decode() for g in gone]


# Limits ----------------------------------------------------------------------

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - tonumber(ARGV[2])
if wait > 0 then return wait end
local new = tat + tonumber(ARGV[1])
local px = math.max(1, math.ceil((new - now) / 1000))
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', px)
return 0
"""
"""KEYS: tat. ARGV: interval µs, tolerance µs. Returns the wait in µs (0: allowed)."""

_COUNT = """
local member, node, delta = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nc, key = ARGV[4], ARGV[5]
local old = redis.call('HGET', KEYS[1], member)
local function drop(n)
  if redis.call('HINCRBY', nc .. n, key, -1) <= 0 then redis.call('HDEL', nc .. n, key) end
end
if delta > 0 then
  if old ~= node then
    if old then drop(old) end
    redis.call('HSET', KEYS[1], member, node)
    redis.call('HINCRBY', nc .. node, key, 1)
  end
elseif old then
  redis.call('HDEL', KEYS[1], member)
  drop(old)
end
return redis.call('HLEN', KEYS[1])
"""
"""KEYS: count hash. ARGV: member, node, delta, nodecount key prefix, key."""

_FORGET = """
local keys = redis.call('HKEYS', KEYS[1])
for _, k in ipairs(keys) do
  local h = ARGV[1] .. k
  local all = redis.call('HGETALL', h)
  local gone = {}
  for i = 1, #all, 2 do
    if all[i + 1] == ARGV[2] then gone[#gone + 1] = all[i] end
  end
  for i = 1, #gone, 1000 do
    redis.call('HDEL', h, unpack(gone, i, math.min(i + 999, #gone)))
  end
end
redis.call('DEL', KEYS[1])
return #keys
"""
"""KEYS: the node's nodecount hash. ARGV: count key prefix, node."""


class RedisLimits:
    """:class:`~wsgate.backends.base.SharedLimits`: GCRA and counters in Lua scripts.

    ``acquire`` reads Redis ``TIME`` in the script, so every node shares one
    clock; a key expires when its TAT passes (a fresh key is equivalent).
    ``count`` keeps ``member → node`` per key and ``key → n`` per node, so
    ``forget_node`` visits only the keys that node touched.
    """

    def __init__(self, cmd: aioredis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._gcra = cmd.register_script(_GCRA)
        self._count = cmd.register_script(_COUNT)
        self._forget = cmd.register_script(_FORGET)

    @guard
    async def acquire(self, key: str, interval: float, tolerance: float) -> float:
        args = [max(0, round(interval * 1e6)), max(0, round(tolerance * 1e6))]
        wait = await self._gcra(keys=[f"{self._prefix}:gcra:{key}"], args=args)
        return int(wait) / 1e6

    @guard
    async def count(self, key: str, member: str, node: str, delta: int) -> int:
        p = self._prefix
        args: list[str | int] = [member, node, delta, f"{p}:nodecount:", key]
        return int(await self._count(keys=[f"{p}:count:{key}"], args=args))

    @guard
    async def forget_node(self, node: str) -> None:
        p = self._prefix
        await self._forget(keys=[f"{p}:nodecount:{node}"], args=[f"{p}:count:", node])


# Registry --------------------------------------------------------------------

_DELETE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RedisRegistry:
    """:class:`~wsgate.backends.base.ServiceRegistry`: one hash ``[name, url] → registration``.

    ``all`` filters by this node's clock (``expires_at`` is Unix time) and
    deletes an expired entry only if nobody re-put it meanwhile.
    """

    def __init__(self, cmd: aioredis.Redis, prefix: str) -> None:
        self._cmd = cmd
        self._key = f"{prefix}:registry"
        self._delete_if = cmd.register_script(_DELETE_IF)

    @guard
    async def put(self, registration: Registration) -> None:
        r = registration
        value = json.dumps([r.name, r.url, list(r.actions), r.expires_at])
        await self._cmd.hset(self._key, json.dumps([r.name, r.url]), value)

    @guard
    async def delete(self, name: str, url: str) -> None:
        await self._cmd.hdel(self._key, json.dumps([name, url]))

    @guard
    async def all(self) -> list[Registration]:
        raw = cast("dict[bytes, bytes]", await self._cmd.hgetall(self._key))
        now = time.time()
        found = []
        for field, value in raw.items():
            name, url, actions, expires_at = json.loads(value)
            if expires_at > now:
                found.append(Registration(name, url, list(actions), float(expires_at)))
            else:
                await self._delete_if(keys=[self._key], args=[field, value])
        return found


# Backend ---------------------------------------------------------------------
