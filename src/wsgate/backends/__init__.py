"""Pluggable backends: the Protocols in :mod:`.base`, implementations beside it.

``memory`` is the default, for one node (and for several nodes in one process,
in tests). Cluster backends are chosen by the ``[broker] url`` scheme and
imported lazily, so ``redis`` or ``nats-py`` is only needed when used.
"""

from __future__ import annotations

from wsgate.backends.base import Backend
from wsgate.exceptions import ConfigError

__all__ = ["open_backend"]


async def open_backend(
    url: str,
    *,
    prefix: str,
    node: str,
    history_size: int,
    history_ttl_s: float,
    history_max_channels: int = 10_000,
    inbox_size: int = 100,
    inbox_ttl_s: float = 300.0,
    inbox_max_users: int = 10_000,
) -> Backend:
    """Connect the cluster backend named by ``url`` (``memory://``, ``redis://``, ``nats://``).

    Raises :class:`~wsgate.exceptions.ConfigError` (key ``broker.url``) for an
    unknown scheme, :class:`~wsgate.exceptions.BackendUnavailable` when the
    server does not answer, :class:`~wsgate.exceptions.BackendError` when it
    answers with an error.

    Channels' streams are bounded by the ``history_*`` arguments (``[history]``),
    users' inboxes apart by the ``inbox_*`` ones (``[inbox]``: ``max_messages``,
    ``ttl_s``, ``max_users``); see :class:`~wsgate.backends.base.HistoryStore`.
    """
    scheme = url.partition("://")[0]
    size, ttl, most = history_size, history_ttl_s, history_max_channels
    backend: Backend
    if scheme == "memory":
        from wsgate.backends.memory_cluster import open_memory

        backend = await open_memory(
            url, prefix=prefix, node=node, history_size=size, history_ttl_s=ttl,
            history_max_channels=most, inbox_size=inbox_size, inbox_ttl_s=inbox_ttl_s,
            inbox_max_users=inbox_max_users,
        )
    elif scheme in ("redis", "rediss"):
        from wsgate.backends.redis import open_redis

        backend = await open_redis(
            url, prefix=prefix, node=node, history_size=size, history_ttl_s=ttl,
            history_max_channels=most, inbox_size=inbox_size, inbox_ttl_s=inbox_ttl_s,
            inbox_max_users=inbox_max_users,
        )
    elif scheme in ("nats", "tls"):
        from wsgate.backends.nats import open_nats

        backend = await open_nats(
            url, prefix=prefix, node=node, history_size=size, history_ttl_s=ttl,
            history_max_channels=most, inbox_size=inbox_size, inbox_ttl_s=inbox_ttl_s,
            inbox_max_users=inbox_max_users,
        )
    else:
        raise ConfigError(
            "broker.url", f"unsupported scheme {scheme!r} (memory://, redis://, rediss://, "
            "nats://, tls://)"
        )
    return backend
