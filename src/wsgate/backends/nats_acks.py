"""Delivery records in NATS: nats-py's JetStream KeyValue bucket ``<prefix>_acks``.

One key per delivery id (ids are URL-safe base64, valid KV keys) holding an
:class:`~wsgate.backends.ack_store.AckRecord` as a JSON array. Writes are
compare-and-set on the key's revision (``create`` when absent, ``update``
with ``last=``), so a finish is won by one node. The bucket's age limit,
``2 × ttl_s``, frees every record (a delivery lives at most ``ttl_s``, and a
finished one is readable ``ttl_s`` more): the server frees it, no sweep.
"""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from wsgate.backends.ack_store import FINISHED, AckRecord
from wsgate.backends.nats_jet import guard
from wsgate.exceptions import BackendUnavailable

__all__ = ["NatsAcks"]

_TIMEOUT_S: Final = 5.0
_CAS_TRIES: Final = 8
"""A write that keeps losing the compare-and-set this often gives up (raises)."""

_decode = msgspec.json.Decoder(AckRecord).decode
_encode = msgspec.json.encode


class NatsAcks:
    """:class:`~wsgate.backends.ack_store.AckStore` on a connection of its own."""

    def __init__(self, nc: Client, kv: KeyValue) -> None:
        self._nc = nc
        self._kv = kv

    @classmethod
    async def open(cls, url: str, prefix: str, ttl_s: float) -> NatsAcks:
        from wsgate.backends.nats import close_client, connect_nats

        nc = await connect_nats(url, name=f"wsgate {prefix} acks")
        try:
            js = nc.jetstream(timeout=_TIMEOUT_S)
            kv = await js.create_key_value(KeyValueConfig(bucket=f"{prefix}_acks", ttl=2 * ttl_s))
        except BaseException:
            await close_client(nc)
            raise
        return cls(nc, kv)

    async def _held(self, id_: str) -> tuple[AckRecord, int] | None:
        try:
            entry = await self._kv.get(id_)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value or entry.revision is None:
            return None
        return _decode(entry.value), entry.revision

    @guard
    async def record(self, id_: str, record: AckRecord, ttl_s: float) -> None:
        for _ in range(_CAS_TRIES):
            held = await self._held(id_)
            try:
                if held is None:
                    await self._kv.create(id_, _encode(record))
                    return
                old, revision = held
                if old.state in FINISHED:
                    return
                new = msgspec.structs.replace(
                    old,
                    offset=record.offset or old.offset,
                    state="delivered" if record.state == "delivered" else old.state,
                )
                if new == old:
                    return
                await self._kv.update(id_, _encode(new), last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise BackendUnavailable(f"delivery {id_}: lost the compare-and-set {_CAS_TRIES} times")

    @guard
    async def finish(self, id_: str, state: str, ttl_s: float) -> bool:
        for _ in range(_CAS_TRIES):
            held = await self._held(id_)
            if held is None or held[0].state in FINISHED:
                return False
            try:
                await self._kv.update(
                    id_, _encode(msgspec.structs.replace(held[0], state=state)), last=held[1]
                )
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise BackendUnavailable(f"delivery {id_}: lost the compare-and-set {_CAS_TRIES} times")

    @guard
    async def get(self, ids: list[str]) -> dict[str, AckRecord]:
        held = await asyncio.gather(*(self._held(id_) for id_ in ids))
        return {id_: h[0] for id_, h in zip(ids, held, strict=True) if h is not None}

    async def close(self) -> None:
        from wsgate.backends.nats import close_client

        await close_client(self._nc)
