"""The cluster backend over one Redis server (``redis://``, ``rediss://``).

Layout (every key and pub/sub channel under ``prefix``):

- ``{prefix}:sub:{subject}`` — the pub/sub channel of a broker subject;
- ``{prefix}:stream:{stream}`` — a Redis stream of ``(offset, data)``, entry id
  ``<offset>-0``, exactly ``history_size`` long at most, expiring
  ``history_ttl_s`` after its last append;
- ``{prefix}:top:{stream}`` — the stream's last offset; it outlives the stream
  (:data:`FLOOR_TTL_S` at least) so a re-created stream continues above it;
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
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsgate.backends.base import Delivery, Registration, StreamReplay, StreamWindow

__all__ = [
    "FLOOR_TTL_S",
    "RedisBackend",
    "RedisBroker",
    "RedisHistory",
    "RedisLimits",
    "RedisPresence",
    "RedisRegistry",
    "open_redis",
]

log = logging.getLogger(__name__)

FLOOR_TTL_S = 86_400.0
"""Minimum lifetime of a stream's ``top`` key after its last append."""

_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""Connection trouble: the broker reconnects (``BusyLoadingError`` is among them)."""
_HEADER = struct.Struct(">QQ")
"""Every pub/sub payload starts with ``offset`` and ``prev`` (0, 0 for plain publishes)."""

# Broker ----------------------------------------------------------------------

_PUBLISH_STREAM = """
local raw = redis.call('GET', KEYS[1])
local top, created = 0, 0
if raw then
  local t, c = string.match(raw, '^(%d+):(%d+)$')
  top, created = tonumber(t) or 0, tonumber(c) or 0
end
if top == 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if now > top then top = now end
  created = top
end
local offset = top + 1
local id = string.format('%d', offset)
redis.call('SET', KEYS[1], id .. ':' .. string.format('%d', created), 'PX', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], id .. '-0', 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], struct.pack('>i8i8', offset, top) .. ARGV[2])
return offset
"""
"""KEYS: top, stream. ARGV: channel, data, maxlen, ttl ms, floor ttl ms.

