"""The Redis :class:`~wsgate.backends.base.Broker`.

Key layout and guarantees: :mod:`wsgate.backends.redis`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsgate.backends.base import Delivery, is_inbox

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)

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
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local floor = tonumber(redis.call('GET', KEYS[4]) or '0')
if top == 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2])
  top = math.max(now, floor)
  created = top
end
local offset = top + 1
local id = string.format('%d', offset)
redis.call('SET', KEYS[1], id .. ':' .. string.format('%d', created), 'PX', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], id .. '-0', 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if offset > floor then redis.call('SET', KEYS[4], id) end
redis.call('ZADD', KEYS[3], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]) * 1000)
local max = tonumber(ARGV[5])
local over = redis.call('ZCARD', KEYS[3]) - max
if max > 0 and over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[3], over)
  for i = 1, #gone, 2 do
    redis.call('DEL', ARGV[7] .. gone[i], ARGV[8] .. gone[i])
  end
end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[1], struct.pack('>i8i8', offset, top) .. ARGV[2])
return offset
"""
"""KEYS: top, stream, index, floor. ARGV: channel, data, maxlen, ttl ms,
max channels, stream name, stream key prefix, top key prefix.

``top`` holds ``"<last offset>:<created>"``, ``created`` being the base the
current incarnation started from (its first offset is ``created + 1``); it
expires with the stream, ``ttl`` after the last append. A stream is new when
its key or its ``top`` is gone: it starts at ``max(TIME in µs, floor)``,
``floor`` being the highest offset ever issued under the prefix (one key), so
offsets never repeat across expiry even if the clock stepped back. The index
(a sorted set ``stream → last append µs``, itself expiring ``ttl`` after the
last append) drops entries older than ``ttl`` and frees the oldest streams
past ``max channels`` (``0``: unbounded)."""


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
      ``max_backoff_s``, and re-subscribes every current subject (counted in
      :attr:`reconnects`).

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
        max_channels: int = 10_000,
        inbox: tuple[int, float, int] = (100, 300.0, 10_000),
        max_queue: int = 10_000,
        max_batch: int = 512,
        max_backoff_s: float = 1.0,
        idle_ping_s: float = 15.0,
    ) -> None:
        self._cmd = cmd
        self._sub = sub
        self._prefix = prefix
        self._chan_prefix = f"{prefix}:sub:"
        self._bounds = {
            False: _bounds(f"{prefix}:streams", size, ttl_s, max_channels),
            True: _bounds(f"{prefix}:inboxes", *inbox),
        }
        """Per kind (inbox or not): the index key, maxlen, ttl ms and most streams."""
        self.max_queue = max_queue
        """Messages queued at most; more are dropped (and counted)."""
        self.max_batch = max_batch
        self.max_backoff_s = max_backoff_s
        self.idle_ping_s = idle_ping_s
        self.dropped = 0
        """Messages dropped: queue full, or command connection down."""
        self.reconnects = 0
        """Lost connections made again: each new pub/sub session after the first, and each
        recovery of the command connection, counts one (a Redis restart: usually two)."""
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

    @property
    def connected(self) -> bool:
        """Both connections up: a pub/sub session is open and commands are not failing."""
        return self._session is not None and not self._down

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
                    self.reconnects += 1
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
                index, size, ttl_ms, most = self._bounds[is_inbox(stream)]
                pipe.evalsha(
                    self._sha,
                    4,
                    f"{p}:top:{stream}",
                    f"{p}:stream:{stream}",
                    index,
                    f"{p}:floor",
                    channel,
                    data,
                    size,
                    ttl_ms,
                    most,
                    stream,
                    f"{p}:stream:",
                    f"{p}:top:",
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
            except BaseException:
                # Cancelled by close() mid-handshake (a hung server): redis-py
                # leaves that connection open; the session is ours to close.
                with contextlib.suppress(Exception):
                    await ps.aclose()
                raise
            delay = 0.05
            if self._session_id:
                self.reconnects += 1
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
        subject = channel.decode()[len(self._chan_prefix) :]
        if self._deliver is None or subject not in self._subjects:
            return
        offset, prev = _HEADER.unpack_from(payload)
        self._received[subject] = self._received.get(subject, 0) + 1
        try:
            self._deliver(Delivery(subject, offset, prev, payload[_HEADER.size :]))
        except Exception:
            log.exception("redis broker: deliver failed for %s", subject)


def _bounds(index: str, size: int, ttl_s: float, most: int) -> tuple[str, str, str, str]:
    """The publish script's arguments for one kind of stream (channels', inboxes')."""
    return index, str(max(size, 0)), str(max(1, round(ttl_s * 1000))), str(max(most, 0))
