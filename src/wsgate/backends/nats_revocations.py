"""Revocations in NATS: a JetStream key-value bucket ``<prefix>_revocations``.

Each revocation is one key (the revocation key, base64url: KV keys allow no
``:``) holding ``[not_before, expires_at]``; the bucket's age limit is the
longest ``ttl_s``, so the server frees what expired.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Final

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

__all__ = ["NatsRevocations"]

_TIMEOUT_S: Final = 5.0
_CAS_TRIES: Final = 8
"""A put that keeps losing the compare-and-set this often gives up (raises)."""


def _encode(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode(name: str) -> str:
    return base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()


class NatsRevocations:
    """:class:`~wsgate.backends.base.RevocationStore` on a connection of its own.

    :meth:`put` merges by compare-and-set on the key's revision; :meth:`all`
    reads every key's last value through one watch (a consumer for the length
    of the read, no request per key) and filters by this node's clock. The bucket's age limit is
    the ``ttl_s`` it was opened with: a put's ``ttl_s`` longer than that is cut
    to it (the node opens and puts with the same ``auth.revocation_ttl_s``).
    """

    def __init__(self, nc: Client, kv: KeyValue, stream: str) -> None:
        self._nc = nc
        self._kv = kv
        self._stream = stream
        """The bucket's stream (``KV_<bucket>``): its subject count says how many keys to read."""

    @classmethod
    async def open(cls, url: str, prefix: str, ttl_s: float) -> NatsRevocations:
        nc = await nats.connect(url, connect_timeout=int(_TIMEOUT_S), max_reconnect_attempts=-1)
        try:
            js = nc.jetstream(timeout=_TIMEOUT_S)
            config = KeyValueConfig(bucket=f"{prefix}_revocations", ttl=ttl_s)
            kv = await js.create_key_value(config)
        except BaseException:
            await nc.close()
            raise
        return cls(nc, kv, f"KV_{config.bucket}")

    async def put(self, key: str, not_before: float, ttl_s: float) -> None:
        name = _encode(key)
        until = time.time() + ttl_s
        for _ in range(_CAS_TRIES):
            try:
                entry = await self._kv.get(name)
            except nats.js.errors.KeyNotFoundError:
                entry = None
            value = [not_before, until]
            if entry is not None and entry.value:
                old = json.loads(entry.value)
                value = [max(not_before, old[0]), max(until, old[1])]
            data = json.dumps(value).encode()
            try:
                if entry is None:
                    await self._kv.create(name, data)
                else:
                    await self._kv.update(name, data, last=entry.revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise TimeoutError(f"revocation {key!r}: lost the compare-and-set {_CAS_TRIES} times")

    async def all(self) -> dict[str, float]:
        return await asyncio.wait_for(self._read_all(), _TIMEOUT_S)

    async def _read_all(self) -> dict[str, float]:
        """One watch of the bucket, read until it gave as many keys as the stream holds.

        The watch's end-of-initial-values marker alone was seen to come before
        every key had (a partial read); the stream's subject count, taken first,
        is the number to wait for (a key put meanwhile may or may not be in).
        """
        js = self._nc.jetstream(timeout=_TIMEOUT_S)
        info = await js.stream_info(self._stream, subjects_filter=">")
        expected = len(info.state.subjects or {})
        if expected == 0:
            return {}
        watcher = await self._kv.watchall(ignore_deletes=True)
        now = time.time()
        found: dict[str, float] = {}
        seen: set[str] = set()
        try:
            async for entry in watcher:
                if entry is None:  # the marker: keep reading until the count is in
                    continue
                seen.add(entry.key)
                if entry.value:
                    not_before, until = json.loads(entry.value)
                    if until > now:
                        found[_decode(entry.key)] = float(not_before)
                if len(seen) >= expected:
                    break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return found

    async def close(self) -> None:
        await self._nc.close()