``top`` holds ``"<last offset>:<created>"``, ``created`` being the base the
current incarnation started from (its first offset is ``created + 1``). A
stream is new when its key is gone (expired) or its ``top`` is: it starts at
``max(top, TIME in µs)``, so offsets never repeat across expiry even if the
clock stepped back, as long as ``top`` lived (:data:`FLOOR_TTL_S`)."""


class RedisBroker:
    """:class:`~wsgate.backends.base.Broker` over Redis pub/sub.

    Two connections: commands (publishes, pipelined in batches of whatever is
    queued, one round trip per batch) and pub/sub (one ``SUBSCRIBE`` per
    subject). One writer task sends publishes and subscription changes; one
    reader task hands messages to ``deliver``.

    Guarantees:

    - at most once (Redis pub/sub stores nothing): a message reaches the nodes
      subscribed when Redis routes it;
    - FIFO per publisher and subject: one connection, one pipeline, in order;
      a stream publish (``EVALSHA``) and a plain one keep their relative order;
    - :meth:`publish` and :meth:`publish_stream` never block: the queue holds
      at most ``max_queue`` messages; beyond that, and while the command
      connection is down, messages are dropped and counted in :attr:`dropped`;
    - :meth:`flush` returns when everything queued before it was handled (sent,
      or dropped during an outage) and Redis confirmed the subscriptions then
      wanted (a ``PING`` on the pub/sub connection after them); during an
      outage it waits for the reconnection;
    - reconnects by itself, retrying forever with a backoff capped at
      ``max_backoff_s``, and re-subscribes every current subject.

    Cannot: deliver what was published while a node's pub/sub connection was
    down (history recovers it); detect a half-open connection faster than its
    idle ping (``idle_ping_s`` twice over).
    """

    def __init__(
        self,
        cmd: aioredis.Redis,
        sub: aioredis.Redis,
        prefix: str,
        size: int,
        ttl_s: float,
        *,
        max_queue: int = 10_000,
        max_batch: int = 512,
        max_backoff_s: float = 1.0,
        idle_ping_s: float = 15.0,
    ) -> None:
        self._cmd = cmd
        self._sub = sub
        self._prefix = prefix
        self._chan_prefix = f"{prefix}:sub:"
        self._size = str(max(size, 0))
        self._ttl_ms = str(max(1, round(ttl_s * 1000)))
        self._floor_ms = str(max(1, round(max(ttl_s * 10, FLOOR_TTL_S) * 1000)))
        self.max_queue = max_queue
        """Messages queued at most; more are dropped (and counted)."""
        self.max_batch = max_batch
        self.max_backoff_s = max_backoff_s
        self.idle_ping_s = idle_ping_s
        self.dropped = 0
        """Messages dropped: queue full, or command connection down."""
        self._sha = ""
        self._queue: deque[tuple[str, bytes, str | None]] = deque()
        self._queued = 0
        self._done = 0
        self._down = False
        self._wake = asyncio.Event()
        self._subjects: set[str] = set()
        self._sub_version = 0
        self._sub_confirmed = 0
        self._subs_dirty = False
        self._session: Any = None
        self._session_id = 0
        self._session_subs: set[str] = set()
        self._ping_outstanding = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._deliver: Callable[[Delivery], None] | None = None
        self._received: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def load(self) -> None:
        """Load the publish script (called by :func:`open_redis`)."""
        self._sha = await self._cmd.script_load(_PUBLISH_STREAM)

    async def start(self, deliver: Callable[[Delivery], None]) -> None:
        self._deliver = deliver
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="redis-broker-reader"),
            asyncio.create_task(self._write_loop(), name="redis-broker-writer"),
        ]

    async def close(self) -> None:
        self._closed = True
        self._deliver = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
        self._tasks = []
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters = []

    # Publishing --------------------------------------------------------------

    def _enqueue(self, item: tuple[str, bytes, str | None]) -> None:
        if self._closed or self._down or len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(item)
        self._queued += 1
        self._wake.set()

    def publish(self, subject: str, data: bytes) -> None:
        self._enqueue((self._chan_prefix + subject, data, None))

    def publish_stream(self, subject: str, stream: str, data: bytes) -> None:
        self._enqueue((self._chan_prefix + subject, data, stream))

    def subscribe(self, subject: str) -> None:
        self._subjects.add(subject)
        self._sub_changed()

    def unsubscribe(self, subject: str) -> None:
        self._subjects.discard(subject)
        self._sub_changed()

    def _sub_changed(self) -> None:
        self._sub_version += 1
        self._subs_dirty = True
        self._wake.set()

    async def flush(self) -> None:
        if self._closed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._queued, self._sub_version, fut))
        self._resolve()
        await fut

    def _resolve(self) -> None:
        if not self._waiters:
            return
        keep = []
        for done, version, fut in self._waiters:
            if fut.done():
                continue
            if self._done >= done and self._sub_confirmed >= version:
                fut.set_result(None)
            else:
                keep.append((done, version, fut))
        self._waiters = keep

    @property
    def received(self) -> dict[str, int]:
        return self._received

    # Writer ------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._sync_subs()
            while self._queue:
                n = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(n)]
                try:
                    await self._send(batch)
                except _ERRORS as exc:
                    lost = n + len(self._queue)
                    log.warning("redis broker: %s; dropped %d messages", exc, lost)
                    self._queue.clear()
                    self.dropped += lost
                    self._done += lost
                    self._down = True
                    self._resolve()
                    await self._reconnect_commands()
                    self._down = False
                    continue
                except Exception:
                    # Not the connection: lose this batch, keep the writer alive.
                    log.exception("redis broker: dropped a batch of %d", n)
                    self.dropped += n
                self._done += n
                self._resolve()
            self._resolve()

    async def _send(self, batch: list[tuple[str, bytes, str | None]], again: bool = True) -> None:
        pipe = self._cmd.pipeline(transaction=False)
        p = self._prefix
        for channel, data, stream in batch:
            if stream is None:
                pipe.publish(channel, _HEADER.pack(0, 0) + data)
            else:
                pipe.evalsha(
                    self._sha, 2, f"{p}:top:{stream}", f"{p}:stream:{stream}",
                    channel, data, self._size, self._ttl_ms, self._floor_ms,
                )
        results = await pipe.execute(raise_on_error=False)
        # A restart between two batches empties the script cache: reload it and
        # re-send what failed, unless a later message on the same subject went
        # through already (re-sending would break FIFO: those are dropped).
        retry: list[tuple[str, bytes, str | None]] = []
        passed: set[str] = set()
        for item, result in zip(reversed(batch), reversed(results), strict=True):
            if isinstance(result, NoScriptError):
                if again and item[0] not in passed:
                    retry.append(item)
                else:
                    self.dropped += 1
            else:
                passed.add(item[0])
                if isinstance(result, Exception):
                    log.error("redis broker: publish failed: %s", result)
        if retry or any(isinstance(r, NoScriptError) for r in results):
            await self.load()
        if retry:
            await self._send(retry[::-1], again=False)

    async def _reconnect_commands(self) -> None:
        delay = 0.05
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
            await self._sync_subs()
            try:
                await self._cmd.ping()
                await self.load()
                return
            except _ERRORS:
                continue

    async def _sync_subs(self) -> None:
        """Bring the pub/sub connection's subscriptions to the wanted set, then PING."""
        ps = self._session
        if ps is None or not self._subs_dirty:
            return
        self._subs_dirty = False
        session, version = self._session_id, self._sub_version
        want = {self._chan_prefix + s for s in self._subjects}
        add, drop = want - self._session_subs, self._session_subs - want
        try:
            if add:
                await ps.subscribe(*sorted(add))
            if drop:
                await ps.unsubscribe(*sorted(drop))
            await ps.ping(f"v{version}")
        except _ERRORS:
            return  # the reader sees the broken connection and starts a new session
        except Exception:
            log.exception("redis broker: subscription change failed")
            return
        if session == self._session_id:
            self._session_subs = want

    # Reader ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        delay = 0.05
        while True:
            ps: Any = self._sub.pubsub()
            try:
                await ps.connect()
            except _ERRORS:
                with contextlib.suppress(Exception):
                    await ps.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            delay = 0.05
            self._session = ps
            self._session_id += 1
            self._session_subs = set()
            self._subs_dirty = True
            self._ping_outstanding = False
            self._wake.set()
            try:
                await self._read(ps)
            except _ERRORS as exc:
                log.warning("redis broker: pub/sub connection lost: %s", exc)
            except Exception:
                # Anything else (a protocol surprise) also ends only this session.
                log.exception("redis broker: pub/sub session failed")
            finally:
                self._session = None
                self._sub_confirmed = 0
                with contextlib.suppress(Exception):
                    await ps.aclose()

    async def _read(self, ps: Any) -> None:
        while True:
            msg = await ps.get_message(timeout=self.idle_ping_s)
            if msg is None:
                if self._ping_outstanding:
                    raise RedisTimeoutError("no answer to the idle ping")
                self._ping_outstanding = True
                await ps.ping("idle")
                continue
            self._ping_outstanding = False
            kind = msg["type"]
            if kind == "message":
                self._on_message(msg["channel"], msg["data"])
            elif kind == "pong":
                token = msg["data"]
                if token[:1] == b"v":
                    self._sub_confirmed = max(self._sub_confirmed, int(token[1:]))
                    self._resolve()

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        subject = channel.decode()[len(self._chan_prefix):]
        if self._deliver is None or subject not in self._subjects:
            return
        offset, prev = _HEADER.unpack_from(payload)
        self._received[subject] = self._received.get(subject, 0) + 1
        try:
            self._deliver(Delivery(subject, offset, prev, payload[_HEADER.size:]))
        except Exception:
            log.exception("redis broker: deliver failed for %s", subject)


