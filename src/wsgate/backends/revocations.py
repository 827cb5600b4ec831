"""Open the revocation store of a ``[broker] url`` (:class:`~.base.RevocationStore`)."""

from __future__ import annotations

from wsgate.backends.base import RevocationStore
from wsgate.backends.memory_revocations import MemoryRevocations, shared_revocations

__all__ = ["open_revocations"]


async def open_revocations(url: str, *, prefix: str, ttl_s: float) -> RevocationStore:
    """The store for ``url``: a node's own dict for the bare ``memory://``, the hub's for
    ``memory://<name>``, Redis or NATS KV (a connection of its own, closed by ``close``).

    Raises the driver's error when the server cannot be reached.
    """
    scheme = url.partition("://")[0]
    if url == "memory://":
        return MemoryRevocations()
    if scheme == "memory":
        return shared_revocations(url, prefix)
    if scheme in ("redis", "rediss"):
        from wsgate.backends.redis_revocations import RedisRevocations

        store = RedisRevocations.from_url(url, prefix)
        try:
            await store.all()  # reachable now, or raise
        except BaseException:
            await store.close()
            raise
        return store
    if scheme in ("nats", "tls"):
        from wsgate.backends.nats_revocations import NatsRevocations

        return await NatsRevocations.open(url, prefix, ttl_s)
    raise ValueError(f"unsupported broker URL scheme {scheme!r}")
