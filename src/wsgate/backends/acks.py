"""Open the acknowledgement store of a cluster's ``[broker] url``
(:class:`~wsgate.backends.ack_store.AckStore`)."""

from __future__ import annotations

from wsgate.backends.ack_store import AckStore

__all__ = ["open_acks"]


async def open_acks(url: str, *, prefix: str, ttl_s: float) -> AckStore:
    """The store for a cluster's ``[broker] url``: the hub's for ``memory://<name>``,
    Redis or NATS KeyValue (a connection of its own, closed by ``close``).

    Raises :class:`~wsgate.exceptions.BackendUnavailable` or
    :class:`~wsgate.exceptions.BackendError` when the server cannot be used,
    :exc:`ValueError` for the bare ``memory://`` (one node needs no store) or
    an unknown scheme.
    """
    scheme = url.partition("://")[0]
    if scheme == "memory" and url != "memory://":
        from wsgate.backends.memory_acks import shared_acks

        return shared_acks(url, prefix)
    if scheme in ("redis", "rediss"):
        from wsgate.backends.redis_acks import RedisAcks

        redis_store = RedisAcks.from_url(url, prefix)
        try:
            await redis_store.get([])  # reachable now, or raise
        except BaseException:
            await redis_store.close()
            raise
        return redis_store
    if scheme in ("nats", "tls"):
        from wsgate.backends.nats_acks import NatsAcks

        return await NatsAcks.open(url, prefix, ttl_s)
    raise ValueError(f"no acknowledgement store for {url!r}")