# History ---------------------------------------------------------------------


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

    async def since(self, stream: str, offset: int) -> StreamReplay:
        found = await self._read(stream, offset)
        if found is None:
            return StreamReplay(offset == 0, [], 0)
        evicted, created, top, rows = found
        if offset < evicted or offset > top or 0 < offset < created:
            return StreamReplay(False, [], top)
        return StreamReplay(True, [(_entry_offset(i), f[b"d"]) for i, f in rows], top)

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

    async def add(self, channel: str, conn_id: str, node: str, member: bytes) -> None:
        await self._cmd.hset(self._key(channel), conn_id, _pack_member(node, member))

    async def remove(self, channel: str, conn_id: str) -> None:
        await self._cmd.hdel(self._key(channel), conn_id)

    async def members(self, channel: str) -> dict[str, tuple[str, bytes]]:
        raw = cast("dict[bytes, bytes]", await self._cmd.hgetall(self._key(channel)))
        return {k.decode(): _unpack_member(v) for k, v in raw.items()}

    async def beat(self, node: str, ttl_s: float) -> None:
        await self._cmd.set(f"{self._prefix}:node:{node}", b"1", px=max(1, round(ttl_s * 1000)))

    async def dead_nodes(self, nodes: set[str]) -> set[str]:
        if not nodes:
            return set()
        order = sorted(nodes)
        alive = await self._cmd.mget([f"{self._prefix}:node:{n}" for n in order])
        return {n for n, v in zip(order, alive, strict=True) if v is None}

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

    async def acquire(self, key: str, interval: float, tolerance: float) -> float:
        args = [max(0, round(interval * 1e6)), max(0, round(tolerance * 1e6))]
        wait = await self._gcra(keys=[f"{self._prefix}:gcra:{key}"], args=args)
        return int(wait) / 1e6

    async def count(self, key: str, member: str, node: str, delta: int) -> int:
        p = self._prefix
        args: list[str | int] = [member, node, delta, f"{p}:nodecount:", key]
        return int(await self._count(keys=[f"{p}:count:{key}"], args=args))

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

    async def put(self, registration: Registration) -> None:
        r = registration
        value = json.dumps([r.name, r.url, list(r.actions), r.expires_at])
        await self._cmd.hset(self._key, json.dumps([r.name, r.url]), value)

    async def delete(self, name: str, url: str) -> None:
        await self._cmd.hdel(self._key, json.dumps([name, url]))

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


class RedisBackend:
    """:class:`~wsgate.backends.base.Backend` over one Redis server.

    ``broker`` owns a pub/sub connection; the stores and the broker's
    publishes share one command pool. Store calls made while Redis is
    unreachable raise :class:`redis.exceptions.ConnectionError` (after one
    immediate retry, which absorbs a pooled connection a restart broke).
    """

    def __init__(self, cmd: aioredis.Redis, sub: aioredis.Redis, prefix: str,
                 size: int, ttl_s: float) -> None:
        self._cmd = cmd
        self._sub = sub
        self.broker = RedisBroker(cmd, sub, prefix, size, ttl_s)
        self.history = RedisHistory(cmd, prefix)
        self.presence = RedisPresence(cmd, prefix)
        self.limits = RedisLimits(cmd, prefix)
        self.registry = RedisRegistry(cmd, prefix)

    async def close(self) -> None:
        await self.broker.close()
        for client in (self._sub, self._cmd):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 5.0)


async def open_redis(
    url: str, *, prefix: str, node: str, history_size: int, history_ttl_s: float
) -> RedisBackend:
    """Connect to the Redis server at ``url``; raises if it does not answer ``PING``.

    ``node`` is unused (every key is shared by the cluster under ``prefix``).
    """
    common: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "health_check_interval": 0,
    }
    # Commands: one retry absorbs a pooled connection that a restart broke.
    cmd = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), socket_timeout=5.0, **common)
    # Pub/sub: no retry inside redis-py; the broker's reader owns reconnection.
    sub = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
    backend = RedisBackend(cmd, sub, prefix, history_size, history_ttl_s)
    try:
        await cmd.ping()
        await backend.broker.load()
    except BaseException:
        await backend.close()
        raise
    return backend
